"""The /v1 endpoints end to end: openai SDK -> live relay -> a real fake upstream."""

from decimal import Decimal

import openai
import pytest
import requests

from billing.models import UsageRecord
from tests.relay_setup import chat, post, routed, sdk, stream_post

pytestmark = pytest.mark.django_db(transaction=True)


def test_chat_completion_is_served_and_billed(live_server, fake_upstream):
    token, key, channel = routed(fake_upstream, multiplier="1.5")
    client = sdk(live_server, key)

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.model == "gpt-4o-mini"
    assert completion.usage.prompt_tokens == 12
    assert raw.headers["x-airouter-group"] == "pro"
    assert raw.headers["x-airouter-channel"] == "ch-a"
    assert len(raw.headers["x-request-id"]) == 32

    sent = fake_upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"
    assert sent.json["messages"] == [{"role": "user", "content": "Say hello"}]

    record = UsageRecord.objects.get()
    assert record.request_id == raw.headers["x-request-id"]
    assert (record.group.name, record.channel_id) == ("pro", channel.pk)
    assert (record.prompt_tokens, record.completion_tokens) == (12, 5)
    assert (record.input_rate, record.output_rate, record.multiplier) == (1, 2, Decimal("1.5"))
    # (12 x 1 + 5 x 2) / 1M x 1.5
    assert record.cost == Decimal("0.000033")
    assert not record.estimated and record.status == "success"
    token.owner.refresh_from_db()
    assert token.owner.balance == Decimal("100") - Decimal("0.000033")


