"""What operators see: /metrics (Prometheus; summed across gunicorn workers), /healthz and
/readyz for load balancers, and the one log line per proxied request (text or JSON)."""

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import requests
from django.conf import settings as django_settings
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Sum
from prometheus_client.parser import text_string_to_metric_families

from airouter import health_views
from airouter.log_format import JsonFormatter
from billing.models import UsageRecord
from channels_app import breaker
from groups.models import Group
from tests.factories import make_channel
from tests.relay_setup import chat, routed, sdk, stream_post
from tests.test_instances import database_url, free_port

ROOT = Path(__file__).resolve().parent.parent
CHAT = "chat/completions"


def scrape(base_url: str, **headers) -> dict:
    """/metrics parsed: {(sample name, ((label, value), ...)): value}."""
    response = requests.get(f"{base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_counted(samples, channel, status="success", group="pro", endpoint=CHAT):
    return value(
        samples,
        "airouter_requests_total",
        endpoint=endpoint,
        group=group,
        model="gpt-4o-mini",
        channel=channel,
        status=status,
    )


@pytest.fixture
def closed_breakers():
    breaker.reset()
    yield
    breaker.reset()


@pytest.mark.django_db(transaction=True)
def test_metrics_count_a_served_and_a_failed_over_request(
    live_server, fake_upstream_factory, settings, closed_breakers
):
    settings.CHANNEL_FAILURE_THRESHOLD = 1  # one failure opens a breaker
    first, second = fake_upstream_factory(), fake_upstream_factory()
    first.configure(prompt_tokens=30, completion_tokens=7, cached_tokens=10)
    _, key, _ = routed(first, channel="ch-first", priority=2, input_price=1, output_price=2)
    make_channel(
        "ch-second",
        groups=[Group.objects.get(name="pro")],
        base_url=second.url,
        priority=1,
        output_price=3,
    )
    before = scrape(live_server.url)

    client = sdk(live_server, key)
    chat(client)  # served by ch-first
    first.configure(status=500)
    chat(client)  # ch-first fails, ch-second serves
    assert b"data: [DONE]" in stream_post(live_server, key).content  # ch-second, streamed

    after = scrape(live_server.url)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert requests_counted(after, "ch-first") - requests_counted(before, "ch-first") == 1
    assert requests_counted(after, "ch-second") - requests_counted(before, "ch-second") == 2
    attempts = "airouter_upstream_attempts_total"
    assert delta(attempts, channel="ch-first", outcome="success") == 1
    assert delta(attempts, channel="ch-first", outcome="failure") == 1
    assert delta(attempts, channel="ch-second", outcome="success") == 2
    # Histograms: every request's duration, the stream's time to first token.
    durations = "airouter_request_duration_seconds_count"
    assert delta(durations, channel="ch-first", stream="false") == 1
    assert delta(durations, channel="ch-second", stream="false") == 1
    assert delta(durations, channel="ch-second", stream="true") == 1
    ttft = "airouter_time_to_first_token_seconds_count"
    assert delta(ttft, channel="ch-second") == 1
    assert delta(ttft, channel="ch-first") == 0
    assert delta("airouter_time_to_first_token_seconds_bucket", channel="ch-second", le="+Inf")
    # Tokens and cost: what the usage records say.
    records = UsageRecord.objects.filter(status="success")
    totals = records.aggregate(
        input=Sum("prompt_tokens"), output=Sum("completion_tokens"), cost=Sum("cost")
    )
    assert records.count() == 3
    assert delta("airouter_tokens_total", group="pro", kind="input") == totals["input"]
    assert delta("airouter_tokens_total", group="pro", kind="cached") == 10
    assert delta("airouter_tokens_total", group="pro", kind="output") == totals["output"]
    assert delta("airouter_cost_total", group="pro") == pytest.approx(float(totals["cost"]))
    # The breaker that one failure opened (read when scraped).
    assert value(after, "airouter_channel_breaker_open", channel="ch-first") == 1
    assert value(after, "airouter_channel_breaker_open", channel="ch-second") == 0


@pytest.mark.django_db(transaction=True)
def test_only_routed_models_get_a_series(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    client = sdk(live_server, key)
    with pytest.raises(openai.APIStatusError, match="made-up-model-name-1234"):
        chat(client, model="made-up-model-name-1234")
    metrics = requests.get(f"{live_server.url}/metrics", timeout=10).text
    assert "made-up-model-name-1234" not in metrics


@pytest.mark.django_db
def test_rate_limited_counts_by_scope(client):
    from airouter import observability

    def count():
        text = client.get("/metrics").content.decode()
        samples = {
            tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "airouter_rate_limited_total"
        }
        return samples.get((("scope", "token"),), 0.0)

    start = count()
    observability.rate_limited("token")
    observability.rate_limited("token")
    assert count() == start + 2


@pytest.mark.django_db
def test_metrics_refuse_a_missing_or_wrong_bearer_when_a_token_is_set(client, settings):
    settings.METRICS_TOKEN = "metrics-secret"
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="metrics-secret").status_code == 401
    answered = client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret")
    assert answered.status_code == 200
    assert b"# TYPE airouter_requests_total counter" in answered.content


@pytest.mark.django_db
def test_metrics_are_open_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_healthz_asks_nothing_of_the_database(client, django_assert_num_queries, monkeypatch):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "Set-Cookie" not in response  # no session
    # And answers with the database gone.
    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", unreachable)
    assert client.get("/healthz").json() == {"status": "ok"}


def unreachable(self):
    raise OperationalError("connection refused")


@pytest.mark.django_db
def test_readyz_answers_ok_when_the_database_does(client, settings):
    settings.REDIS_URL = ""
    response = client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert client.head("/readyz").status_code == 200
    assert client.post("/readyz").status_code == 405


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_is_unreachable(client, settings, monkeypatch):
    settings.REDIS_URL = ""
    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", unreachable)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "unavailable"}}


@pytest.mark.django_db
def test_readyz_gives_up_on_a_database_that_hangs(client, settings, monkeypatch):
    settings.REDIS_URL = ""
    monkeypatch.setattr(health_views, "READY_TIMEOUT", 0.2)
    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", lambda self: time.sleep(0.6))
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 0.5
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "timeout"}
    time.sleep(0.5)  # let the check's thread finish before the patch goes


