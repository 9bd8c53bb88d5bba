"""Edges of the formats and kinds: cut streams billed for what was sent, holds that bound every
prompt, numbers no model takes, answers that are not what was asked, channels that cannot take a
request."""

import json

import pytest

from airouter.relay.formats import FORMATS
from airouter.relay.views import find_usage
from billing.models import UsageRecord
from tests.factories import make_channel
from tests.relay_setup import post, routed, stream_post

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize("client", ["messages", "chat/completions"])
def test_a_cut_anthropic_stream_is_billed_for_the_text_sent(live_server, fake_upstream, client):
    # message_start already says output_tokens 1: the text that went out counts for more.
    _, key, _ = routed(fake_upstream, kind="anthropic")
    fake_upstream.configure(chunks=["word " * 100] * 5, drop_after=3)  # 1,500 characters sent
    body = {"model": "gpt-4o-mini", "max_tokens": 1000, "stream": True, "messages": [MESSAGE]}
    response = post(live_server, f"/v1/{client}", key, json=body)
    assert response.status_code == 200
    record = UsageRecord.objects.get()
    assert record.status == "stream_error"
    assert 350 <= record.completion_tokens <= 400  # about 4 characters a token


def test_a_text_document_is_held_at_its_size():
    document = {"type": "document", "source": {"type": "text", "data": "x" * 100_000}}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [document]}]}
    raw = json.dumps(body).encode()
    assert FORMATS["messages"].prompt_bound(len(raw), body) >= 50_000
    image = {"type": "image", "source": {"type": "base64", "data": "A" * 100_000}}
    body["messages"][0]["content"] = [image]
    raw = json.dumps(body).encode()
    assert FORMATS["messages"].prompt_bound(len(raw), body) < 2_500  # an image: a fixed bound


def test_usage_is_found_past_an_object_that_only_names_it():
    answer = b'{"usage": {"prompt_tokens": 9000}, "metadata": {"usage": "x"}, "n": {"usage": 1}}'
    assert find_usage(answer) == {"prompt_tokens": 9000}


@pytest.mark.parametrize(
    "path, field, value",
    [
        ("/v1/chat/completions", "max_tokens", 0),
        ("/v1/chat/completions", "max_tokens", 10**30),
        ("/v1/chat/completions", "n", 10**20),
        ("/v1/messages", "max_tokens", 10**30),
        ("/v1/responses", "max_output_tokens", 5 * 10**12),
    ],
)
def test_numbers_no_model_takes_are_400_not_500(live_server, fake_upstream, path, field, value):
    _, key, _ = routed(fake_upstream)
    body = {"model": "gpt-4o-mini", "messages": [MESSAGE], "input": "Hi", "max_tokens": 10}
    body[field] = value
    response = post(live_server, path, key, json=body)
    assert response.status_code == 400
    assert field in json.dumps(response.json())
    assert fake_upstream.requests == []


def test_a_lone_surrogate_in_a_converted_stream_is_sent_escaped(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, kind="anthropic")
    raw = (
        b'{"model": "gpt-4o-mini", "stream": true, '
        b'"messages": [{"role": "user", "content": "\\ud800 \xe4\xbd\xa0"}]}'
    )
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.content.endswith(b"data: [DONE]\n\n")
    sent = fake_upstream.last_json()["messages"][0]["content"]
    assert sent == [{"type": "text", "text": "\ud800 你"}]


def test_a_stream_answered_with_plain_json_fails_over(live_server, fake_upstream_factory):
    bad, good = fake_upstream_factory(), fake_upstream_factory()
    _, key, first = routed(bad, priority=10)
    bad.configure(content_type="application/json")
    make_channel("good", groups=[first.groups.get()], base_url=good.url)
    response = stream_post(live_server, key)
    assert response.content.endswith(b"data: [DONE]\n\n") and b'"error"' not in response.content
    record = UsageRecord.objects.get()
    assert (record.attempts, record.channel.name, record.status) == (2, "good", "success")


def test_an_in_band_error_in_a_chat_stream_is_a_stream_error(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(extra_events=[b'{"error": {"message": "overloaded"}}'])
    response = stream_post(live_server, key)
    assert b"overloaded" in response.content  # passed on as the upstream said it
    assert UsageRecord.objects.get().status == "stream_error"


def test_a_channel_that_cannot_take_the_request_is_skipped(live_server, fake_upstream_factory):
    chat_upstream, claude_upstream = fake_upstream_factory(), fake_upstream_factory()
    _, key, first = routed(chat_upstream, priority=10)  # chat: a system-only request won't go
    make_channel(
        "claude", groups=[first.groups.get()], base_url=claude_upstream.url, kind="anthropic"
    )
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "system", "content": "Hi"}],
    }
    response = post(live_server, "/v1/messages", key, json=body)
    assert response.status_code == 200
    assert chat_upstream.requests == [] and claude_upstream.requests[-1].path == "/v1/messages"
    assert UsageRecord.objects.get().attempts == 1

    claude_upstream.stop()  # now no channel can serve it: the reason, as a 400
    first.groups.get().channels.filter(name="claude").delete()
    response = post(live_server, "/v1/messages", key, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "at least one message" in response.json()["error"]["message"]


@pytest.mark.parametrize("model", ["gpt\x00-4o", "m" * 201, "gpt\ud800", "tab\tname"])
def test_model_names_a_record_cannot_keep_are_400(live_server, fake_upstream, model):
    _, key, _ = routed(fake_upstream)
    body = {"model": model, "messages": [MESSAGE]}
    response = post(live_server, "/v1/chat/completions", key, data=json.dumps(body))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_an_upstream_message_with_nul_and_surrogates_is_stored(live_server, fake_upstream_factory):
    bad, good = fake_upstream_factory(), fake_upstream_factory()
    _, key, first = routed(bad, priority=10)
    bad.configure(status=500, error_message="boom \x00 \ud800 here")
    make_channel("good", groups=[first.groups.get()], base_url=good.url)
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        json={"model": "gpt-4o-mini", "messages": [MESSAGE]},
    )
    assert response.status_code == 200  # failed over, not a 500 while noting the error
    assert "boom" in first.__class__.objects.get(pk=first.pk).last_error
    bad.configure(status=400)  # refused: the upstream's words go on the usage record
    bad.reset()
    bad.configure(status=400, error_message="bad \x00 \ud800 request")
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        json={"model": "gpt-4o-mini", "messages": [MESSAGE]},
    )
    assert response.status_code == 400
    assert not UsageRecord.objects.filter(status="pending").exists()
