"""The production environment documented in .env.example passes `check --deploy`."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTING_LINE = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")


def production_env(tmp_path) -> dict[str, str]:
    """.env.example's values with its commented-out production block switched on."""
    values, section = {}, ""
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("# ---"):
            section = line
            continue
        match = SETTING_LINE.match(line)
        if match is None:
            continue
        name, value = match.groups()
        if not line.startswith("#") or section.startswith("# --- Production"):
            values[name] = value
    values["SECRET_KEY"] = "prod-" + "q8Zr3kWv1Yx" * 6  # the example's placeholder is a stand-in
    values["DATABASE_URL"] = f"sqlite:///{tmp_path / 'deploy.sqlite3'}"
    return values


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in env and not k.startswith("SECURE_")}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "airouter.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_env_example_documents_a_production_block(tmp_path):
    env = production_env(tmp_path)
    for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "SECURE_HSTS_SECONDS"):
        assert name in env, f"{name} missing from .env.example's production block"


def test_production_env_passes_check_deploy(tmp_path):
    result = run_check(production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_dev_defaults_are_flagged_by_check_deploy(tmp_path):
    env = production_env(tmp_path)
    env = {k: v for k, v in env.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_"))}
    result = run_check(env)
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout  # SECURE_SSL_REDIRECT off


def test_check_deploy_refuses_to_run_without_a_secret_key(tmp_path):
    env = production_env(tmp_path)
    env["SECRET_KEY"] = ""
    result = run_check(env)
    assert result.returncode != 0
    assert "airouter.E002" in result.stderr + result.stdout
