"""Rate limits (requests and tokens per minute, concurrent requests) on tokens, users and groups.

Real parts throughout: the live server, the openai SDK, the fake upstream, the database and
Redis (each test under its own key prefix, deleted after it). A short RATE_LIMIT_WINDOW stands
in for the minute where a test waits for the window to pass.
"""

import json
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from html.parser import HTMLParser
from io import StringIO
from urllib.parse import urlsplit

import openai
import pytest
import redis
import requests
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from billing.models import UsageRecord
from billing.pricing import estimate_tokens
from groups.models import Group, User
from tests import test_instances
from tests.factories import make_token, make_user
from tests.relay_setup import chat, post, routed, sdk
from tokens import limits
from tokens.models import Token

REDIS_URL = "redis://127.0.0.1:6379/0"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
LIMIT_HEADERS = [
    f"x-ratelimit-{what}-{kind}"
    for kind in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
]

pytestmark = pytest.mark.django_db(transaction=True)  # the live server's threads see the rows

instances = test_instances.instances  # two gunicorn routers on this database, with Redis


@pytest.fixture
def shared(settings):
    """Limits counted in Redis, under a prefix of this test's own."""
    settings.REDIS_URL = REDIS_URL
    settings.RATE_LIMIT_KEY_PREFIX = prefix = f"test-limits-{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    """Each test starts with this process's counts empty and Redis taken as healthy."""
    limits.local_counts.clear()
    monkeypatch.setattr(limits, "_redis_down_until", 0.0)
    monkeypatch.setattr(limits, "_redis_failing", False)


def raw_chat(client, **kw):
    """A chat completion through the SDK, with the HTTP response (its headers)."""
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], **kw
    )


def send(live_server, key, path="/v1/chat/completions", **extra):
    return post(live_server, path, key, data=json.dumps(dict(BODY, **extra)).encode())


def tokens_held(body: dict) -> int:
    """What the relay counts when it takes a chat body sent as json.dumps(body) in: about 4
    bytes a prompt token, plus max_tokens."""
    return estimate_tokens(len(json.dumps(body).encode())) + body["max_tokens"]


def balance(user_id) -> Decimal:
    return User.objects.get(pk=user_id).balance


# --- requests per minute ---------------------------------------------------------------------


def test_rpm_on_a_token_refuses_the_request_past_the_limit(
    live_server, fake_upstream, shared, settings
):
    settings.RATE_LIMIT_WINDOW = 3  # a "minute" of 3 s: the test waits for it to pass
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, rpm=2)
    client = sdk(live_server, key)

    answers = [raw_chat(client, max_tokens=5) for _ in range(2)]
    assert [a.headers["x-ratelimit-limit-requests"] for a in answers] == ["2", "2"]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0"]
    assert answers[1].headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in answers[1].headers  # no TPM limit: no TPM headers
    spent = Decimal("100") - balance(token.owner_id)

    with pytest.raises(openai.RateLimitError) as refused:
        chat(client, max_tokens=5)
    error = refused.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert error.param is None
    assert "on requests per min (RPM): Limit 2, Used 2, Requested 1." in error.message
    assert re.search(r"Please try again in [\d.]+m?s\.", error.message)
    headers = error.response.headers
    assert 1 <= int(headers["retry-after"]) <= 2  # one request drains in 3 s / 2
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-request-id"]

    # Not forwarded, not held, not recorded.
    assert len(fake_upstream.requests) == 2
    assert UsageRecord.objects.count() == 2
    assert Decimal("100") - balance(token.owner_id) == spent

    time.sleep(3.1)  # the whole window: the bucket has drained
    again = [raw_chat(client, max_tokens=5) for _ in range(2)]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in again] == ["1", "0"]
    assert len(fake_upstream.requests) == 4


