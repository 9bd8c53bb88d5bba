"""Routing by token group, priority and weight, `auto` failover, and the routing cache."""

import random
import time
from collections import Counter
from decimal import Decimal
from io import StringIO

import openai
import pytest
from django.core.management import call_command

from billing.models import UsageRecord
from channels_app import routing
from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_token, make_user, table_entry
from tests.relay_setup import chat, sdk, stream_post

pytestmark = pytest.mark.django_db(transaction=True)

DEAD = "http://127.0.0.1:9/v1"  # nothing listens on the discard port


def served_by(client, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=kw.pop("model", "gpt-4o-mini"), messages=[{"role": "user", "content": "hi"}], **kw
    )
    raw.parse()
    return raw.headers["x-airouter-group"], raw.headers["x-airouter-channel"]


@pytest.fixture
def two_groups(fake_upstream_factory):
    """pro: ch-pro; basic: ch-basic; ch-shared serves both at a lower priority."""
    pro = make_group("pro", multiplier=Decimal("2"))
    basic = make_group("basic", multiplier=Decimal("1"))
    ups = {name: fake_upstream_factory() for name in ("pro", "basic", "shared")}
    make_channel("ch-pro", groups=[pro], base_url=ups["pro"].url, priority=10, output_price=1)
    make_channel("ch-basic", groups=[basic], base_url=ups["basic"].url, priority=10, output_price=1)
    make_channel("ch-shared", groups=[pro, basic], base_url=ups["shared"].url, output_price=1)
    user = make_user("dana", group=basic)
    _, pro_key = make_token(user, group_name="pro")
    _, basic_key = make_token(user)  # the owner's default group: basic
    return ups, pro_key, basic_key


def test_tokens_land_on_channels_of_their_own_group(live_server, two_groups):
    ups, pro_key, basic_key = two_groups
    assert served_by(sdk(live_server, pro_key)) == ("pro", "ch-pro")
    assert served_by(sdk(live_server, basic_key)) == ("basic", "ch-basic")
    assert len(ups["pro"].requests) == len(ups["basic"].requests) == 1
    assert ups["shared"].requests == []


def test_a_channel_in_several_groups_bills_the_group_of_the_token(live_server, two_groups):
    ups, pro_key, basic_key = two_groups
    ups["pro"].configure(status=500)
    ups["basic"].configure(status=500)
    assert served_by(sdk(live_server, pro_key)) == ("pro", "ch-shared")
    assert served_by(sdk(live_server, basic_key)) == ("basic", "ch-shared")
    pro_record, basic_record = UsageRecord.objects.filter(channel__name="ch-shared").order_by("id")
    assert (pro_record.group.name, pro_record.multiplier, pro_record.attempts) == (
        "pro",
        Decimal("2"),
        2,
    )
    assert (basic_record.group.name, basic_record.multiplier) == ("basic", Decimal("1"))
    assert pro_record.cost == 2 * basic_record.cost > 0
    assert ups["basic"].requests and all(
        r.headers["authorization"] == "Bearer sk-upstream-secret" for r in ups["shared"].requests
    )


def test_priority_tiers_first_then_weights_in_proportion(db):
    group = make_group("pro")
    make_channel("high", groups=[group], priority=5, weight=1)
    make_channel("heavy", groups=[group], priority=1, weight=3)
    make_channel("light", groups=[group], priority=1, weight=1)
    token, _ = make_token(make_user("erin", group=group))
    rng = random.Random(7)

    firsts, seconds = Counter(), Counter()
    for _ in range(4000):
        attempts = routing.plan(token, "gpt-4o-mini", rng=rng).attempts
        names = [a.channel.name for a in attempts]
        assert sorted(names) == ["heavy", "high", "light"]  # each channel once
        firsts[names[0]] += 1
        seconds[names[1]] += 1
    assert firsts == {"high": 4000}
    assert 0.72 < seconds["heavy"] / 4000 < 0.78  # 3:1


def test_weights_split_live_traffic(live_server, fake_upstream_factory):
    group = make_group("pro")
    heavy, light = fake_upstream_factory(), fake_upstream_factory()
    make_channel("heavy", groups=[group], base_url=heavy.url, weight=3)
    make_channel("light", groups=[group], base_url=light.url, weight=1)
    _, key = make_token(make_user("fay", group=group))
    client = sdk(live_server, key)
    for _ in range(200):
        chat(client)
    # Binomial(200, 3/4): P(outside 118..182) = 2.4e-7 (exact tail sum).
    assert 118 <= len(heavy.requests) <= 182
    assert len(heavy.requests) + len(light.requests) == 200


