"""Every error row of the relay: the OpenAI envelope, its status and code, the SDK's class."""

import json
import time
from datetime import timedelta
from decimal import Decimal

import openai
import pytest
import requests
from django.utils.timezone import now

from billing.models import UsageRecord
from channels_app.models import Channel
from groups.models import Group
from tests.factories import make_channel, make_group, make_token, make_user
from tests.relay_setup import chat, post, routed, sdk, stream_post
from tokens.issuing import revoke
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)


def envelope_of(exc) -> dict:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert exc.response.headers["x-request-id"]
    return body["error"]


def test_no_key_is_401_invalid_api_key(live_server, fake_upstream):
    routed(fake_upstream)
    response = post(live_server, "/v1/chat/completions", json={"model": "gpt-4o-mini"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-request-id"]


def test_unknown_key_is_401_with_the_key_masked(live_server, fake_upstream):
    routed(fake_upstream)
    bad = "sk-" + "x" * 44 + "WXYZ"
    with pytest.raises(openai.AuthenticationError) as excinfo:
        chat(sdk(live_server, bad))
    error = envelope_of(excinfo.value)
    assert error["code"] == "invalid_api_key"
    assert bad not in error["message"] and "sk-xxxx...WXYZ" in error["message"]


def test_revoked_key_is_401(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream)
    revoke(Token.objects.filter(pk=token.pk))
    with pytest.raises(openai.AuthenticationError) as excinfo:
        chat(sdk(live_server, key))
    assert envelope_of(excinfo.value)["code"] == "invalid_api_key"


def test_expired_token_is_401_token_expired(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream)
    Token.objects.filter(pk=token.pk).update(expires_at=now() - timedelta(minutes=1))
    with pytest.raises(openai.AuthenticationError) as excinfo:
        chat(sdk(live_server, key))
    assert envelope_of(excinfo.value)["code"] == "token_expired"


def test_client_ip_not_allowed_is_403(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, allowed_ips="10.0.0.0/8")
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        chat(sdk(live_server, key))
    assert envelope_of(excinfo.value)["code"] == "ip_not_allowed"
    _, loopback_key = make_token(token.owner, allowed_ips="127.0.0.1")
    assert chat(sdk(live_server, loopback_key)).choices


def test_model_not_in_the_allowlist_is_403(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, allowed_models="gpt-4o")
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        chat(sdk(live_server, key))
    error = envelope_of(excinfo.value)
    assert (error["code"], error["param"]) == ("model_not_allowed", "model")
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"not json", None),
        (b"[1, 2]", None),
        (b'{"a": ' * 100_000, None),  # nested deeper than Python's stack
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "max_tokens": "9"}',
            "max_tokens",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_field(live_server, fake_upstream, body, param):
    _, key, _ = routed(fake_upstream)
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert fake_upstream.requests == []


def test_sdk_raises_bad_request_for_a_missing_field(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    with pytest.raises(openai.BadRequestError) as excinfo:
        sdk(live_server, key).completions.create(model="gpt-4o-mini", prompt=None)
    assert envelope_of(excinfo.value)["param"] == "prompt"


def test_body_over_the_limit_is_413(live_server, fake_upstream, settings):
    settings.RELAY_MAX_BODY_BYTES = 1000
    _, key, _ = routed(fake_upstream)
    with pytest.raises(openai.APIStatusError) as excinfo:
        sdk(live_server, key).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 2000}]
        )
    assert excinfo.value.status_code == 413
    assert envelope_of(excinfo.value)["code"] == "request_too_large"