def test_an_anthropic_client_gets_its_own_rate_limit_envelope(live_server, fake_upstream, shared):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, rpm=1)
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    headers = {"anthropic-version": "2023-06-01"}
    assert post(live_server, "/v1/messages", key, json=body, headers=headers).status_code == 200
    refused = post(live_server, "/v1/messages", key, json=body, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "Limit 1, Used 1" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


# --- tokens per minute -----------------------------------------------------------------------


def test_tpm_counts_the_hold_then_the_real_usage(live_server, fake_upstream, shared, settings):
    settings.RATE_LIMIT_WINDOW = 3600  # drains 0.3 token/s at 1,000 TPM: the figures hold still
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, tpm=1000)
    fake_upstream.configure(prompt_tokens=7, completion_tokens=5)  # 12 tokens really used
    body = dict(BODY, max_tokens=100)
    held = tokens_held(body)

    first = send(live_server, key, max_tokens=100)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) in (1000 - held, 1000 - held - 1)
    assert "x-ratelimit-limit-requests" not in first.headers

    # The first one settled at 12 tokens: the second counts 12 + its own hold.
    second = send(live_server, key, max_tokens=100)
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    assert 1000 - 12 - held - 1 <= remaining <= 1000 - 12 - held

    # A stream is corrected the same way (its usage comes at the end of the stream).
    streamed = send(live_server, key, max_tokens=100, stream=True)
    assert streamed.status_code == 200 and b"[DONE]" in streamed.content
    assert streamed.headers["x-ratelimit-remaining-tokens"]
    third = send(live_server, key, max_tokens=100)
    remaining = int(third.headers["x-ratelimit-remaining-tokens"])
    assert 1000 - 36 - held - 2 <= remaining <= 1000 - 36 - held


def test_a_hold_over_the_tokens_left_is_refused_before_anything_is_sent(
    live_server, fake_upstream, shared, settings
):
    settings.RATE_LIMIT_WINDOW = 3600
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, tpm=1000)
    fake_upstream.configure(completion_tokens="max_tokens")  # every token held is used
    assert send(live_server, key, max_tokens=600).status_code == 200
    forwarded = len(fake_upstream.requests)

    refused = send(live_server, key, max_tokens=600)  # about 380 left: 600 + the prompt won't fit
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert "on tokens per min (TPM): Limit 1000, Used " in error["message"]
    assert int(refused.headers["retry-after"]) > 60
    assert len(fake_upstream.requests) == forwarded
    assert UsageRecord.objects.count() == 1

    too_large = send(live_server, key, max_tokens=5000)  # never fits in 1,000 a minute
    assert too_large.status_code == 429
    assert too_large.json()["error"]["message"].startswith("Request too large for gpt-4o-mini")
    assert too_large.headers["x-should-retry"] == "false"
    assert "retry-after" not in too_large.headers
    assert send(live_server, key, max_tokens=100).status_code == 200  # a smaller one fits


# --- concurrent requests ---------------------------------------------------------------------


def start_stream(live_server, key, opened: threading.Event):
    """A streamed chat request read slowly to its end, on a thread; returns the thread and a
    list that gets its status code and body."""
    result = []

    def run():
        with requests.post(
            f"{live_server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json=dict(BODY, stream=True, max_tokens=50),
            stream=True,
            timeout=20,
        ) as response:
            opened.set()
            result.append(response.status_code)
            result.append(b"".join(response.iter_content(None)))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_max_concurrency_holds_a_slot_until_the_stream_ends(live_server, fake_upstream, shared):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, max_concurrency=2)
    fake_upstream.configure(chunks=["tick "] * 10, chunk_interval=0.1)  # a stream of ~1 s
    streams = []
    for _ in range(2):
        opened = threading.Event()
        streams.append(start_stream(live_server, key, opened))
        assert opened.wait(5)

    refused = send(live_server, key, max_tokens=5)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "on concurrent requests: Limit 2, Used 2, Requested 1." in error["message"]
    assert refused.headers["retry-after"] == "1"

    for thread, result in streams:
        thread.join(10)
        assert result[0] == 200 and b"[DONE]" in result[1]
    assert send(live_server, key, max_tokens=5).status_code == 200  # both slots are back
    assert UsageRecord.objects.filter(status="success").count() == 3


def test_a_client_hanging_up_mid_stream_gives_its_slot_back(live_server, fake_upstream, shared):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, max_concurrency=1)
    fake_upstream.configure(chunks=["tok "] * 40, chunk_interval=0.05)
    url = urlsplit(live_server.url)
    body = json.dumps(dict(BODY, stream=True)).encode()
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"tok" not in received:
            received += sock.recv(4096)
        assert send(live_server, key, max_tokens=5).status_code == 429  # its one slot is taken
    # ...hung up after the first events: the relay notices at its next write, and settles.
    deadline = time.monotonic() + 5
    while (status := send(live_server, key, max_tokens=5).status_code) == 429:
        assert time.monotonic() < deadline, "the slot was never given back"
        time.sleep(0.1)
    assert status == 200
    assert UsageRecord.objects.filter(status="client_disconnected").count() == 1


