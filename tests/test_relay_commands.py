"""The ops commands of the relay: `route` and `check_channels`."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils.timezone import now

from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_token, make_user
from tokens.models import Token

pytestmark = pytest.mark.django_db


def run(*args, **kw) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **kw)
    return out.getvalue()


def run_empty_plan(*args, **kw) -> str:
    """`route` with an empty plan: the explanation is printed, then a non-zero exit."""
    out = StringIO()
    with pytest.raises(CommandError, match="No attempt"):
        call_command(*args, stdout=out, **kw)
    return out.getvalue()


def test_route_prints_the_plan_in_order(fake_upstream):
    pro = make_group("pro", multiplier=Decimal("1.5"))
    make_channel("primary", groups=[pro], priority=10, weight=2, input_price=Decimal("0.15"))
    make_channel("backup", groups=[pro], priority=1, output_price=Decimal("0.6"))
    token, key = make_token(make_user("nia", group=pro))

    output = run("route", token=token.key_prefix, model="gpt-4o-mini")
    lines = output.splitlines()
    assert "routed by pro (default)" in lines[0]
    first = next(i for i, line in enumerate(lines) if "primary" in line)
    second = next(i for i, line in enumerate(lines) if "backup" in line)
    assert first < second
    assert lines[first].split() == [
        *("1", "pro", "primary", "openai", "10", "2"),
        *("0.15", "0.15", "0.15", "0", "1.5"),  # input, cached, cache write, output, x
    ]
    assert lines[second].split() == [
        *("2", "pro", "backup", "openai", "1", "1"),
        *("0", "0", "0", "0.6", "1.5"),
    ]
    assert fake_upstream.requests == []  # nothing was sent
    assert "primary" in run("route", token=key, model="gpt-4o-mini")  # the full key works too


def test_route_explains_an_empty_plan(db):
    first = make_group("first", auto_priority=1)
    second = make_group("second", auto_priority=2)
    make_group("closed", auto_priority=3, user_selectable=False)
    make_channel("off", groups=[first], status=Channel.Status.DISABLED, status_reason="billing")
    make_channel("other-model", groups=[second], model_names="gpt-4o")
    token, _ = make_token(make_user("oz", group=first), group_name="auto")

    output = run_empty_plan("route", token=token.key_prefix, model="gpt-4o-mini")
    assert "No attempt" in output
    assert "channel off is not usable: disabled by hand (billing)" in output
    assert "channel other-model does not list gpt-4o-mini" in output
    assert "group closed: skipped, user oz may not use it" in output


def test_route_warns_about_the_token_itself(db):
    pro = make_group("pro")
    make_channel("primary", groups=[pro])
    token, _ = make_token(make_user("pat", group=pro), allowed_models="gpt-4o")
    output = run("route", token=token.key_prefix, model="gpt-4o-mini")
    assert "not in the token's allowed models" in output


def test_route_rejects_an_unknown_token(db):
    with pytest.raises(CommandError, match="No token"):
        run("route", token="sk-nothing", model="gpt-4o-mini")


def test_check_channels_probes_and_records(fake_upstream_factory):
    good, bad = fake_upstream_factory(), fake_upstream_factory()
    bad.configure(status=401, error_message="invalid key")
    make_channel("good", base_url=good.url, model_map={"gpt-4o-mini": "mini-upstream"})
    make_channel("bad", base_url=bad.url)
    make_channel("off", base_url=bad.url, status=Channel.Status.DISABLED)

    out = StringIO()
    with pytest.raises(CommandError, match="1 of 2 channel"):  # exit status 1 for cron
        call_command("check_channels", stdout=out)
    output = out.getvalue()
    assert "good: OK status=200" in output
    assert "bad: FAIL status=401" in output and "invalid key" in output
    assert "off" not in output
    assert "Checked 2 channel(s): 1 OK, 1 failing" in output
    probe = good.requests[-1].json
    assert probe["model"] == "mini-upstream" and probe["max_tokens"] == 1
    assert good.requests[-1].headers["authorization"] == "Bearer sk-upstream-secret"

    rows = {c.name: c for c in Channel.objects.all()}
    assert rows["good"].last_error == "" and rows["good"].last_checked is not None
    assert rows["good"].last_latency_ms is not None
    assert rows["bad"].last_error == "HTTP 401: invalid key"
    assert rows["off"].last_checked is None


def test_check_channels_one_channel_and_unreachable(db):
    make_channel("dead", base_url="http://127.0.0.1:9/v1", connect_timeout=0.5)
    out = StringIO()
    with pytest.raises(CommandError, match="1 of 1 channel"):
        call_command("check_channels", channel="dead", stdout=out)
    output = out.getvalue()
    assert "dead: FAIL status=-" in output and "connection failed" in output
    assert Channel.objects.get(name="dead").last_error.startswith("connection failed")
    with pytest.raises(CommandError):
        run("check_channels", channel="nope")


def test_route_explains_a_group_closed_to_the_owner(db):
    pro = make_group("pro", user_selectable=False)
    make_channel("primary", groups=[pro])
    token, _ = make_token(make_user("quin", group=pro), group_name="pro")
    assert "primary" in run("route", token=token.key_prefix, model="gpt-4o-mini")

    token.owner.group = make_group("basic")
    token.owner.save()
    output = run_empty_plan("route", token=token.key_prefix, model="gpt-4o-mini")
    assert "No attempt" in output and "primary" not in output
    assert "group 'pro'" in output and "no longer available" in output
    assert "403 group_not_allowed" in output


def test_route_explains_an_auto_token_without_groups(db):
    make_channel("primary", groups=[make_group("pro")])
    token, _ = make_token(make_user("rae", group=make_group("pro")), group_name="auto")
    output = run_empty_plan("route", token=token.key_prefix, model="gpt-4o-mini")
    assert "no active group with an auto priority is open to user rae" in output
    assert "group default: skipped" in output
    assert "(none)" not in output


def test_route_warns_about_a_refused_token(db):
    pro = make_group("pro")
    make_channel("primary", groups=[pro])
    token, _ = make_token(make_user("sol", group=pro), allowed_ips="10.0.0.0/8")
    output = run("route", token=token.key_prefix, model="gpt-4o-mini")
    assert "only from 10.0.0.0/8" in output
    Token.objects.filter(pk=token.pk).update(expires_at=now() - timedelta(minutes=1))
    output = run("route", token=token.key_prefix, model="gpt-4o-mini")
    assert "expired" in output and "401 token_expired" in output
