"""Run Claude Code and Codex CLI through the router against fake upstreams (`make agents`).

Starts, all on 127.0.0.1: the test suite's fake upstream (tests/fake_upstream.py: it speaks
Anthropic's Messages, OpenAI's chat completions and Responses), the router under gunicorn on a
temporary SQLite database, and four channels made with the ops commands:

    claude-fake    kind anthropic           serves claude-sonnet-4-5
    chat-fake      kind openai              serves gpt-4o-mini
    responses-fake kind openai, --responses-api serves gpt-5-mini

Then each CLI finishes a prompt that makes it call one of its tools once (the fake answers with
a tool call until the CLI sends the tool's result), through each kind of channel:

    Claude Code -> /v1/messages  -> claude-fake (passed through), chat-fake (converted)
    Codex CLI   -> /v1/responses -> chat-fake (converted), claude-fake (converted),
                                    responses-fake (passed through)

and the usage records show which group, channel and cost served each request. The CLIs come
from npm (installed into .agents/ when missing: about 400 MB). Exits non-zero when a CLI run
fails. Nothing is sent anywhere but 127.0.0.1 (see the env below: both CLIs would otherwise
call home).

    make agents                      # or: .venv/bin/python scripts/try_agents.py
    AGENTS_ONLY=claude make agents   # one CLI
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_upstream import FakeUpstream  # noqa: E402

PY = sys.executable
CLI_DIR = ROOT / ".agents"
PACKAGES = ["@anthropic-ai/claude-code@2.1.197", "@openai/codex@0.171.0"]
TIMEOUT = int(os.environ.get("AGENTS_TIMEOUT", "180"))
ONLY = os.environ.get("AGENTS_ONLY", "")
CLAUDE_TOOL = {"id": "toolu_1", "name": "Bash", "arguments": {"command": "echo agents-ok"}}
CODEX_TOOL = {"id": "call_1", "name": "exec_command", "arguments": {"cmd": "echo agents-ok"}}


def cli(name: str) -> str:
    path = CLI_DIR / "node_modules" / ".bin" / name
    if not path.exists():
        print(f"Installing {' '.join(PACKAGES)} into {CLI_DIR} ...", flush=True)
        subprocess.run(
            ["npm", "install", "--silent", "--prefix", str(CLI_DIR), *PACKAGES], check=True
        )
    return str(path)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def wait_for(port: int) -> None:
    import socket

    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the router did not start on port {port}")


def run_claude(base: str, key: str, model: str, work: Path) -> bool:
    home = work / "claude-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,  # sub-agents use the same model
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # else it calls api.anthropic.com
        "CLAUDE_CODE_MAX_RETRIES": "1",
    }
    if not model.startswith("claude"):
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = "16000"  # what an OpenAI model can write
    argv = [
        cli("claude"),
        "-p",
        "Run `echo agents-ok` with Bash, then say hello.",
        "--model",
        model,
    ]
    argv += ["--allowedTools", "Bash(echo:*)", *os.environ.get("AGENTS_CLAUDE_ARGS", "").split()]
    return _run(f"Claude Code, model {model}", argv, env, work)


def run_codex(base: str, key: str, model: str, work: Path) -> bool:
    home = work / f"codex-home-{model}"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "airouter"\n\n'
        "[model_providers.airouter]\n"
        'name = "AI Router"\n'
        f'base_url = "{base}/v1"\n'
        'env_key = "AIROUTER_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 1\nstream_max_retries = 1\n\n"
        "[analytics]\nenabled = false\n\n[features]\nplugins = false\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work / "claude-home"),
        "CODEX_HOME": str(home),
        "AIROUTER_API_KEY": key,
    }
    argv = [cli("codex"), "exec", "--skip-git-repo-check", "--ephemeral", "--color", "never"]
    argv += ["Run `echo agents-ok`, then say hello."]
    return _run(f"Codex CLI, model {model}", argv, env, work)


def _run(label: str, argv: list, env: dict, work: Path) -> bool:
    print(f"\n=== {label}", flush=True)
    try:
        done = subprocess.run(
            argv,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"--- timed out after {TIMEOUT} s")
        return False
    print(done.stdout.strip()[-1500:])
    if done.returncode:
        print(f"--- exit {done.returncode}\n{done.stderr.strip()[-1500:]}")
    return done.returncode == 0


def main() -> int:
    upstream = FakeUpstream(models=["claude-sonnet-4-5", "gpt-4o-mini", "gpt-5-mini"]).start()
    upstream.configure(
        chunks=["Hello", " from", " the", " router."],
        tool_calls=[CLAUDE_TOOL],
        tool_calls_until_result=True,
        prompt_tokens=1200,
        cached_tokens=800,
        completion_tokens=40,
    )
    tmp = Path(tempfile.mkdtemp(prefix="airouter-agents-"))
    port = free_port()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        AIROUTER_ADMIN_PASSWORD="agents-admin-pw",
        REDIS_URL="",
    )
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "create_group", "agents", "--multiplier", "1.5", "--pricing-confirmed")
    manage(env, "create_user", "dev", "--group", "agents", "--balance", "50")
    channels = [
        ("claude-fake", "claude-sonnet-4-5", ["--kind", "anthropic"]),
        ("chat-fake", "gpt-4o-mini", []),
        ("responses-fake", "gpt-5-mini", ["--responses-api"]),
    ]
    for name, model, extra in channels:
        manage(
            env,
            *("create_channel", name, "--base-url", upstream.url, "--key", f"sk-{name}"),
            *("--models", model, "--groups", "agents", "--input-price", "3"),
            *("--cached-input-price", "0.3", "--output-price", "15", *extra),
        )
    key = manage(env, "create_token", "dev", "--name", "agents", "-v0")
    router = subprocess.Popen(
        [str(Path(PY).parent / "gunicorn"), "-c", "gunicorn.conf.py", "airouter.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ok = True
    try:
        wait_for(port)
        base = f"http://127.0.0.1:{port}"
        work = tmp / "work"  # not a git repository
        work.mkdir()
        if ONLY in ("", "claude"):
            upstream.configure(tool_calls=[CLAUDE_TOOL])
            for model in ("claude-sonnet-4-5", "gpt-4o-mini"):
                ok &= run_claude(base, key, model, work)
        if ONLY in ("", "codex"):
            upstream.configure(tool_calls=[CODEX_TOOL])
            for model in ("gpt-4o-mini", "claude-sonnet-4-5", "gpt-5-mini"):
                ok &= run_codex(base, key, model, work)
        print("\n=== Usage records (newest last)")
        print(
            manage(
                env,
                "shell",
                "-c",
                "from billing.models import UsageRecord as U\n"
                "for r in U.objects.select_related('group','channel').order_by('id'):\n"
                "    print(r.endpoint, r.requested_model, r.group.name, r.channel.name, "
                "r.status, r.prompt_tokens, r.cached_tokens, r.completion_tokens, r.cost)",
            )
        )
        print("\nThe fake upstream was asked:")
        for r in upstream.requests:
            body = r.json or {}
            items = body.get("messages") or body.get("input") or []
            roles = [i.get("role") or i.get("type") for i in items if isinstance(i, dict)]
            print(f"  {r.method} {r.path} model={body.get('model')} items={json.dumps(roles)}")
            if os.environ.get("AGENTS_DUMP"):
                with open(os.environ["AGENTS_DUMP"], "a") as dump:
                    dump.write(json.dumps(body) + "\n")
    finally:
        router.terminate()
        router.wait(10)
        upstream.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nAll runs finished." if ok else "\nSome runs failed (see above).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