def test_a_crashed_process_cannot_hold_a_slot_past_its_lease(fake_upstream, shared, settings):
    settings.RATE_LIMIT_LEASE_SECONDS = 0.3
    token, _, _ = routed(fake_upstream)
    token.max_concurrency = 1
    rules = limits.of(token)
    rules.take(10, "gpt-4o-mini", "never-settled")  # its process dies: no settle ever comes
    with pytest.raises(limits.RateLimited):
        rules.take(10, "gpt-4o-mini", "next")
    time.sleep(0.4)
    rules.take(10, "gpt-4o-mini", "next").settle(10)


# --- where limits come from ------------------------------------------------------------------


def test_a_group_limit_is_each_users_default_and_their_own_overrides_it(
    live_server, fake_upstream, shared
):
    token, _, _ = routed(fake_upstream)
    group = Group.objects.get(name="pro")
    group.rpm = 1
    group.save()
    ann = make_user("ann", group=group)
    cat = make_user("cat", group=group, rpm=3)
    _, ann_key = make_token(ann)
    _, cat_key = make_token(cat)
    _, first_key = make_token(token.owner)  # the group's first user

    assert send(live_server, ann_key, max_tokens=5).status_code == 200
    refused = send(live_server, ann_key, max_tokens=5)
    assert refused.status_code == 429
    assert "by user ann on requests per min (RPM): Limit 1" in refused.json()["error"]["message"]
    # The default counts per user: ann's requests leave the others theirs.
    assert send(live_server, first_key, max_tokens=5).status_code == 200
    # cat's own limit overrides the group's.
    assert [send(live_server, cat_key, max_tokens=5).status_code for _ in range(4)] == [
        200,
        200,
        200,
        429,
    ]


def test_a_key_counts_against_its_own_limit_and_its_owners(live_server, fake_upstream, shared):
    token, _, _ = routed(fake_upstream)
    User.objects.filter(pk=token.owner_id).update(rpm=3)
    _, narrow = make_token(token.owner, rpm=1)
    _, wide = make_token(token.owner)
    assert send(live_server, narrow, max_tokens=5).status_code == 200
    refused = send(live_server, narrow, max_tokens=5)
    assert "by API key sk-" in refused.json()["error"]["message"]
    # The key's own limit is the tighter: its headers say so.
    assert refused.headers["x-ratelimit-limit-requests"] == "1"
    ok = [send(live_server, wide, max_tokens=5) for _ in range(2)]
    assert [r.status_code for r in ok] == [200, 200]  # the user's 3: one used by `narrow`
    assert ok[-1].headers["x-ratelimit-remaining-requests"] == "0"
    assert send(live_server, wide, max_tokens=5).status_code == 429


# --- the headers on every answer -------------------------------------------------------------


def test_every_answer_of_a_limited_key_has_the_headers(
    live_server, fake_upstream, shared, settings
):
    settings.RATE_LIMIT_WINDOW = 3600  # the counts hold still
    token, _, _ = routed(fake_upstream, balance="0.1", input_price=0, output_price=1000)
    fake_upstream.configure(completion_tokens=1)  # 0.001 a request; max_tokens=1000 holds 1.0
    _, key = make_token(
        token.owner, rpm=100, tpm=100_000, max_concurrency=1, allowed_models="gpt-4o-mini"
    )

    streamed = send(live_server, key, max_tokens=1, stream=True)
    assert streamed.status_code == 200
    assert all(streamed.headers[h] for h in LIMIT_HEADERS)

    # Refused before the limits were asked: the counters as they stand.
    not_allowed = send(live_server, key, model="gpt-4o", max_tokens=1)
    assert not_allowed.status_code == 403
    assert not_allowed.headers["x-ratelimit-remaining-requests"] == "99"

    # Over the balance after the limits took their share: refused, and the slot is back.
    broke = send(live_server, key, max_tokens=1000)
    assert broke.status_code == 429
    assert broke.json()["error"]["code"] == "insufficient_quota"
    assert broke.headers["x-ratelimit-remaining-requests"] == "98"
    assert send(live_server, key, max_tokens=1).status_code == 200  # concurrency 1: free again

    fake_upstream.configure(status=500, completion_tokens=1)
    failed = send(live_server, key, max_tokens=1)
    assert failed.status_code >= 500 and failed.json()["error"]["code"] == "upstream_error"
    assert failed.headers["x-ratelimit-remaining-requests"] == "96"
    assert all(failed.headers[h] for h in LIMIT_HEADERS)


