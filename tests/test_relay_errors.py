"""Every error row of the relay: the OpenAI envelope, its status and code, the SDK's class."""

import json
from datetime import timedelta
from decimal import Decimal

import openai
import pytest
import requests
from django.utils.timezone import now

from billing.models import UsageRecord
from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_token
from tests.relay_setup import chat, post, routed, sdk
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


def test_connection_failure_is_502(live_server, fake_upstream):
    # Port 9 on loopback: nothing listens.
    _, key, _ = routed(fake_upstream)
    Channel.objects.update(base_url="http://127.0.0.1:9/v1")
    from channels_app import routing_table

    routing_table.invalidate()
    with pytest.raises(openai.InternalServerError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.status_code == 502
    assert envelope_of(excinfo.value)["code"] == "upstream_error"


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
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
    )
    assert response.status_code == 200
    events = [e for e in response.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert b'"error"' in events[-2] and b"upstream_error" in events[-2]
    assert len(events) == 4  # two content events, the error, [DONE]

    with pytest.raises(openai.APIError, match="stream started"):
        list(chat(sdk(live_server, key), stream=True))
    record = UsageRecord.objects.filter(status="stream_error").first()
    assert record is not None and record.estimated and record.cost > 0


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


def test_an_exception_escaping_a_view_is_a_500_envelope(rf):
    from django.http import HttpResponse

    from airouter.relay.errors import RelayMiddleware, exception_handler

    request = rf.post("/v1/chat/completions")
    middleware = RelayMiddleware(lambda r: HttpResponse("<h1>Server Error</h1>", status=500))
    response = middleware(request)
    assert response.status_code == 500
    assert json.loads(response.content)["error"]["type"] == "server_error"
    assert response["x-request-id"]

    for response in (
        middleware.process_exception(request, RuntimeError("boom")),
        exception_handler(RuntimeError("boom"), {"request": request}),
    ):
        assert response.status_code == 500
        assert json.loads(response.content)["error"]["code"] == "server_error"
        assert b"boom" not in response.content
    # Outside /v1 Django's own pages stay.
    assert middleware.process_exception(rf.get("/admin/"), RuntimeError("boom")) is None
