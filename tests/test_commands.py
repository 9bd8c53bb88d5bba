"""The ops commands: what they write, what they print, and how they fail."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from channels_app import keystore
from channels_app.models import Channel
from groups.models import Group, User
from tests.factories import make_channel, make_group, make_user
from tokens.models import Token, hash_key

pytestmark = pytest.mark.django_db
BASE_DIR = Path(__file__).resolve().parent.parent


def run(*args, **kw):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **kw)
    return out.getvalue(), err.getvalue()


# --- create_group ---------------------------------------------------------------------------


def test_create_group_creates_then_updates_then_says_already():
    out, _ = run(
        "create_group", "pro", "--multiplier", "1.5", "--auto-priority", "10", "--selectable"
    )
    assert "Created group 'pro'" in out and "Pricing TBD" in out
    group = Group.objects.get(name="pro")
    assert (group.multiplier, group.auto_priority, group.user_selectable) == (
        Decimal("1.5"),
        10,
        True,
    )
    assert not group.pricing_confirmed

    out, _ = run("create_group", "pro", "--pricing-confirmed", "--description", "Paying users")
    assert "Updated group 'pro': pricing_confirmed, description." in out
    group.refresh_from_db()
    assert group.pricing_confirmed and group.multiplier == Decimal("1.5")

    out, _ = run("create_group", "pro", "--multiplier", "1.5")
    assert "already exists" in out
    out, _ = run("create_group", "pro", "--no-selectable", verbosity=0)
    assert out == ""
    group.refresh_from_db()
    assert not group.user_selectable


@pytest.mark.parametrize(
    "args, message",
    [
        (["--multiplier", "abc"], "--multiplier: 'abc' is not a number."),
        (["--multiplier", "0"], "multiplier: The multiplier must be greater than zero."),
        (["--multiplier", "NaN"], "is not a finite number"),
        (["--auto-priority", "1.5"], "--auto-priority: '1.5' is not a whole number."),
    ],
)
def test_create_group_rejects_bad_numbers(args, message):
    with pytest.raises(CommandError, match=message.replace(".", r"\.")) as exc:
        run("create_group", "cheap", *args)
    assert "\n" not in str(exc.value)
    assert not Group.objects.filter(name="cheap").exists()


def test_create_group_refuses_the_reserved_name_auto():
    with pytest.raises(CommandError, match="reserved"):
        run("create_group", "auto")


# --- create_user ----------------------------------------------------------------------------


def test_create_user_creates_an_api_user_then_updates_it():
    make_group("pro")
    out, _ = run(
        "create_user", "carol", "--group", "pro", "--balance", "25", "--email", "c@example.com"
    )
    assert out.strip() == "Created user 'carol' in group 'pro', balance 25."
    carol = User.objects.get(username="carol")
    assert carol.group.name == "pro" and carol.balance == Decimal("25")
    assert carol.email == "c@example.com" and not carol.has_usable_password()

    out, _ = run("create_user", "carol", "--balance", "30", "--group", "default")
    assert "Updated user 'carol': group, balance 25 -> 30." in out
    carol.refresh_from_db()
    assert carol.group.name == "default" and carol.balance == Decimal("30")
    out, _ = run("create_user", "carol", "--balance", "30")
    assert "already exists" in out


def test_create_user_defaults_to_the_default_group():
    run("create_user", "dan")
    assert User.objects.get(username="dan").group.name == "default"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--group", "nope"], "No group named 'nope'."),
        (["--balance", "ten"], "--balance: 'ten' is not a number."),
        (["--balance", "-1"], "The balance cannot be negative."),
    ],
)
def test_create_user_errors_write_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_user", "erin", *args)
    assert not User.objects.filter(username="erin").exists()


# --- create_channel -------------------------------------------------------------------------


def test_create_channel_creates_with_encrypted_key_groups_prices_and_map():
    pro, free = make_group("pro"), make_group("free")
    out, _ = run(
        "create_channel",
        "openai-main",
        "--base-url",
        "https://api.example.com/v1",
        "--key",
        "sk-upstream-cli-secret",
        "--models",
        "gpt-4o,gpt-4o-mini",
        "--groups",
        "pro,free",
        "--priority",
        "10",
        "--weight",
        "3",
        "--input-price",
        "2.5",
        "--output-price",
        "10",
        "--model-map",
        "gpt-4o=gpt-4o-2024-08-06",
    )
    assert "Created channel 'openai-main' serving free, pro." in out
    assert "sk-upstream-cli-secret" not in out
    channel = Channel.objects.get(name="openai-main")
    assert set(channel.groups.all()) == {pro, free}
    assert channel.model_list == ["gpt-4o", "gpt-4o-mini"]
    assert (channel.priority, channel.weight) == (10, 3)
    assert (channel.input_price, channel.output_price) == (Decimal("2.5"), Decimal("10"))
    assert channel.upstream_model("gpt-4o") == "gpt-4o-2024-08-06"
    assert channel.get_key() == "sk-upstream-cli-secret"
    assert "sk-upstream-cli-secret" not in channel.key_encrypted


def test_create_channel_updates_by_name_and_is_idempotent():
    make_group("pro"), make_group("free")
    args = ["create_channel", "c", "--base-url", "http://127.0.0.1:9/v1", "--key", "k1"]
    run(*args, "--models", "m1", "--groups", "pro")
    out, _ = run(*args, "--models", "m1", "--groups", "pro")
    assert "already exists" in out
    ciphertext = Channel.objects.get(name="c").key_encrypted
    out, _ = run("create_channel", "c", "--groups", "free", "--priority", "2")
    assert "Updated channel 'c': priority, groups." in out
    channel = Channel.objects.get(name="c")
    assert [g.name for g in channel.groups.all()] == ["free"]
    assert channel.key_encrypted == ciphertext  # key untouched when not given
    run("create_channel", "c", "--key", "k2")
    channel.refresh_from_db()
    assert channel.get_key() == "k2"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--groups", "pro,ghost"], "No group named 'ghost'."),
        (["--priority", "high"], "--priority: 'high' is not a whole number."),
        (["--input-price", "-1"], "input_price: Prices cannot be negative."),
        (["--output-price", "x"], "--output-price: 'x' is not a number."),
        (["--model-map", "gpt-4o"], "Model map entries look like public=upstream"),
        (["--weight", "-2"], "weight"),
    ],
)
def test_create_channel_errors_write_nothing(args, message):
    make_group("pro")
    base = ["--base-url", "http://127.0.0.1:9/v1", "--key", "k", "--models", "m", "--groups", "pro"]
    with pytest.raises(CommandError, match=message):
        run("create_channel", "bad", *base, *args)
    assert not Channel.objects.filter(name="bad").exists()


def test_create_channel_needs_url_key_and_models_to_create():
    with pytest.raises(CommandError, match="A new channel needs: base URL, key, models."):
        run("create_channel", "bare")


def test_create_channel_update_error_leaves_the_channel_as_it_was():
    pro = make_group("pro")
    make_channel("c", groups=[pro], priority=1)
    with pytest.raises(CommandError):
        run("create_channel", "c", "--priority", "5", "--groups", "pro,ghost")
    channel = Channel.objects.get(name="c")
    assert channel.priority == 1 and list(channel.groups.all()) == [pro]


# --- create_token ---------------------------------------------------------------------------


def test_create_token_prints_only_the_key(alice):
    make_group("pro")
    out, err = run(
        "create_token",
        "alice",
        "--group",
        "pro",
        "--name",
        "ci",
        "--spend-limit",
        "5.5",
        "--models",
        "gpt-4o, gpt-4o-mini",
        "--allow-ip",
        "10.0.0.0/8,192.168.1.7",
        "--expires",
        "2099-01-31T12:00:00Z",
    )
    key = out.strip()
    assert out == key + "\n" and key.startswith("sk-") and len(key) == 51
    token = Token.objects.get(key_hash=hash_key(key))
    assert (token.owner, token.group.name, token.name) == (alice, "pro", "ci")
    assert token.spend_limit == Decimal("5.5")
    assert token.model_allowlist == ["gpt-4o", "gpt-4o-mini"]
    assert token.ip_allowed("10.1.2.3") and not token.ip_allowed("11.0.0.1")
    assert token.expires_at == datetime(2099, 1, 31, 12, tzinfo=UTC)
    assert token.key_prefix in err and key not in err


def test_create_token_auto_and_default_group(alice):
    key, _ = run("create_token", "alice", "--group", "auto")
    assert Token.objects.get(key_hash=hash_key(key.strip())).auto
    key, _ = run("create_token", "alice", verbosity=0)
    token = Token.objects.get(key_hash=hash_key(key.strip()))
    assert token.group is None and not token.auto


@pytest.mark.parametrize(
    "args, message",
    [
        (["--group", "internal"], "may not use group 'internal'"),
        (["--group", "ghost"], "may not use group 'ghost'"),
        (["--spend-limit", "lots"], "--spend-limit: 'lots' is not a number."),
        (["--spend-limit", "-1"], "spend_limit: The spend limit cannot be negative."),
        (["--expires", "next tuesday"], "--expires: 'next tuesday' is not an ISO 8601"),
        (["--expires", "2020-01-01"], "--expires: 2020-01-01 is in the past."),
        (["--allow-ip", "10.0.0.0/33"], "allowed_ips: Not an IP or CIDR"),
    ],
)
def test_create_token_errors_write_nothing(alice, args, message):
    make_group("internal", user_selectable=False)
    with pytest.raises(CommandError, match=message) as exc:
        run("create_token", "alice", *args)
    assert "\n" not in str(exc.value)
    assert not Token.objects.exists()


def test_create_token_unknown_user():
    with pytest.raises(CommandError, match="No user named 'nobody'."):
        run("create_token", "nobody")


def manage(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_create_token_from_a_real_shell_prints_only_the_key(tmp_path):
    """The way scripts use it: KEY=$(manage.py create_token alice); errors exit non-zero."""
    db = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}
    assert manage("migrate", "-v0", env_extra=db).returncode == 0
    assert manage("create_user", "alice", env_extra=db).returncode == 0

    done = manage("create_token", "alice", "--name", "shell", env_extra=db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sk-") and done.stdout == done.stdout.strip() + "\n"
    assert len(done.stdout.strip()) == 51

    failed = manage("create_token", "alice", "--group", "ghost", env_extra=db)
    assert failed.returncode != 0
    assert failed.stdout == ""
    assert failed.stderr.strip().splitlines() == [
        "CommandError: User 'alice' may not use group 'ghost': it is neither their group "
        "nor an active selectable group."
    ]


# --- top_up ---------------------------------------------------------------------------------


def test_top_up_adds_to_the_balance(alice):
    out, _ = run("top_up", "alice", "12.25")
    assert out.strip() == "Topped up 'alice' by 12.25; balance now 112.25."
    alice.refresh_from_db()
    assert alice.balance == Decimal("112.25")


@pytest.mark.parametrize(
    "args, message",
    [
        (["alice", "ten"], "AMOUNT: 'ten' is not a number."),
        (["alice", "0"], "AMOUNT must be positive, not 0."),
        (["alice", "-5"], "AMOUNT must be positive, not -5."),
        (["nobody", "5"], "No user named 'nobody'."),
    ],
)
def test_top_up_errors(alice, args, message):
    with pytest.raises(CommandError, match=message):
        run("top_up", *args)
    alice.refresh_from_db()
    assert alice.balance == Decimal("100")


# --- ensure_admin ---------------------------------------------------------------------------


def test_ensure_admin_generates_a_password_once(monkeypatch):
    monkeypatch.delenv("AIROUTER_ADMIN_USER", raising=False)
    monkeypatch.delenv("AIROUTER_ADMIN_PASSWORD", raising=False)
    out, _ = run("ensure_admin")
    assert "Created admin 'admin' with password: " in out
    password = out.split("password: ")[1].split()[0]
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.check_password(password)

    out, _ = run("ensure_admin")
    assert out.strip().startswith("Admin 'admin' already exists (forgot the password?")
    admin.refresh_from_db()
    assert admin.check_password(password)


def test_ensure_admin_uses_the_environment(monkeypatch, client):
    monkeypatch.setenv("AIROUTER_ADMIN_USER", "root")
    monkeypatch.setenv("AIROUTER_ADMIN_PASSWORD", "correct-horse-1")
    out, _ = run("ensure_admin")
    assert out.strip() == "Created admin 'root'."
    assert client.login(username="root", password="correct-horse-1")
    assert client.get("/admin/").status_code == 200

    monkeypatch.setenv("AIROUTER_ADMIN_PASSWORD", "battery-staple-2")
    out, _ = run("ensure_admin")
    assert out.strip() == "Updated admin 'root'."
    assert User.objects.get(username="root").check_password("battery-staple-2")
    out, _ = run("ensure_admin")
    assert out.strip().startswith("Admin 'root' already exists")


def test_ensure_admin_restores_staff_rights_of_an_existing_user(monkeypatch):
    monkeypatch.setenv("AIROUTER_ADMIN_USER", "ops")
    monkeypatch.delenv("AIROUTER_ADMIN_PASSWORD", raising=False)
    make_user("ops")
    out, _ = run("ensure_admin")
    assert out.strip() == "Updated admin 'ops'."
    assert User.objects.get(username="ops").is_superuser


# --- rotate_channel_keys --------------------------------------------------------------------


def test_rotate_channel_keys_re_encrypts_with_the_newest_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [old]
    a = make_channel("a", key="sk-a")
    make_channel("b", key="sk-b")
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [new, old]

    out, _ = run("rotate_channel_keys", "--dry-run")
    assert "2 channel key(s) decrypt and would be re-encrypted" in out
    a.refresh_from_db()
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [new]
    with pytest.raises(keystore.KeyStoreError):
        a.get_key()  # the dry run wrote nothing

    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [new, old]
    out, _ = run("rotate_channel_keys")
    assert out.strip() == "Done! Re-encrypted 2 channel key(s)."
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [new]
    assert {c.name: c.get_key() for c in Channel.objects.all()} == {"a": "sk-a", "b": "sk-b"}


def test_rotate_channel_keys_refuses_when_a_key_cannot_be_decrypted(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [old]
    make_channel("lost", key="sk-lost")
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [new]
    make_channel("fine", key="sk-fine")
    before = dict(Channel.objects.values_list("name", "key_encrypted"))
    with pytest.raises(CommandError, match="decrypts the key of lost; nothing was re-encrypted"):
        run("rotate_channel_keys")
    assert dict(Channel.objects.values_list("name", "key_encrypted")) == before


def test_rotate_channel_keys_with_no_channels():
    out, _ = run("rotate_channel_keys")
    assert out.strip() == "Nothing to do: no channel has a key."