def test_keys_without_limits_get_no_headers(live_server, fake_upstream, shared):
    _, key, _ = routed(fake_upstream)
    answer = send(live_server, key, max_tokens=5)
    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.lower().startswith("x-ratelimit")]


def test_count_tokens_counts_as_a_request_of_no_tokens(live_server, fake_upstream, shared):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, rpm=2, tpm=1000)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    counted = post(live_server, "/v1/messages/count_tokens", key, json=body)
    assert counted.status_code == 200
    assert counted.headers["x-ratelimit-remaining-requests"] == "1"
    assert counted.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert post(live_server, "/v1/messages/count_tokens", key, json=body).status_code == 200
    refused = post(live_server, "/v1/messages/count_tokens", key, json=body)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_a_limited_key_costs_no_more_queries(
    client, fake_upstream, shared, django_assert_max_num_queries
):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, rpm=100, tpm=100_000, max_concurrency=5)
    Group.objects.filter(name="pro").update(rpm=50)

    def ask(**extra):
        response = client.post(
            "/v1/chat/completions",
            json.dumps(dict(BODY, max_tokens=5, **extra)),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        if response.streaming:
            b"".join(response.streaming_content)
        assert response.status_code == 200
        assert response["x-ratelimit-limit-requests"] == "50"

    # With Redis, saving the channel published "routing changed" to this process's listener:
    # let it arrive before warming up, or the table reloads inside a measured request.
    time.sleep(0.5)
    ask()  # warm up: the routing table, the channel's first latency note
    for stream in (False, True):
        with django_assert_max_num_queries(4):
            ask(stream=stream)


# --- without Redis ---------------------------------------------------------------------------


def test_without_redis_each_process_counts_on_its_own(live_server, fake_upstream, settings):
    settings.REDIS_URL = ""
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, rpm=2)
    assert [send(live_server, key, max_tokens=5).status_code for _ in range(3)] == [200, 200, 429]