@pytest.fixture
def auto_setup(fake_upstream_factory):
    first = make_group("first", multiplier=Decimal("1"), auto_priority=1)
    second = make_group("second", multiplier=Decimal("3"), auto_priority=2)
    ups = {"first": fake_upstream_factory(), "second": fake_upstream_factory()}
    make_channel("ch-first", groups=[first], base_url=ups["first"].url, output_price=1)
    make_channel("ch-second", groups=[second], base_url=ups["second"].url, output_price=1)
    token, key = make_token(make_user("gus", group=first), group_name="auto")
    return ups, key


def test_auto_uses_the_first_group_while_it_works(live_server, auto_setup):
    ups, key = auto_setup
    assert served_by(sdk(live_server, key)) == ("first", "ch-first")


def test_auto_fails_over_to_the_next_group_on_500(live_server, auto_setup):
    ups, key = auto_setup
    ups["first"].configure(status=500)
    assert served_by(sdk(live_server, key)) == ("second", "ch-second")
    record = UsageRecord.objects.get()
    assert (record.group.name, record.channel.name, record.multiplier) == (
        "second",
        "ch-second",
        Decimal("3"),
    )
    assert record.attempts == 2
    assert Channel.objects.get(name="ch-first").last_error.startswith("HTTP 500")


def test_auto_skips_a_group_without_a_channel_for_the_model(live_server, auto_setup):
    ups, key = auto_setup
    Channel.objects.get(name="ch-first").groups.clear()
    make_channel("ch-other-model", groups=[make_group("first")], model_names="gpt-4o")
    assert served_by(sdk(live_server, key)) == ("second", "ch-second")
    assert ups["first"].requests == []


def test_auto_skips_groups_the_owner_may_not_use(live_server, auto_setup):
    ups, key = auto_setup
    make_group("second", user_selectable=False)  # gus is in "first": "second" is now closed
    ups["first"].configure(status=500)
    with pytest.raises(openai.InternalServerError):
        chat(sdk(live_server, key))
    assert ups["second"].requests == []


def test_connection_errors_and_timeouts_fail_over(live_server, fake_upstream_factory):
    group = make_group("pro")
    slow, good = fake_upstream_factory(), fake_upstream_factory()
    slow.configure(delay=1)
    make_channel("dead", groups=[group], base_url=DEAD, priority=3)
    make_channel("slow", groups=[group], base_url=slow.url, priority=2, read_timeout=0.2)
    make_channel("good", groups=[group], base_url=good.url, priority=1)
    _, key = make_token(make_user("hal", group=group))
    assert served_by(sdk(live_server, key)) == ("pro", "good")
    assert UsageRecord.objects.get().attempts == 3
    errors = dict(Channel.objects.values_list("name", "last_error"))
    assert "connection failed" in errors["dead"]
    assert "sent nothing for 0.2s" in errors["slow"]
    assert errors["good"] == ""


def test_a_refused_channel_key_fails_over_and_is_not_the_clients_401(
    live_server, fake_upstream_factory
):
    group = make_group("pro")
    refusing, good = fake_upstream_factory(), fake_upstream_factory()
    refusing.configure(status=401, error_message="Incorrect API key provided: sk-upstream-secret")
    make_channel("refusing", groups=[group], base_url=refusing.url, priority=2)
    _, key = make_token(make_user("ian", group=group))
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 502
    assert "sk-upstream-secret" not in excinfo.value.response.text
    assert "sk-upstream-secret" not in Channel.objects.get(name="refusing").last_error
    make_channel("good", groups=[group], base_url=good.url, priority=1)
    assert served_by(sdk(live_server, key)) == ("pro", "good")


def test_a_channel_whose_key_is_refused_is_disabled_until_a_probe_succeeds(
    live_server, fake_upstream_factory
):
    group = make_group("pro")
    refusing, good = fake_upstream_factory(), fake_upstream_factory()
    refusing.configure(status=401, error_message="Incorrect API key provided")
    make_channel("refusing", groups=[group], base_url=refusing.url, priority=2)
    make_channel("good", groups=[group], base_url=good.url, priority=1)
    _, key = make_token(make_user("ian", group=group))
    assert served_by(sdk(live_server, key)) == ("pro", "good")  # failed over
    channel = Channel.objects.get(name="refusing")
    assert channel.status == Channel.Status.AUTO_DISABLED
    assert "refused the channel's key" in channel.status_reason and "401" in channel.status_reason
    assert served_by(sdk(live_server, key)) == ("pro", "good")
    assert len(refusing.requests) == 1  # not tried again while disabled

    refusing.reset()  # the operator fixed the key upstream
    out = StringIO()
    call_command("check_channels", stdout=out)
    assert "refusing: OK status=200" in out.getvalue() and "(enabled again)" in out.getvalue()
    assert Channel.objects.get(name="refusing").status == Channel.Status.ENABLED
    assert served_by(sdk(live_server, key)) == ("pro", "refusing")