def test_the_channel_header_can_be_hidden(live_server, fake_upstream, settings):
    settings.RELAY_EXPOSE_CHANNEL = False
    _, key, _ = routed(fake_upstream)
    raw = sdk(live_server, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-airouter-group"] == "pro"
    assert "x-airouter-channel" not in raw.headers


def test_x_api_key_header_is_accepted(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    response = post(
        live_server,
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": key},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]


def test_model_mapping_rewrites_upstream_and_shows_the_client_name(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, model_map={"gpt-4o-mini": "vendor/mini-2024"})
    client = sdk(live_server, key)

    completion = chat(client)
    assert fake_upstream.requests[-1].json["model"] == "vendor/mini-2024"
    assert completion.model == "gpt-4o-mini"

    chunks = list(chat(client, stream=True))
    assert fake_upstream.requests[-1].json["model"] == "vendor/mini-2024"
    assert {c.model for c in chunks} == {"gpt-4o-mini"}
    assert UsageRecord.objects.filter(upstream_model="vendor/mini-2024").count() == 2


def test_stream_without_include_usage_hides_the_usage_chunk(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream)
    chunks = list(chat(sdk(live_server, key), stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # ...but the relay asked for it upstream and billed from it.
    assert fake_upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.completion_tokens) == (12, 5)
    assert record.stream and not record.estimated and record.status == "success"
    assert record.ttft_ms is not None


def test_stream_with_include_usage_keeps_the_usage_chunk(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    chunks = list(chat(sdk(live_server, key), stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert UsageRecord.objects.get().completion_tokens == 5


def test_raw_stream_is_sse_ending_with_done(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    response = stream_post(live_server, key)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-airouter-channel"] == "ch-a"
    body = response.content
    assert body.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in body


def test_upstream_without_usage_is_billed_from_an_estimate(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(usage=False)
    client = sdk(live_server, key)

    chat(client)
    list(chat(client, stream=True))

    plain, streamed = UsageRecord.objects.order_by("created", "id")
    for record in (plain, streamed):
        assert record.estimated
        assert record.prompt_tokens > 0
        # "Hello from the fake upstream." is 29 characters: about 8 tokens
        assert record.completion_tokens == 8
        assert record.cost > 0


def test_legacy_completions(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    client = sdk(live_server, key)
    completion = client.completions.create(model="gpt-4o-mini", prompt="Say hello", max_tokens=5)
    assert completion.choices[0].text == "Hello from the fake upstream."
    streamed = list(client.completions.create(model="gpt-4o-mini", prompt="x", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text
    assert fake_upstream.requests[-1].path == "/v1/completions"
    assert UsageRecord.objects.filter(endpoint="completions").count() == 2


def test_embeddings(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream, model_names="text-embedding-3-small")
    result = sdk(live_server, key).embeddings.create(
        model="text-embedding-3-small", input=["a", "b"]
    )
    assert len(result.data) == 2
    assert fake_upstream.requests[-1].path == "/v1/embeddings"
    record = UsageRecord.objects.get()
    assert (record.endpoint, record.prompt_tokens, record.completion_tokens) == (
        "embeddings",
        12,
        0,
    )


def test_models_lists_what_the_token_can_reach(live_server, fake_upstream, fake_upstream_factory):
    _, key, _ = routed(fake_upstream, model_names="gpt-4o-mini, gpt-4o")
    other = fake_upstream_factory()
    routed(other, group="other", channel="ch-other", model_names="claude-x")
    client = sdk(live_server, key)

    assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini"]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.models.retrieve("claude-x")
    assert excinfo.value.response.json()["error"]["code"] == "model_not_found"


def test_models_are_narrowed_by_the_token_allowlist(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream, model_names="gpt-4o-mini, gpt-4o")
    from tests.factories import make_token

    _, narrow_key = make_token(token.owner, allowed_models="gpt-4o")
    assert [m.id for m in sdk(live_server, narrow_key).models.list()] == ["gpt-4o"]


def test_a_crlf_stream_is_relayed_and_billed_from_its_usage(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(crlf=True)
    chunks = list(chat(sdk(live_server, key), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert all(c.choices for c in chunks)  # the usage chunk was still taken out
    record = UsageRecord.objects.get()
    assert (record.completion_tokens, record.estimated) == (5, False)


def test_a_stream_request_accepting_only_event_streams_is_served(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    response = stream_post(live_server, key, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content.endswith(b"data: [DONE]\n\n")
    listed = requests.get(
        f"{live_server.url}/v1/models",
        headers={"Authorization": f"Bearer {key}", "Accept": "text/html"},
        timeout=10,
    )
    assert listed.status_code == 200
    assert listed.json()["data"][0]["id"] == "gpt-4o-mini"


def test_a_stream_is_billed_from_its_last_usage(live_server, fake_upstream):
    """Upstreams with continuous usage stats send the running total on every chunk."""
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(usage_every_chunk=True, completion_tokens=40)
    chunks = list(chat(sdk(live_server, key), stream=True))
    assert chunks[0].usage.completion_tokens == 1  # the running totals reach the client
    assert all(c.choices for c in chunks)  # the final usage-only chunk was not asked for
    record = UsageRecord.objects.get()
    assert (record.completion_tokens, record.estimated) == (40, False)

    chunks = list(chat(sdk(live_server, key), stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40
    assert UsageRecord.objects.latest("id").completion_tokens == 40


def test_an_upstream_answering_a_json_array_is_a_channel_failure_not_a_billed_success(
    live_server, fake_upstream
):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(body=b"[1, 2]")
    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 502
    assert "not a valid answer" in response.json()["error"]["message"]
    record = UsageRecord.objects.get()
    assert (record.status, record.cost) == ("upstream_error", 0)


def test_a_stream_with_garbage_events_ends_cleanly_and_is_billed(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(usage=False, extra_events=[b"[1, 2]", b'"text"', b"not json {"])
    response = stream_post(live_server, key)
    assert response.status_code == 200
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert b"not json {" in response.content  # passed on as the upstream said it
    record = UsageRecord.objects.get()
    assert (record.status, record.estimated) == ("success", True)
    assert record.completion_tokens == 8  # "Hello from the fake upstream.": 29 characters