def test_model_no_channel_serves_is_404_naming_group_and_model(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    with pytest.raises(openai.NotFoundError) as excinfo:
        chat(sdk(live_server, key), model="gpt-5")
    error = envelope_of(excinfo.value)
    assert error["code"] == "model_not_found"
    assert "'pro'" in error["message"] and "'gpt-5'" in error["message"]
    assert "group assignments" in error["message"]
    assert UsageRecord.objects.count() == 0


def test_channels_exist_but_none_usable_is_503_with_retry_after(live_server, fake_upstream):
    _, key, channel = routed(fake_upstream)
    channel.status = Channel.Status.DISABLED
    channel.save()
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 503
    assert envelope_of(excinfo.value)["code"] == "no_available_channel"
    assert excinfo.value.response.headers["retry-after"]


def test_insufficient_balance_is_429_and_nothing_is_sent(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, balance="0.000001")
    with pytest.raises(openai.RateLimitError) as excinfo:
        chat(sdk(live_server, key, max_retries=2))  # x-should-retry: false stops the SDK
    error = envelope_of(excinfo.value)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert excinfo.value.response.headers["x-should-retry"] == "false"
    assert fake_upstream.requests == []


def test_token_spend_limit_reached_is_429(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, spend_limit=Decimal("0.0001"))
    with pytest.raises(openai.RateLimitError) as excinfo:
        chat(sdk(live_server, key))  # holds 4096 completion tokens at 2/1M: 0.008
    assert envelope_of(excinfo.value)["code"] == "insufficient_quota"
    assert "spend limit" in envelope_of(excinfo.value)["message"]


@pytest.mark.parametrize(
    ("status", "sdk_error"),
    [
        (500, openai.InternalServerError),
        (429, openai.RateLimitError),
        (503, openai.InternalServerError),
    ],
)
def test_every_attempt_failing_returns_the_last_upstream_status(
    live_server, fake_upstream, status, sdk_error
):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(status=status, error_message="overloaded, sorry")
    with pytest.raises(sdk_error) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == status
    error = envelope_of(excinfo.value)
    assert error["code"] == "upstream_error"
    assert "overloaded, sorry" in error["message"]
    record = UsageRecord.objects.get()
    assert (record.status, record.cost, record.status_code) == ("upstream_error", 0, status)


def test_an_unresolvable_upstream_is_502_without_its_name(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    Channel.objects.update(base_url="http://llm-secret-host.invalid/v1")
    from channels_app import routing_table

    routing_table.invalidate()
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    message = envelope_of(excinfo.value)["message"]
    assert "could not resolve the upstream's host name" in message
    assert "llm-secret-host" not in message


def test_connection_failure_is_502(live_server, fake_upstream):
    # Port 9 on loopback: nothing listens.
    _, key, _ = routed(fake_upstream)
    Channel.objects.update(base_url="http://127.0.0.1:9/v1")
    from channels_app import routing_table

    routing_table.invalidate()
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 502
    error = envelope_of(excinfo.value)
    assert error["code"] == "upstream_error"
    assert "connection refused" in error["message"].lower()
    # Where the upstream lives is the operator's business, not the API client's.
    assert "127.0.0.1" not in error["message"] and ":9" not in error["message"]
    assert "127.0.0.1" not in Channel.objects.get().last_error  # nor stored with the host


def test_upstream_timeout_is_504(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, read_timeout=0.2)
    fake_upstream.configure(delay=1)
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 504
    assert "0.2s" in envelope_of(excinfo.value)["message"]


def test_upstream_client_error_is_passed_back_as_said(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(status=400, error_message="temperature must be <= 2")
    with pytest.raises(openai.BadRequestError) as excinfo:
        chat(sdk(live_server, key), temperature=1)
    assert "temperature must be <= 2" in str(excinfo.value)
    assert len(fake_upstream.requests) == 1  # not retried


def test_unknown_v1_path_is_404_envelope(live_server):
    response = requests.get(f"{live_server.url}/v1/nothing/here", timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"]
    response = requests.post(f"{live_server.url}/v1/chat/completions/", timeout=5)
    assert response.status_code == 404 and "error" in response.json()


def test_wrong_method_is_405_envelope(live_server):
    response = requests.get(f"{live_server.url}/v1/chat/completions", timeout=5)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["x-request-id"]
    response = requests.delete(f"{live_server.url}/v1/models", timeout=5)
    assert response.status_code == 405


def test_mid_stream_failure_ends_with_an_error_event_and_done(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(drop_after=2)
    response = stream_post(live_server, key)
    assert response.status_code == 200
    events = [e for e in response.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert b'"error"' in events[-2] and b"upstream_error" in events[-2]
    assert len(events) == 4  # two content events, the error, [DONE]

    with pytest.raises(openai.APIError, match="stream started"):
        list(chat(sdk(live_server, key), stream=True))
    record = UsageRecord.objects.filter(status="stream_error").first()
    assert record is not None and record.estimated and record.cost > 0


def test_a_stream_the_upstream_ends_without_done_is_an_error_not_a_success(
    live_server, fake_upstream
):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(done=False, usage=False)
    events = [e for e in stream_post(live_server, key).content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert b"ended the stream before [DONE]" in events[-2]
    record = UsageRecord.objects.get()
    assert record.status == "stream_error" and record.estimated and record.cost > 0


@pytest.mark.parametrize(
    "ending", [{"done": b"data:[DONE]\n\n"}, {"done": b"data: [DONE]"}, {"drop_after_done": True}]
)
def test_a_stream_that_ended_with_done_is_a_success_however_it_closes(
    live_server, fake_upstream, ending
):
    _, key, channel = routed(fake_upstream)
    fake_upstream.configure(**ending)
    content = stream_post(live_server, key).content
    assert b'"error"' not in content and b"[DONE]" in content
    record = UsageRecord.objects.get()
    assert record.status == "success" and record.error == ""
    channel.refresh_from_db()
    assert channel.last_error == ""


def test_a_stalled_stream_times_out_in_band(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, read_timeout=0.3)
    fake_upstream.configure(stall_after=1, stall=2)
    with pytest.raises(openai.APIError, match="sent nothing for 0.3s"):
        list(chat(sdk(live_server, key), stream=True))


def test_a_group_with_no_channel_at_all_is_404(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream)
    empty = make_group("empty")
    _, key = make_token(token.owner, group_name="empty")
    assert empty.channels.count() == 0
    with pytest.raises(openai.NotFoundError):
        chat(sdk(live_server, key))
    make_channel("ch-off", groups=[empty], status=Channel.Status.AUTO_DISABLED)
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 503


def test_a_request_for_n_choices_holds_n_completions(live_server, fake_upstream):
    # A hold of 1000 completion tokens at 2/1M is 0.002: the balance covers 4, not 8.
    _, key, _ = routed(fake_upstream, balance="0.01")
    client = sdk(live_server, key)
    assert chat(client, max_tokens=1000, n=4).choices
    with pytest.raises(openai.RateLimitError) as excinfo:
        chat(client, max_tokens=1000, n=8)
    assert envelope_of(excinfo.value)["code"] == "insufficient_quota"
    with pytest.raises(openai.RateLimitError):
        client.completions.create(model="gpt-4o-mini", prompt="x", max_tokens=1000, best_of=8)
    assert len(fake_upstream.requests) == 1


def test_n_must_be_a_positive_integer(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    with pytest.raises(openai.BadRequestError) as excinfo:
        chat(sdk(live_server, key), n=0)
    assert envelope_of(excinfo.value)["param"] == "n"
    assert fake_upstream.requests == []


@pytest.fixture
def pinned(fake_upstream):
    """A token pinned to group `pro` (selectable), whose owner's own group is `basic`."""
    token, _, _ = routed(fake_upstream)
    basic = make_group("basic")
    token.owner.group = basic
    token.owner.save()
    _, key = make_token(token.owner, group_name="pro")
    return token.owner, key


def group_refusal(live_server, key) -> dict:
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        chat(sdk(live_server, key))
    error = envelope_of(excinfo.value)
    assert error["code"] == "group_not_allowed"
    return error


def test_a_token_pinned_to_a_group_closed_to_its_owner_is_403(live_server, fake_upstream, pinned):
    owner, key = pinned
    assert chat(sdk(live_server, key)).choices  # pro is open to everyone
    make_group("pro", user_selectable=False)
    error = group_refusal(live_server, key)
    assert "'pro'" in error["message"] and "no longer available" in error["message"]
    assert "Edit the token" in error["message"]
    assert sdk(live_server, key).models.list().data == []

    basic = owner.group
    owner.group = Group.objects.get(name="pro")  # pro is their own group again
    owner.save()
    assert chat(sdk(live_server, key)).choices
    owner.group = basic  # moved away: pro is closed to them once more
    owner.save()
    group_refusal(live_server, key)
    assert len(fake_upstream.requests) == 2


def test_a_token_pinned_to_an_inactive_group_is_403(live_server, fake_upstream, pinned):
    _, key = pinned
    make_group("pro", is_active=False)
    error = group_refusal(live_server, key)
    assert "'pro'" in error["message"] and "inactive" in error["message"]
    assert "(none)" not in error["message"]
    assert fake_upstream.requests == []


def test_an_auto_token_without_a_usable_group_says_so(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream)  # pro has no auto priority
    _, key = make_token(token.owner, group_name="auto")
    with pytest.raises(openai.NotFoundError) as excinfo:
        chat(sdk(live_server, key))
    error = envelope_of(excinfo.value)
    assert error["code"] == "model_not_found"
    assert "(none)" not in error["message"]
    assert "auto" in error["message"] and "auto priority" in error["message"]


@pytest.fixture
def behind_proxy(fake_upstream, settings):
    """The relay behind a proxy on 127.0.0.1 (where the live server sees requests from)."""
    settings.RELAY_TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner, allowed_ips="203.0.113.0/24")
    return key


def status_from(live_server, key, forwarded_for=None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    if response.status_code == 403:
        assert response.json()["error"]["code"] == "ip_not_allowed"
    return response.status_code


def test_behind_a_trusted_proxy_the_client_ip_comes_from_x_forwarded_for(live_server, behind_proxy):
    key = behind_proxy
    assert status_from(live_server, key, "203.0.113.5") == 200
    assert status_from(live_server, key, "198.51.100.1") == 403
    assert status_from(live_server, key) == 403  # the proxy itself is not the client
    # Walk from the right past trusted proxies; what a client wrote itself on the left is
    # not believed.
    assert status_from(live_server, key, "198.51.100.1, 203.0.113.5, 10.1.1.1") == 200
    assert status_from(live_server, key, "203.0.113.5, 198.51.100.1") == 403
    # IPv4-mapped IPv6 is the IPv4 address.
    assert status_from(live_server, key, "::ffff:203.0.113.5") == 200


def test_without_trusted_proxies_x_forwarded_for_is_ignored(live_server, behind_proxy, settings):
    settings.RELAY_TRUSTED_PROXIES = []
    assert status_from(live_server, behind_proxy, "203.0.113.5") == 403
    Token.objects.filter(allowed_ips="203.0.113.0/24").update(allowed_ips="127.0.0.0/8")
    assert status_from(live_server, behind_proxy, "203.0.113.5") == 200


def test_ipv4_mapped_addresses_match_ipv4_allowlists(db):
    token, _ = make_token(make_user("sam"))
    token.allowed_ips = "10.0.0.0/8"
    assert token.ip_allowed("::ffff:10.1.2.3") and token.ip_allowed("10.1.2.3")
    assert not token.ip_allowed("::ffff:11.1.2.3")


def test_a_malformed_ip_allowlist_refuses_cleanly(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream)
    _, key = make_token(token.owner)
    Token.objects.filter(key_prefix=key[:11]).update(allowed_ips="10.0.0.0/8, not-an-ip")
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        chat(sdk(live_server, key))
    error = envelope_of(excinfo.value)
    assert error["code"] == "ip_not_allowed" and "not-an-ip" in error["message"]
    assert fake_upstream.requests == []


def test_an_upstream_client_error_never_shows_the_channel_key(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(status=400, error_message="Bad request for key sk-upstream-secret")
    with pytest.raises(openai.BadRequestError) as excinfo:
        chat(sdk(live_server, key))
    assert "sk-upstream-secret" not in excinfo.value.response.text
    assert "Bad request for key [channel key]" in excinfo.value.response.text
    assert "sk-upstream-secret" not in UsageRecord.objects.get().error


def test_an_upstream_408_is_a_timeout_and_fails_over(live_server, fake_upstream_factory):
    group = make_group("pro")
    slow, good = fake_upstream_factory(), fake_upstream_factory()
    slow.configure(status=408, error_message="request timed out")
    make_channel("slow", groups=[group], base_url=slow.url, priority=2)
    _, key = make_token(make_user("rex", group=group))
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 504
    assert "request timed out" in envelope_of(excinfo.value)["message"]
    make_channel("good", groups=[group], base_url=good.url, priority=1)
    assert chat(sdk(live_server, key)).choices
    assert len(slow.requests) == 2


def test_v1_itself_is_the_404_envelope(live_server):
    for path in ("/v1", "/v1/"):
        response = requests.get(f"{live_server.url}{path}", allow_redirects=False, timeout=5)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "unknown_url"
        assert response.headers["x-request-id"]


def test_options_answers_the_allowed_methods_without_a_key(live_server):
    response = requests.options(f"{live_server.url}/v1/chat/completions", timeout=5)
    assert response.status_code == 204
    assert response.headers["allow"] == "POST, OPTIONS"
    assert response.headers["x-request-id"]
    response = requests.options(f"{live_server.url}/v1/models", timeout=5)
    assert (response.status_code, response.headers["allow"]) == (204, "GET, HEAD, OPTIONS")


def test_a_failure_inside_the_stream_ends_it_in_band(live_server, fake_upstream, monkeypatch):
    """A bug anywhere after the first byte (here: the upstream library raising something
    unexpected mid-stream, at the one seam tests may stub) still ends the stream properly."""
    from channels_app import upstream

    real = upstream.read_chunk
    reads = []

    def read_chunk(response, read_timeout):
        reads.append(1)
        if len(reads) == 2:
            raise RuntimeError("a bug with a secret inside")
        return real(response, read_timeout)

    monkeypatch.setattr(upstream, "read_chunk", read_chunk)
    _, key, _ = routed(fake_upstream)
    response = stream_post(live_server, key)
    events = [e for e in response.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][len(b"data: ") :])["error"]
    assert error["code"] == "server_error" and "secret" not in error["message"]
    record = UsageRecord.objects.get()
    assert record.status == "stream_error" and record.estimated


def test_an_exception_escaping_a_view_is_a_500_envelope(live_server, fake_upstream):
    _, key, channel = routed(fake_upstream)
    # A row written around the admin's validation: the routing table cannot be built.
    Channel.objects.filter(pk=channel.pk).update(model_map=["not", "a", "map"])
    from channels_app import routing_table

    routing_table.invalidate()
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 500
    error = envelope_of(excinfo.value)
    assert (error["type"], error["code"]) == ("server_error", "server_error")
    assert "dictionary" not in error["message"]  # no internals


def test_a_drip_feeding_upstream_is_cut_at_the_channels_total_timeout(
    live_server, fake_upstream_factory
):
    slow, good = fake_upstream_factory(), fake_upstream_factory()
    _, key, first = routed(slow, priority=10, total_timeout=1, read_timeout=5)
    slow.configure(drip=0.05)  # ~250 bytes: 12 s, a byte every 50 ms
    make_channel("good", groups=[first.groups.get()], base_url=good.url)
    started = time.monotonic()
    completion = chat(sdk(live_server, key))
    assert time.monotonic() - started < 4
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    record = UsageRecord.objects.get()
    assert (record.attempts, record.channel.name) == (2, "good")
    assert "took longer than 1s" in Channel.objects.get(name="ch-a").last_error


def test_an_answer_over_the_size_limit_is_a_channel_failure(live_server, fake_upstream, settings):
    settings.RELAY_MAX_RESPONSE_BYTES = 1000
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(body=b'{"choices": [], "pad": "' + b"x" * 5000 + b'"}')
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 502
    assert "larger than 1000 bytes" in response.json()["error"]["message"]
    assert UsageRecord.objects.get().cost == 0


def test_a_stream_past_its_maximum_duration_ends_in_band(live_server, fake_upstream, settings):
    settings.RELAY_MAX_STREAM_SECONDS = 0.5
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(chunks=["tick "] * 20, chunk_interval=0.1)
    response = stream_post(live_server, key)
    assert b"the stream ran longer than 0.5s" in response.content
    assert response.content.endswith(b"data: [DONE]\n\n")
    record = UsageRecord.objects.get()
    assert record.status == "stream_error" and record.completion_tokens > 0
