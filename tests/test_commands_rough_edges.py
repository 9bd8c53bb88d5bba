"""Issue 10, "rough edges the newcomer hit": what each ops command does on a re-run, the
model-map merge, case-insensitive group names, route's exit status, cron commands without
system checks, base URL warnings and --check, revoke_token, channel_status, money output."""

import contextlib
from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from channels_app.models import Channel
from groups.models import Group, User
from tests.factories import make_channel, make_group, make_token, make_user
from tokens.models import Token

pytestmark = pytest.mark.django_db


def run(*args, **kw):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **kw)
    return out.getvalue(), err.getvalue()


def channel_state(name):
    return Channel.objects.filter(name=name).values().first()


# --- 1. what a re-run does ------------------------------------------------------------------


def test_rerun_create_token_makes_another_key_top_up_adds_create_user_sets(alice):
    first, _ = run("create_token", "alice", "--name", "laptop")
    second, _ = run("create_token", "alice", "--name", "laptop")
    assert first != second
    assert Token.objects.filter(owner=alice, name="laptop").count() == 2

    run("top_up", "alice", "5")
    run("top_up", "alice", "5")
    alice.refresh_from_db()
    assert alice.balance == Decimal("110")

    run("create_user", "alice", "--balance", "20")
    run("top_up", "alice", "5")
    run("create_user", "alice", "--balance", "20")  # sets, not adds: the top-up is gone
    alice.refresh_from_db()
    assert alice.balance == Decimal("20")


# --- 2. --model-map merges -------------------------------------------------------------------


def test_model_map_merges_into_the_existing_map_and_empty_upstream_removes():
    make_group("pro")
    run(
        "create_channel", "ch", "--base-url", "https://up.example/v1", "--key", "sk-1",
        "--models", "a,b,c", "--groups", "pro", "--model-map", "a=up-a,b=up-b",
    )  # fmt: skip
    run("create_channel", "ch", "--model-map", "c=up-c,a=up-a2")
    assert Channel.objects.get(name="ch").model_map == {"a": "up-a2", "b": "up-b", "c": "up-c"}
    out, _ = run("create_channel", "ch", "--model-map", "b=")
    assert "model_map" in out
    assert Channel.objects.get(name="ch").model_map == {"a": "up-a2", "c": "up-c"}
    out, _ = run("create_channel", "ch", "--model-map", "b=,a=up-a2")  # nothing to change
    assert "already exists with these settings" in out


def test_model_map_for_an_unlisted_model_is_refused_and_nothing_written():
    make_channel("ch", model_names="a,b", model_map={"a": "up-a"})
    before = channel_state("ch")
    with pytest.raises(CommandError, match="does not list 'zzz'"):
        run("create_channel", "ch", "--model-map", "zzz=up-z", "--priority", "7")
    assert channel_state("ch") == before
    # A model given in the same run counts as listed.
    run("create_channel", "ch", "--models", "a,b,zzz", "--model-map", "zzz=up-z")
    assert Channel.objects.get(name="ch").model_map == {"a": "up-a", "zzz": "up-z"}


def test_model_map_help_says_it_merges():
    parser = load_command_class("channels_app", "create_channel").create_parser(
        "manage.py", "create_channel"
    )
    assert "merged" in parser.format_help()


# --- 3. group names unique ignoring case -----------------------------------------------------


def test_create_group_refuses_a_name_differing_only_by_case():
    run("create_group", "pro")
    with pytest.raises(CommandError, match="A group named 'pro' already exists"):
        run("create_group", "PRO", "--multiplier", "2")
    assert list(Group.objects.filter(name__iexact="pro").values_list("name", flat=True)) == ["pro"]
    assert Group.objects.get(name="pro").multiplier == Decimal("1")


def test_group_clean_and_database_constraint_refuse_other_case():
    make_group("pro")
    with pytest.raises(ValidationError) as exc:
        Group(name="Pro").full_clean()
    assert "already exists" in exc.value.message_dict["name"][0]
    with pytest.raises(IntegrityError), transaction.atomic():
        Group.objects.create(name="PRO")
    Group.objects.get(name="pro").full_clean()  # the group itself is fine


# --- 4. route: empty plan exits non-zero, skipped listed always ------------------------------


def test_route_empty_plan_raises_after_explaining():
    pro = make_group("pro")
    make_channel("other", groups=[pro], model_names="gpt-4o")
    token, _ = make_token(make_user("ed", group=pro))
    out = StringIO()
    with pytest.raises(CommandError, match="No attempt"):
        call_command("route", token=token.key_prefix, model="gpt-4o-mini", stdout=out)
    assert "channel other does not list gpt-4o-mini" in out.getvalue()


def test_route_lists_what_was_left_out_without_v2():
    pro = make_group("pro")
    make_channel("good", groups=[pro])
    make_channel("off", groups=[pro], status=Channel.Status.DISABLED, status_reason="billing")
    token, _ = make_token(make_user("fay", group=pro))
    out, _ = run("route", token=token.key_prefix, model="gpt-4o-mini")
    assert "good" in out
    assert "channel off is not usable: disabled by hand (billing)" in out


