# The two commands: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BIND ?= 127.0.0.1:8000
export BIND
ADDR = $(subst 0.0.0.0,127.0.0.1,$(BIND))

.PHONY: run test lint venv bench agents clean chromium

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_admin
	$(PY) manage.py collectstatic --noinput -v0
	@echo ""
	@echo "AI Router on http://$(ADDR)/"
	@echo "  admin:    http://$(ADDR)/admin/   (sign in as the admin above)"
	@echo "  API:      http://$(ADDR)/v1/      (OpenAI-compatible; Bearer sk-...)"
	@echo "  API keys: http://$(ADDR)/keys/    (users create their own keys)"
	@echo "Next: README.md, 'Group guide': a group, a channel, a user and a token, then a curl."
	@echo ""
	@# A fresh database gets the demo: a mock channel, a key for the admin and a curl to try.
	$(PY) manage.py seed_demo --base-url http://$(ADDR)
	$(VENV)/bin/gunicorn -c gunicorn.conf.py airouter.wsgi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

# The browser tests drive Debian's Chromium, never a downloaded browser (CI runs as root).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: lint chromium
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The benchmark (bench/README.md): fake upstream + router under gunicorn + wrk, one table.
# BENCH_QUICK=1 for a fast pass; DATABASE_URL=postgres://... to bench on PostgreSQL.
bench: venv
	@command -v wrk >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=120 wrk \
		>/dev/null; } || echo "wrk not installed: the Python load generator is used"
	$(PY) bench/run.py

# Claude Code and Codex CLI through the router against fake upstreams (README, "Coding agents").
# Installs both CLIs from npm into .agents/ on first use (about 400 MB); not part of `make test`.
agents: venv
	$(PY) scripts/try_agents.py

clean:
	rm -rf $(VENV) staticfiles db.sqlite3