def test_attempts_are_bounded_by_the_setting(live_server, fake_upstream_factory, settings):
    settings.RELAY_MAX_ATTEMPTS = 2
    group = make_group("pro")
    ups = [fake_upstream_factory().configure(status=503) for _ in range(4)]
    for n, up in enumerate(ups):
        make_channel(f"ch-{n}", groups=[group], base_url=up.url)
    _, key = make_token(make_user("jo", group=group))
    with pytest.raises(openai.InternalServerError):
        chat(sdk(live_server, key))
    assert sum(len(up.requests) for up in ups) == 2
    assert UsageRecord.objects.get().attempts == 2


def test_a_failing_upstream_recovers_within_the_attempts(live_server, fake_upstream):
    group = make_group("pro")
    make_channel("only", groups=[group], base_url=fake_upstream.url)
    _, key = make_token(make_user("kim", group=group))
    fake_upstream.configure(status=500, fail_times=1)
    with pytest.raises(openai.InternalServerError):
        chat(sdk(live_server, key))  # one channel, tried once per request
    assert chat(sdk(live_server, key)).choices  # the upstream recovered
    assert Channel.objects.get(name="only").last_error == ""


def test_no_failover_once_the_stream_started(live_server, fake_upstream_factory):
    group = make_group("pro")
    flaky, spare = fake_upstream_factory(), fake_upstream_factory()
    flaky.configure(drop_after=1)
    make_channel("flaky", groups=[group], base_url=flaky.url, priority=2)
    make_channel("spare", groups=[group], base_url=spare.url, priority=1)
    _, key = make_token(make_user("lee", group=group))
    response = stream_post(live_server, key)
    assert response.headers["x-airouter-channel"] == "flaky"
    assert b"upstream_error" in response.content
    assert spare.requests == []


def test_a_stream_that_fails_before_its_first_byte_fails_over(live_server, fake_upstream_factory):
    group = make_group("pro")
    stalled, spare = fake_upstream_factory(), fake_upstream_factory()
    stalled.configure(stall_after=0, stall=2)
    make_channel("stalled", groups=[group], base_url=stalled.url, priority=2, read_timeout=0.3)
    make_channel("spare", groups=[group], base_url=spare.url, priority=1)
    _, key = make_token(make_user("max", group=group))
    chunks = list(chat(sdk(live_server, key), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert UsageRecord.objects.get().channel.name == "spare"


def test_admin_changes_reach_the_routing_table_at_once(live_server, two_groups):
    ups, pro_key, _ = two_groups
    client = sdk(live_server, pro_key)
    assert served_by(client) == ("pro", "ch-pro")
    channel = Channel.objects.get(name="ch-pro")
    channel.status = Channel.Status.DISABLED
    channel.save()  # what the admin does
    assert served_by(client) == ("pro", "ch-shared")
    channel.groups.remove(make_group("pro"))
    channel.status = Channel.Status.ENABLED
    channel.save()
    assert served_by(client) == ("pro", "ch-shared")


def test_changes_without_signals_are_seen_after_the_ttl(live_server, two_groups, settings):
    settings.ROUTING_CACHE_TTL = 0.3
    ups, pro_key, _ = two_groups
    client = sdk(live_server, pro_key)
    assert served_by(client) == ("pro", "ch-pro")
    Channel.objects.filter(name="ch-pro").update(status=Channel.Status.DISABLED)  # no signal
    assert served_by(client) == ("pro", "ch-pro")  # still cached
    time.sleep(0.35)
    assert served_by(client) == ("pro", "ch-shared")


def test_the_table_holds_decrypted_keys_and_prices(db):
    group = make_group("pro")
    channel = make_channel("ch", groups=[group], key="sk-up-1", input_price=Decimal("3"))
    channel.model_prices.create(model="gpt-4o-mini", input_price=5, output_price=7)
    entry = table_entry(channel)
    assert entry.key == "sk-up-1" and "sk-up-1" not in repr(entry)
    rates = entry.rates("gpt-4o-mini")
    assert (rates.input, rates.output) == (5, 7)
    assert _pair(entry.rates("other")) == (Decimal("3"), Decimal("0"))


def test_an_upstream_hanging_up_unanswered_gets_one_more_try(live_server, fake_upstream):
    group = make_group("pro")
    make_channel("only", groups=[group], base_url=fake_upstream.url)
    _, key = make_token(make_user("quinn", group=group))
    fake_upstream.configure(hangup_times=1)  # e.g. a kept-alive connection it had closed
    assert served_by(sdk(live_server, key)) == ("pro", "only")
    assert len(fake_upstream.requests) == 2
    fake_upstream.configure(hangup_times=2)
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 502


def _pair(rates):
    return rates.input, rates.output