@pytest.mark.django_db
def test_readyz_is_503_when_redis_is_configured_but_unreachable(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "unavailable"},
    }


@pytest.mark.django_db
def test_the_probes_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/keys/").status_code == 301  # everything else still is


@pytest.mark.django_db(transaction=True)
def test_one_log_line_per_request_with_its_fields_and_never_the_key(
    live_server, fake_upstream, caplog
):
    fake_upstream.configure(prompt_tokens=20, completion_tokens=5, cached_tokens=4)
    token, key, _ = routed(fake_upstream)
    prompt = "A prompt that must never reach the log"
    with caplog.at_level(logging.INFO, logger="airouter.relay"):
        sdk(live_server, key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
        )
        assert b"[DONE]" in stream_post(live_server, key).content
    lines = [r for r in caplog.records if getattr(r, "fields", None)]
    assert len(lines) == 2
    whole, streamed = lines
    record = UsageRecord.objects.get(request_id=whole.fields["request_id"])

    text = whole.getMessage()  # the text format (the default)
    for part in ("relay ", "token=" + token.key_prefix, "group=pro", "channel=ch-a"):
        assert part in text
    assert "tokens=20+5 cached=4" in text and "attempts=1" in text and "ttft=-" in text
    assert "ttft=-" not in streamed.getMessage()

    line = json.loads(JsonFormatter().format(whole))  # LOG_FORMAT=json
    assert line["level"] == "INFO" and line["logger"] == "airouter.relay"
    assert line["request_id"] == record.request_id
    assert {k: line[k] for k in ("token_prefix", "group", "channel", "model", "status")} == {
        "token_prefix": token.key_prefix,
        "group": "pro",
        "channel": "ch-a",
        "model": "gpt-4o-mini",
        "status": "success",
    }
    assert (line["input_tokens"], line["cached_tokens"], line["output_tokens"]) == (20, 4, 5)
    assert (line["attempts"], line["stream"], line["ttft_ms"]) == (1, False, None)
    assert Decimal(line["cost"]) == record.cost
    assert line["latency_ms"] == record.latency_ms
    streamed_line = json.loads(JsonFormatter().format(streamed))
    assert streamed_line["stream"] is True and isinstance(streamed_line["ttft_ms"], int)
    for formatted in (text, JsonFormatter().format(whole), JsonFormatter().format(streamed)):
        assert key not in formatted and key[len(token.key_prefix) :] not in formatted
        assert prompt not in formatted


def test_log_format_json_makes_every_line_a_json_object():
    """The setting wires the formatter: a process started with LOG_FORMAT=json."""
    code = (
        "import logging, django; django.setup(); "
        "logging.getLogger('airouter.x').warning('two\\nlines %s', 1); "
        "import warnings; warnings.warn('a warning')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ, DJANGO_SETTINGS_MODULE="airouter.settings", LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every one is JSON
    (parsed,) = [line for line in lines if line["logger"] == "airouter.x"]
    assert (parsed["level"], parsed["logger"], parsed["message"]) == (
        "WARNING",
        "airouter.x",
        "two\nlines 1",
    )
    assert [line["logger"] for line in lines if "a warning" in line["message"]] == ["py.warnings"]


# --- gunicorn: two workers, one sum ------------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path):
    """A gunicorn instance with two workers that take one connection at a time (so two
    requests at once are served by both); yields (base URL, its metrics directory)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"  # an earlier run's: emptied at start
    stale.write_bytes(b"stale")
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        SECRET_KEY=django_settings.SECRET_KEY,
        CHANNEL_KEY_ENCRYPTION_KEYS=",".join(django_settings.CHANNEL_KEY_ENCRYPTION_KEYS),
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="1",
        GUNICORN_WORKER_CONNECTIONS="1",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        REDIS_URL="",
        DEBUG="false",
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "airouter.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass  # not listening yet
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert not stale.exists()
        yield url, metrics_dir
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.django_db(transaction=True)
def test_metrics_sum_the_requests_of_every_gunicorn_worker(two_workers, fake_upstream):
    url, metrics_dir = two_workers
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(delay=0.3)  # each worker holds one request at a time

    def ask(_):
        return requests.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=20,
        ).status_code

    def writers():  # one file per process that counted something
        return {p.name for p in metrics_dir.glob("counter_*.db")}

    sent = 0
    with ThreadPoolExecutor(2) as pool:
        # Two at a time: a busy worker leaves the next connection to the other (almost always
        # at the first pair; a few more pairs when one worker took both heads).
        while len(writers()) < 2 and sent < 20:
            assert list(pool.map(ask, range(2))) == [200, 200]
            sent += 2
    assert len(writers()) == 2, writers()
    # A scrape, whichever worker answers it, sums the counts of both.
    for _ in range(4):
        assert requests_counted(scrape(url), "ch-a") == sent