# --- 5. cron commands skip the system checks -------------------------------------------------


@pytest.mark.parametrize(
    "app, name",
    [
        ("billing", "release_holds"),
        ("channels_app", "check_channels"),
        ("billing", "usage_report"),
    ],
)
def test_cron_commands_skip_system_checks(app, name, monkeypatch):
    assert load_command_class(app, name).requires_system_checks == []
    # Run as `manage.py NAME` runs it (not call_command, which skips checks on its own).
    command = load_command_class(app, name)
    monkeypatch.setattr(command, "check", lambda **kw: pytest.fail("system checks ran"))
    argv = ["--channel", "nope"] if name == "check_channels" else []
    options = vars(command.create_parser("manage.py", name).parse_args(argv))
    out, err = StringIO(), StringIO()
    with contextlib.suppress(CommandError):  # check_channels: no channel "nope"
        command.execute(stdout=out, stderr=err, **options)
    assert "System check" not in out.getvalue() + err.getvalue()


# --- 6. base URL warning and --check ---------------------------------------------------------


@pytest.mark.parametrize(
    "url, warned",
    [
        ("https://api.example.com", True),
        ("https://api.example.com/openai/", True),
        ("https://api.example.com/v1", False),
        ("https://api.example.com/v1/", False),
        ("https://generativelanguage.example.com/v1beta", False),
        ("https://api.example.com/api/v3", False),
    ],
)
def test_create_channel_warns_about_a_base_url_without_version(url, warned):
    out, err = run("create_channel", "ch", "--base-url", url, "--key", "k", "--models", "m")
    assert "Created channel" in out
    assert ("does not end in a version segment" in err) is warned
    assert Channel.objects.get(name="ch").base_url.startswith(url.rstrip("/"))


def test_create_channel_no_url_warning_for_mock():
    _, err = run("create_channel", "m", "--kind", "mock", "--models", "m1")
    assert err == ""


def test_create_channel_check_probes_and_reports(fake_upstream_factory):
    upstream = fake_upstream_factory()
    out, _ = run(
        "create_channel", "ok", "--base-url", upstream.url, "--key", "k", "--models", "m",
        "--check",
    )  # fmt: skip
    assert "Check: OK status=200" in out
    assert upstream.requests and Channel.objects.get(name="ok").last_checked is not None

    with pytest.raises(CommandError, match="Check: FAIL"):
        run(
            "create_channel", "dead", "--base-url", "http://127.0.0.1:9/v1", "--key", "k",
            "--models", "m", "--connect-timeout", "0.5", "--check",
        )  # fmt: skip
    assert Channel.objects.get(name="dead").last_error  # saved, then probed


# --- 7. revoke_token and channel_status ------------------------------------------------------


def test_revoke_token_by_prefix_is_idempotent(alice):
    token, key = make_token(alice, name="laptop")
    other, _ = make_token(alice)
    out, _ = run("revoke_token", token.key_prefix)
    assert "Revoked" in out and token.key_prefix in out
    token.refresh_from_db()
    other.refresh_from_db()
    assert token.status == Token.Status.REVOKED and other.status == Token.Status.ACTIVE
    out, _ = run("revoke_token", key)  # the full key works too
    assert "already revoked" in out


def test_revoke_token_unknown_writes_nothing(alice):
    make_token(alice)
    with pytest.raises(CommandError, match="No token"):
        run("revoke_token", "sk-nothing")
    assert not Token.objects.exclude(status=Token.Status.ACTIVE).exists()


def test_channel_status_disables_with_reason_and_enables():
    make_channel("ch")
    out, _ = run("channel_status", "ch", "--disable", "--reason", "invoice unpaid")
    assert "Disabled channel 'ch'" in out
    ch = Channel.objects.get(name="ch")
    assert (ch.status, ch.status_reason) == (Channel.Status.DISABLED, "invoice unpaid")
    out, _ = run("channel_status", "ch", "--disable")
    assert "already disabled" in out
    out, _ = run("channel_status", "ch", "--enable")
    assert "Enabled channel 'ch'" in out
    assert Channel.objects.get(name="ch").status == Channel.Status.ENABLED
    out, _ = run("channel_status", "ch", "--enable")
    assert "already enabled" in out


def test_channel_status_errors_write_nothing():
    make_channel("ch")
    with pytest.raises(CommandError, match="No channel"):
        run("channel_status", "nope", "--disable")
    with pytest.raises(CommandError, match="--reason goes with --disable"):
        run("channel_status", "ch", "--enable", "--reason", "x")
    with pytest.raises(CommandError):
        run("channel_status", "ch")  # one of --enable/--disable is required
    assert Channel.objects.get(name="ch").status == Channel.Status.ENABLED


# --- 8. amounts never in scientific notation -------------------------------------------------


def test_top_up_prints_plain_amounts():
    make_user("carol", balance=Decimal("0"))
    out, _ = run("top_up", "carol", "1e3")
    assert "by 1000;" in out and "balance now 1000." in out
    assert "E+" not in out
    assert User.objects.get(username="carol").balance == Decimal("1000")
