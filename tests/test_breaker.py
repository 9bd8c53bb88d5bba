"""Circuit breakers: a channel that keeps failing leaves the rotation for a cooldown, one request
probes it afterwards, and every instance sees the same breakers through Redis."""

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from io import StringIO

import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.core.management import call_command
from django.urls import reverse

from billing.models import UsageRecord
from channels_app import breaker, routing, transports
from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_token, make_user
from tests.relay_setup import routed, sdk, stream_post
from tests.test_instances import ROOT, database_url, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.django_db(transaction=True)
FAILURE, SUCCESS = Channel.Outcome.FAILURE, Channel.Outcome.SUCCESS


@pytest.fixture(autouse=True)
def breakers(settings):
    """Per-process breakers, empty, with a short cooldown."""
    settings.REDIS_URL = ""
    settings.CHANNEL_FAILURE_THRESHOLD = 3
    settings.CHANNEL_COOLDOWN_SECONDS = 1.0
    settings.CHANNEL_COOLDOWN_MAX_SECONDS = 600.0
    breaker.reset()
    yield settings
    breaker.reset()


@pytest.fixture
def shared(settings, monkeypatch):
    """Breakers in Redis, under a key prefix of this test's own (deleted afterwards)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # Redis must be up (.ci/run starts it)
    prefix = f"test-breaker-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setattr(breaker, "PREFIX", prefix)
    settings.REDIS_URL = REDIS_URL
    breaker.reset()
    yield client
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def a_new_process():
    """What a fresh worker knows: nothing of its own, only what Redis holds."""
    breaker.reset()


def dead_and_good(fake_upstream_factory, **dead_behaviour):
    """A dead channel tried first (priority 10) and a good one behind it, in group pro."""
    dead, good = fake_upstream_factory(), fake_upstream_factory()
    dead.configure(status=500, error_message="boom", **dead_behaviour)
    token, key, good_channel = routed(good, channel="good")
    dead_channel = make_channel(
        "dead", groups=[make_group("pro")], base_url=dead.url, priority=10, input_price=1
    )
    return key, dead, good, dead_channel


def served(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    raw.parse()
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    return raw.headers["x-airouter-channel"], record.attempts


def state_of(channel):
    return breaker.states().get(channel.pk, breaker.NO_STATE)


# --- through the relay ------------------------------------------------------------------


def test_a_dead_channel_leaves_the_rotation_and_one_request_probes_it(
    live_server, fake_upstream_factory
):
    key, dead, good, dead_channel = dead_and_good(fake_upstream_factory)
    client = sdk(live_server, key)
    for _ in range(3):  # each tries the dead channel first, then fails over
        assert served(client) == ("good", 2)
    assert len(dead.requests) == 3
    state = state_of(dead_channel)
    assert state.status(time.time()) == breaker.OPEN and state.failures == 3
    assert "HTTP 500: boom" in state.error

    for _ in range(5):  # skipped: one attempt each, nothing reaches the dead upstream
        assert served(client) == ("good", 1)
    assert len(dead.requests) == 3

    time.sleep(1.05)  # the 1 s cooldown is over: half-open
    with ThreadPoolExecutor(6) as pool:  # a burst: exactly one of them probes it
        answers = list(pool.map(lambda _: served(client), range(6)))
    assert len(dead.requests) == 4
    assert sorted(answers) == [("good", 1)] * 5 + [("good", 2)]
    state = state_of(dead_channel)  # the probe failed: open again, for twice as long
    assert state.opens == 2 and 1.5 < state.until - time.time() <= 2.0
    assert served(client) == ("good", 1)
    assert len(dead.requests) == 4

    dead.reset()  # the upstream recovers
    time.sleep(state.until - time.time() + 0.05)
    assert served(client) == ("dead", 1)  # the probe succeeds: closed
    assert state_of(dead_channel) == breaker.NO_STATE
    assert [served(client) for _ in range(3)] == [("dead", 1)] * 3  # back in rotation


def test_without_the_breaker_every_request_tries_the_dead_channel_first(
    live_server, fake_upstream_factory, settings
):
    settings.CHANNEL_FAILURE_THRESHOLD = 0  # breakers off
    key, dead, good, _ = dead_and_good(fake_upstream_factory)
    client = sdk(live_server, key)
    assert [served(client) for _ in range(5)] == [("good", 2)] * 5
    assert len(dead.requests) == 5


def test_a_429_with_retry_after_opens_the_breaker_for_that_long(
    live_server, fake_upstream_factory, settings
):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0  # the 2 s come from the upstream
    key, limited, good, channel = dead_and_good(fake_upstream_factory)
    limited.configure(status=429, retry_after="2")
    client = sdk(live_server, key)
    assert served(client) == ("good", 2)  # one 429 is enough
    state = state_of(channel)
    assert state.failures == 1 and 1.8 < state.until - time.time() <= 2.0
    assert [served(client) for _ in range(3)] == [("good", 1)] * 3
    assert len(limited.requests) == 1

    limited.reset()  # (forgets the requests too)
    time.sleep(state.until - time.time() + 0.05)
    assert served(client) == ("dead", 1)  # (the channel's name) probed after 2 s, and closed
    assert len(limited.requests) == 1
    assert state_of(channel) == breaker.NO_STATE


def test_a_503_with_an_http_date_retry_after_opens_the_breaker_until_then(
    live_server, fake_upstream_factory, settings
):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    key, busy, good, channel = dead_and_good(fake_upstream_factory)
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    busy.configure(status=503, retry_after=format_datetime(when, usegmt=True))
    assert served(sdk(live_server, key)) == ("good", 2)
    assert abs(state_of(channel).until - when.timestamp()) < 0.01


def test_when_every_channel_is_open_they_are_tried_anyway_soonest_reopening_first(
    live_server, fake_upstream_factory, settings
):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    key, first, second, first_channel = dead_and_good(fake_upstream_factory)
    first.reset()  # both upstreams answer; both breakers are open
    for _ in range(3):
        breaker.record(first_channel.pk, FAILURE, "HTTP 500: boom")  # open for 30 s
    second_channel = Channel.objects.get(name="good")
    breaker.record(second_channel.pk, FAILURE, "HTTP 429: slow down", retry_after=5)
    client = sdk(live_server, key)

    # The priority says "dead" first, but "good" reopens sooner: it goes first.
    assert served(client) == ("good", 1)
    second.configure(status=500)
    assert served(client) == ("dead", 2)  # and the other is still tried after it
    assert (len(first.requests), len(second.requests)) == (1, 2)


def test_a_stream_cut_midway_counts_one_failure(live_server, fake_upstream_factory):
    key, dead, good, channel = dead_and_good(fake_upstream_factory)
    dead.reset()
    dead.configure(drop_after=1)  # answers, then hangs up mid-stream
    response = stream_post(live_server, key)
    assert response.headers["x-airouter-channel"] == "dead"
    assert b'data: {"error"' in response.content  # the client is told, in band
    state = state_of(channel)
    assert (state.failures, state.status(time.time())) == (1, breaker.CLOSED)
    assert "HTTP" not in state.error and state.error


def test_the_panic_order_is_by_reopening_time_not_priority(settings):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    group = make_group("pro")
    high = make_channel("high", groups=[group], priority=10)
    low = make_channel("low", groups=[group], priority=1)
    token, _ = make_token(make_user("pia", group=group))
    for _ in range(3):
        breaker.record(high.pk, FAILURE, "HTTP 500")
    breaker.record(low.pk, FAILURE, "HTTP 429", retry_after=5)
    plan = routing.plan(token, "gpt-4o-mini", explain=True)
    assert [a.channel.name for a in plan.attempts] == ["low", "high"]
    assert plan.cooling == []
    assert any("Every channel is cooling down" in note for note in plan.notes)


# --- the state machine, per process and in Redis ------------------------------------------


@pytest.fixture(params=["process", "redis"])
def mode(request):
    if request.param == "redis":
        request.getfixturevalue("shared")
    return request.param


def test_consecutive_failures_open_and_successes_reset(mode, settings):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    now = time.time()
    breaker.record(7, FAILURE, "one")
    breaker.record(7, Channel.Outcome.KEY_REFUSED, "two")
    breaker.record(7, SUCCESS)  # resets
    breaker.record(7, FAILURE, "one")
    breaker.record(7, FAILURE, "two")
    breaker.record(7, Channel.Outcome.REFUSED)  # the client's fault: an answer, resets too
    assert breaker.states().get(7) is None
    for n in range(3):
        breaker.record(7, FAILURE, f"error {n}")
    state = breaker.states()[7]
    assert (state.failures, state.opens, state.error) == (3, 1, "error 2")
    assert 29 < state.until - now <= 31
    breaker.record(7, SUCCESS)  # a request sent before it opened: still open
    assert breaker.states()[7].status(time.time()) == breaker.OPEN


def test_the_cooldown_doubles_at_each_reopen_up_to_the_maximum(mode, settings, monkeypatch):
    settings.CHANNEL_COOLDOWN_SECONDS = 10.0
    settings.CHANNEL_COOLDOWN_MAX_SECONDS = 35.0
    clock = [1_000_000.0]
    monkeypatch.setattr(breaker.time, "time", lambda: clock[0])
    for _ in range(3):
        breaker.record(9, FAILURE, "down")
    cooldowns = []
    for _ in range(4):
        state = breaker.states()[9]
        cooldowns.append(state.until - clock[0])
        clock[0] = state.until  # half-open: the probe fails
        assert state.status(clock[0]) == breaker.HALF_OPEN
        breaker.record(9, FAILURE, "still down")
    assert cooldowns == [10, 20, 35, 35]
    clock[0] = breaker.states()[9].until
    breaker.record(9, SUCCESS)  # the probe succeeds: closed, the doubling forgotten
    assert breaker.states().get(9) is None


def test_one_probe_per_half_open_channel_at_a_time(mode):
    assert breaker.grant_probe(5) is True
    a_new_process()  # another worker, or another instance
    assert breaker.grant_probe(5) is (mode == "process")  # Redis knows the turn is taken
    assert breaker.grant_probe(5) is False


def test_saving_a_channel_closes_its_breaker(mode):
    channel = make_channel("flaky")
    for _ in range(3):
        breaker.record(channel.pk, FAILURE, "HTTP 502")
    assert channel.pk in breaker.states()
    channel.priority = 5
    channel.save()
    assert channel.pk not in breaker.states()


def test_a_breaker_opened_by_one_process_is_seen_by_a_fresh_one_through_redis(shared):
    group = make_group("pro")
    dead = make_channel("dead", groups=[group], priority=10)
    make_channel("good", groups=[group])
    token, _ = make_token(make_user("ria", group=group))
    for _ in range(3):
        breaker.record(dead.pk, FAILURE, "HTTP 500: boom")
    a_new_process()
    plan = routing.plan(token, "gpt-4o-mini")
    assert [a.channel.name for a in plan.attempts] == ["good"]
    assert [ch.name for ch in plan.cooling] == ["dead"]
    assert breaker.snapshot()[dead.pk] == breaker.OPEN
    assert shared.hexists(breaker.PREFIX + "state", dead.pk)


def test_routing_reads_redis_at_most_once_a_second(shared, monkeypatch):
    group = make_group("pro")
    make_channel("a", groups=[group])
    token, _ = make_token(make_user("sia", group=group))
    reads = []
    real = redis.Redis.hgetall
    monkeypatch.setattr(
        redis.Redis, "hgetall", lambda self, key: reads.append(key) or real(self, key)
    )
    for _ in range(50):
        routing.plan(token, "gpt-4o-mini")
    assert len(reads) == 1


def test_a_redis_outage_never_fails_a_request(live_server, fake_upstream_factory, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    key, dead, good, dead_channel = dead_and_good(fake_upstream_factory)
    client = sdk(live_server, key)
    assert [served(client) for _ in range(4)] == [("good", 2)] * 3 + [("good", 1)]
    assert breaker.states(fresh=False)[dead_channel.pk].failures == 3  # the process's own


def test_two_instances_share_the_breakers_through_redis(fake_upstream_factory, tmp_path):
    """Two gunicorn instances: the failures seen by one open the breaker for the other."""
    client = redis.Redis.from_url(INSTANCES_REDIS)
    client.ping()
    key, dead, good, _ = dead_and_good(fake_upstream_factory)
    try:
        with gunicorns(tmp_path, 2) as urls:
            for _ in range(3):
                assert ask(urls[0], key) == ("good", 2)
            assert [ask(urls[1], key) for _ in range(3)] == [("good", 1)] * 3
            assert len(dead.requests) == 3
    finally:  # the instances' keys (the default prefix, in a database of this test's own)
        keys = list(client.scan_iter(match="airouter:breaker:*"))
        if keys:
            client.delete(*keys)


# --- what operators see ---------------------------------------------------------------------


def test_the_admin_list_says_cooling_down_until(admin_client, settings):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    cooling = make_channel("cooling")
    make_channel("fine")
    for _ in range(3):
        breaker.record(cooling.pk, FAILURE, "HTTP 500: boom")
    until = breaker.clock(breaker.states()[cooling.pk].until)
    html = admin_client.get(reverse("admin:channels_app_channel_changelist")).content.decode()
    assert f"cooling down until {until} (3 failures: HTTP 500: boom)" in html
    assert html.count("airouter-badge-warn") == 1
    assert html.count("airouter-badge-ok") == 1  # the other one: Enabled


def test_route_shows_each_channels_breaker(settings):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    group = make_group("pro")
    channels = {
        name: make_channel(name, groups=[group], priority=p)
        for name, p in (("fine", 3), ("cooling", 2), ("probing", 1))
    }
    token, _ = make_token(make_user("tia", group=group))
    for _ in range(3):
        breaker.record(channels["cooling"].pk, FAILURE, "HTTP 500: boom")
    breaker.record(channels["probing"].pk, FAILURE, "HTTP 429", retry_after=0.01)
    time.sleep(0.02)
    until = breaker.clock(breaker.states()[channels["cooling"].pk].until)

    out = StringIO()
    call_command("route", token=token.key_prefix, model="gpt-4o-mini", stdout=out, verbosity=2)
    text = out.getvalue()
    table = text.split("Circuit breakers")[0]
    assert "probing" in table and "fine" in table and "cooling" not in table
    assert "  fine     closed" in text
    assert "  probing  half-open (the next request probes it)" in text
    assert f"  cooling  open until {until} (3 failures: HTTP 500: boom): left out" in text
    assert f"channel cooling is left out, cooling down until {until}" in text
    # The probe goes first in its group; explaining took no turn from real requests.
    assert table.index("probing") < table.index("fine")
    assert breaker.grant_probe(channels["probing"].pk) is True


def test_snapshot_gives_every_channels_state(settings):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    group = make_group("pro")
    fine, cooling = make_channel("fine", groups=[group]), make_channel("cooling", groups=[group])
    for _ in range(3):
        breaker.record(cooling.pk, FAILURE, "HTTP 500")
    assert breaker.snapshot() == {fine.pk: "closed", cooling.pk: "open"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [("2", 2.0), (" 0.5 ", 0.5), ("", None), (None, None), ("soon", None), ("nan", None)],
)
def test_retry_after_reads_seconds(header, expected):
    assert transports.retry_after(header) == expected


def test_retry_after_reads_an_http_date():
    when = datetime.now(UTC) + timedelta(seconds=30)
    assert 28 < transports.retry_after(format_datetime(when, usegmt=True)) <= 30


# --- helpers for the two-instance test -----------------------------------------------------

INSTANCES_REDIS = "redis://127.0.0.1:6379/9"  # a database of this test's own


def ask(url, key):
    response = requests.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    record = UsageRecord.objects.get(request_id=response.headers["x-request-id"])
    return response.headers["x-airouter-channel"], record.attempts


class gunicorns:  # noqa: N801 (used as a context manager)
    def __init__(self, tmp_path, count):
        self.tmp_path, self.count, self.procs = tmp_path, count, []

    def __enter__(self):
        env = dict(
            os.environ,
            DATABASE_URL=database_url(),
            REDIS_URL=INSTANCES_REDIS,
            SECRET_KEY=django_settings.SECRET_KEY,
            CHANNEL_KEY_ENCRYPTION_KEYS=",".join(django_settings.CHANNEL_KEY_ENCRYPTION_KEYS),
            WEB_CONCURRENCY="1",
            GUNICORN_THREADS="8",
            DEBUG="false",
        )
        urls = []
        for n in range(self.count):
            port = free_port()
            log = open(self.tmp_path / f"instance-{n}.log", "wb")  # noqa: SIM115 (closed below)
            command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "airouter.wsgi"]
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(env, BIND=f"127.0.0.1:{port}"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.procs.append((proc, log))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{url}/v1/models", timeout=1).status_code == 401:
                        break
                except requests.RequestException:
                    pass  # not listening yet
                assert time.monotonic() < deadline, (self.tmp_path / "instance-0.log").read_text()
                time.sleep(0.1)
        return urls

    def __exit__(self, *exc):
        for proc, log in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()


# --- what a dead channel costs, with and without breakers (the figures print with -s) ---


@pytest.mark.parametrize("placement", ["tried first", "same tier"])
def test_a_dead_channel_costs_attempts_only_until_its_breaker_opens(
    live_server, fake_upstream_factory, settings, placement
):
    """30 sequential requests over two channels, the dying one (HTTP 500) tried first
    (priority 10) or in the same tier as the good one (equal weights): both healthy; then one
    dead without breakers (threshold 0), and with them (threshold 3)."""
    group = make_group("pro")
    dying, good = fake_upstream_factory(), fake_upstream_factory()
    priority = 10 if placement == "tried first" else 0
    make_channel("dying", groups=[group], base_url=dying.url, priority=priority)
    make_channel("good", groups=[group], base_url=good.url)
    _, key = make_token(make_user("mia", group=group))
    client = sdk(live_server, key)
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    served(client)  # warm up: the routing table, connections

    def run(label, threshold, dead):
        breaker.reset()
        settings.CHANNEL_FAILURE_THRESHOLD = threshold
        dying.reset()
        if dead:
            dying.configure(status=500)
        timings, attempts = [], []
        for _ in range(30):
            started = time.perf_counter()
            attempts.append(served(client)[1])
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        hits = len(dying.requests) if dead else 0
        print(
            f"{placement:11} {label:26} attempts/request {sum(attempts) / 30:4.2f}  "
            f"p50 {timings[14]:6.1f} ms  p90 {timings[26]:6.1f} ms  dead hit {hits:2}x"
        )
        return sum(attempts) / 30, hits

    print()
    assert run("before (both healthy)", 3, dead=False) == (1.0, 0)
    without, hits_without = run("dead, without the breaker", 0, dead=True)
    with_breaker, hits_with = run("dead, with the breaker", 3, dead=True)
    assert hits_with == 3 and with_breaker == 1.1  # three failures, then never again
    assert hits_without > hits_with and without > with_breaker
    if placement == "tried first":
        assert (without, hits_without) == (2.0, 30)  # every request tried the dead one first