def test_a_failing_redis_never_fails_a_request(live_server, fake_upstream, settings, caplog):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, rpm=2, max_concurrency=1)
    with caplog.at_level("WARNING", logger="tokens.limits"):
        codes = [send(live_server, key, max_tokens=5).status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # counted in this process
    failures = [r for r in caplog.records if r.name == "tokens.limits"]
    assert len(failures) == 1  # logged once


# --- where operators and users set them ------------------------------------------------------


def test_the_commands_take_the_limit_flags():
    out = StringIO()
    call_command("create_group", "pro", "--rpm", "60", "--tpm", "100000", stdout=out)
    assert "Default limits per user: 60 RPM, 100,000 TPM." in out.getvalue()
    call_command("create_user", "carol", "--group", "pro", "--max-concurrency", "2", stdout=out)
    call_command("create_user", "carol", "--rpm", "10", stdout=out)
    assert "Updated user 'carol': rpm." in out.getvalue()
    key = StringIO()
    call_command(
        "create_token", "carol", "--rpm", "5", "--tpm", "1000", "--max-concurrency", "1",
        stdout=key, stderr=StringIO(),
    )  # fmt: skip
    token = Token.objects.get(owner__username="carol")
    assert (token.rpm, token.tpm, token.max_concurrency) == (5, 1000, 1)
    assert key.getvalue().strip().startswith("sk-")
    carol = User.objects.get(username="carol")
    assert carol.rate_limits() == {"rpm": 10, "tpm": 100000, "max_concurrency": 2}

    call_command("create_user", "carol", "--rpm", "none", stdout=out)  # back to the group's
    call_command("create_group", "pro", "--tpm", "none", stdout=out)
    carol.refresh_from_db()
    assert carol.rpm is None
    assert carol.rate_limits() == {"rpm": 60, "tpm": None, "max_concurrency": 2}

    for bad in ("0", "-1", "1.5", "lots"):
        with pytest.raises(CommandError, match="--rpm: .* at least 1"):
            call_command("create_user", "carol", "--rpm", bad, stdout=out)
    assert User.objects.get(username="carol").rpm is None


def test_the_keys_page_sets_limits_on_a_new_key(pro_group):
    alice = make_user("alice", group=pro_group)
    client = Client()
    client.force_login(alice)
    page = client.get("/keys/").content.decode()
    for field in ("rpm", "tpm", "max_concurrency"):
        assert f'name="{field}"' in page
    once = re.search(r'name="form_once" value="([^"]+)"', page).group(1)
    form = {"name": "ci", "group": "pro", "spend_limit": "", "expires_at": "", "allowed_models": ""}

    refused = client.post("/keys/", dict(form, rpm="0", tpm="", max_concurrency="", form_once=once))
    assert refused.status_code == 200
    assert not Token.objects.exists()

    created = client.post(
        "/keys/", dict(form, rpm="30", tpm="20000", max_concurrency="2", form_once=once)
    )
    assert created.status_code == 200 and "sk-" in created.content.decode()
    token = Token.objects.get(owner=alice)
    assert (token.rpm, token.tpm, token.max_concurrency) == (30, 20000, 2)
    assert "30 RPM, 20,000 TPM, 2 at once" in client.get("/keys/").content.decode()


class FormFields(HTMLParser):
    """The fields a page's form would post as they stand (inputs, selects, textareas)."""

    def __init__(self):
        super().__init__()
        self.data, self._select, self._textarea = {}, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.data[name] = a.get("value", "on")
            else:
                self.data[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.data[name] = [] if "multiple" in a else ""
        elif tag == "option" and self._select and "selected" in a:
            if isinstance(self.data[self._select], list):
                self.data[self._select].append(a.get("value", ""))
            else:
                self.data[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data.strip("\n")


def admin_change(admin_client, url, **changes):
    page = admin_client.get(url)
    html = page.content.decode()
    assert re.search(r"<h2[^>]*>\s*Limits\s*</h2>", html), "no Limits fieldset"
    for field in ("rpm", "tpm", "max_concurrency"):
        assert f'name="{field}"' in html
    parser = FormFields()
    parser.feed(html)
    response = admin_client.post(url, {**parser.data, **changes})
    errors = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.content.decode())
    assert response.status_code == 302, errors


def test_the_admin_shows_and_saves_limits(admin_client, fake_upstream):
    token, _, _ = routed(fake_upstream)
    user, group = token.owner, Group.objects.get(name="pro")
    admin_change(
        admin_client,
        reverse("admin:tokens_token_change", args=[token.pk]),
        rpm="10",
        tpm="5000",
        max_concurrency="",
    )
    admin_change(
        admin_client, reverse("admin:groups_user_change", args=[user.pk]), max_concurrency="3"
    )
    admin_change(admin_client, reverse("admin:groups_group_change", args=[group.pk]), rpm="60")
    token.refresh_from_db()
    user.refresh_from_db()
    group.refresh_from_db()
    assert (token.rpm, token.tpm, token.max_concurrency) == (10, 5000, None)
    assert (user.rpm, user.max_concurrency) == (None, 3)
    assert group.rpm == 60
    assert (
        "10 RPM, 5,000 TPM"
        in admin_client.get(reverse("admin:tokens_token_changelist")).content.decode()
    )
    assert "60 RPM" in admin_client.get(reverse("admin:groups_group_changelist")).content.decode()

    page = admin_client.post(
        reverse("admin:tokens_token_change", args=[token.pk]), {"rpm": "0"}
    ).content.decode()
    assert "Ensure this value is greater than or equal to 1." in page


# --- exact across instances ------------------------------------------------------------------


def forget(*scopes):
    """Delete the production-prefixed counters of these scopes ("t:<id>", "u:<id>"): the
    instances count under the default prefix, and test databases reuse ids."""
    client = redis.Redis.from_url(REDIS_URL)
    for scope in scopes:
        client.delete(limits.KEY_PREFIX + scope, f"{limits.KEY_PREFIX}{scope}:leases")


@pytest.mark.parametrize("limit", ["rpm", "max_concurrency"])
def test_a_limit_is_held_exactly_across_two_instances(instances, fake_upstream, limit):
    n = 5
    token, _, _ = routed(fake_upstream)
    limited, key = make_token(token.owner, **{limit: n})
    scopes = (f"t:{limited.pk}", f"u:{token.owner_id}")
    forget(*scopes)
    # Every request in flight at once for a second: the concurrency limit is tested too.
    fake_upstream.configure(delay=1.0, completion_tokens=1)
    try:
        with ThreadPoolExecutor(3 * n) as pool:
            answers = list(
                pool.map(lambda i: test_instances.ask(instances[i % 2], key), range(3 * n))
            )
    finally:
        forget(*scopes)
    codes = [a.status_code for a in answers]
    print(f"\n{limit} {n} across 2 instances: {codes.count(200)} of {3 * n} passed")
    assert codes.count(200) == n
    assert codes.count(429) == 2 * n
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {
        "rate_limit_exceeded"
    }
    assert UsageRecord.objects.count() == n
    assert len(fake_upstream.requests) == n
