"""/v1/messages (Anthropic's Messages API) through the official anthropic SDK: natively to an
anthropic channel, converted to chat for an OpenAI-compatible one; count_tokens; Anthropic's
error envelope; cache-token pricing; disconnects; failover across kinds."""

from decimal import Decimal

import anthropic
import pytest
import requests

from billing.models import UsageRecord
from tests.factories import make_channel
from tests.relay_setup import post, routed

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "claude-sonnet-4-5"
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def claude(live_server, key, **kw):
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10)
    kw.setdefault("default_headers", {"Connection": "close"})
    return anthropic.Anthropic(api_key=key, base_url=live_server.url, **kw)


def anthropic_routed(upstream, **kw):
    kw.setdefault("model_names", MODEL)
    return routed(upstream, kind="anthropic", **kw)


def ask(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 100)
    kw.setdefault("messages", [{"role": "user", "content": "Say hello"}])
    return client.messages.create(**kw)


def test_messages_pass_through_to_an_anthropic_channel(live_server, fake_upstream):
    token, key, channel = anthropic_routed(fake_upstream)
    raw = claude(live_server, key).messages.with_raw_response.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"anthropic-beta": "tools-2024-04-04", "anthropic-version": "2023-06-01"},
    )
    message = raw.parse()
    assert message.content[0].text == "Hello from the fake upstream."
    assert raw.headers["x-airouter-channel"] == "ch-a" and raw.headers["request-id"]

    sent = fake_upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-upstream-secret"
    assert "authorization" not in sent.headers  # never the client's key, never Bearer
    assert sent.headers["anthropic-version"] == "2023-06-01"  # the client's, passed on
    assert sent.headers["anthropic-beta"] == "tools-2024-04-04"
    assert sent.json["system"] == "Be brief."

    record = UsageRecord.objects.get()
    assert (record.endpoint, record.status, record.channel_id) == (
        "messages",
        "success",
        channel.pk,
    )
    assert (record.prompt_tokens, record.completion_tokens) == (12, 5)


def test_cache_tokens_are_priced_at_their_own_rates(live_server, fake_upstream):
    # 20 input tokens in all: 10 read from the cache, 4 written to it, 6 plain.
    _, key, _ = anthropic_routed(
        fake_upstream,
        multiplier="2",
        input_price=Decimal("3"),
        output_price=Decimal("15"),
        cached_input_price=Decimal("0.3"),
        cache_write_price=Decimal("3.75"),
    )
    fake_upstream.configure(prompt_tokens=20, cached_tokens=10, cache_write_tokens=4)
    message = ask(claude(live_server, key))
    assert message.usage.input_tokens == 6  # Anthropic's input_tokens excludes the cache
    assert message.usage.cache_read_input_tokens == 10

    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.cached_tokens, record.cache_write_tokens) == (20, 10, 4)
    assert (record.cached_input_rate, record.cache_write_rate) == (Decimal("0.3"), Decimal("3.75"))
    # (6 x 3 + 10 x 0.3 + 4 x 3.75 + 5 x 15) / 1M x 2
    assert record.cost == Decimal("0.000222")


def test_per_model_cache_prices_override_the_channels(live_server, fake_upstream):
    _, key, channel = anthropic_routed(fake_upstream, cached_input_price=Decimal("9"))
    channel.model_prices.create(
        model=MODEL, input_price=2, output_price=4, cached_input_price=Decimal("0.2")
    )  # no cache-write price for the model: its input price
    fake_upstream.configure(prompt_tokens=20, cached_tokens=10, cache_write_tokens=4)
    ask(claude(live_server, key))
    record = UsageRecord.objects.get()
    rates = (record.input_rate, record.cached_input_rate, record.cache_write_rate)
    assert rates == (2, Decimal("0.2"), 2)
    # (6 x 2 + 10 x 0.2 + 4 x 2 + 5 x 4) / 1M
    assert record.cost == Decimal("0.000042")


def test_a_stream_passes_through_and_is_billed(live_server, fake_upstream):
    token, key, _ = anthropic_routed(fake_upstream)
    client = claude(live_server, key)
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake upstream."
    assert final.usage.output_tokens == 5
    record = UsageRecord.objects.get()
    assert (record.status, record.stream, record.prompt_tokens, record.completion_tokens) == (
        "success",
        True,
        12,
        5,
    )
    token.owner.refresh_from_db()
    assert token.owner.balance == Decimal("100") - record.cost


def test_messages_are_converted_for_an_openai_channel(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, model_names=MODEL)
    message = ask(
        claude(live_server, key),
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        extra_body={"temperature": 0.5},
        stop_sequences=["END"],
        metadata={"user_id": "u-42"},
    )
    assert message.content[0].text == "Hello from the fake upstream."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 5)

    sent = fake_upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.json["messages"][1]["role"] == "user"
    assert (sent.json["max_tokens"], sent.json["stop"], sent.json["user"]) == (100, ["END"], "u-42")
    assert UsageRecord.objects.get().status == "success"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_tool_use_round_trip(live_server, fake_upstream, kind):
    _, key, _ = routed(fake_upstream, model_names=MODEL, kind=kind)
    client = claude(live_server, key)
    fake_upstream.configure(
        tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]
    )
    first = ask(client, tools=TOOLS, tool_choice={"type": "auto"})
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert (use.id, use.name, use.input) == ("call_1", "get_weather", {"city": "Paris"})
    sent = fake_upstream.last_json()
    if kind == "openai":
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["tool_choice"] == "auto"
    else:
        assert sent["tools"] == TOOLS and sent["tool_choice"] == {"type": "auto"}

    fake_upstream.configure(tool_calls=None)
    second = ask(
        client,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"}],
            },
        ],
    )
    assert second.content[0].text == "Hello from the fake upstream."
    sent = fake_upstream.last_json()
    if kind == "openai":
        assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}
    else:
        assert sent["messages"][2]["content"][0]["tool_use_id"] == "call_1"
    assert UsageRecord.objects.filter(status="success").count() == 2


def test_parallel_tool_calls_stream_as_well_formed_blocks(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, model_names=MODEL)
    fake_upstream.configure(
        interleave_tools=True,
        tool_calls=[
            {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_2", "name": "get_weather", "arguments": {"city": "Rome"}},
        ],
    )
    with claude(live_server, key).messages.stream(
        model=MODEL, max_tokens=100, tools=TOOLS, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        final = stream.get_final_message()
    uses = [block for block in final.content if block.type == "tool_use"]
    assert [(u.id, u.input) for u in uses] == [
        ("call_1", {"city": "Paris"}),
        ("call_2", {"city": "Rome"}),
    ]
    assert final.stop_reason == "tool_use"
    record = UsageRecord.objects.get()
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("success", 12, 5)


def test_count_tokens_asks_an_anthropic_channel_and_costs_nothing(live_server, fake_upstream):
    token, key, _ = anthropic_routed(fake_upstream)
    fake_upstream.configure(prompt_tokens=42)
    counted = claude(live_server, key).messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}]
    )
    assert counted.input_tokens == 42
    assert fake_upstream.requests[-1].path == "/v1/messages/count_tokens"
    assert not UsageRecord.objects.exists()
    token.owner.refresh_from_db()
    assert token.owner.balance == Decimal("100")


def test_count_tokens_passes_back_what_an_anthropic_channel_refuses(live_server, fake_upstream):
    _, key, _ = anthropic_routed(fake_upstream)
    fake_upstream.configure(status=400, error_message="messages.0: bad block")
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(live_server, key).messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.body["error"]["message"] == "messages.0: bad block"


def test_count_tokens_is_estimated_for_an_openai_channel(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, model_names=MODEL)
    counted = claude(live_server, key).messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hello there, how are you?"}]
    )
    assert 1 <= counted.input_tokens <= 20
    assert fake_upstream.requests == [] and not UsageRecord.objects.exists()


@pytest.mark.parametrize(
    "case, exception, status, kind",
    [
        ("bad key", anthropic.AuthenticationError, 401, "authentication_error"),
        ("unknown model", anthropic.NotFoundError, 404, "not_found_error"),
        ("no balance", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("upstream down", anthropic.InternalServerError, 500, "api_error"),
    ],
)
def test_errors_are_anthropic_envelopes_the_sdk_raises(
    live_server, fake_upstream, case, exception, status, kind
):
    token, key, _ = anthropic_routed(fake_upstream)
    kw = {}
    if case == "bad key":
        key = "sk-not-a-key"
    elif case == "unknown model":
        kw["model"] = "claude-unknown"
    elif case == "no balance":
        token.owner.balance = Decimal("0")
        token.owner.save()
    else:
        fake_upstream.configure(status=500)
    with pytest.raises(exception) as caught:
        ask(claude(live_server, key), **kw)
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == kind
    assert caught.value.response.headers["request-id"]


def test_a_bad_body_is_a_400_in_anthropic_envelope(live_server, fake_upstream):
    _, key, _ = anthropic_routed(fake_upstream)
    response = post(
        live_server,
        "/v1/messages",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Missing required parameter: 'max_tokens'.",
        },
    }
    assert fake_upstream.requests == []


def test_a_mid_stream_failure_is_an_error_event(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, model_names=MODEL)
    fake_upstream.configure(drop_after=2)
    response = post(
        live_server,
        "/v1/messages",
        key,
        json={
            "model": MODEL,
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    )
    events = response.content.split(b"\n\n")
    assert b"event: error" in response.content
    assert events[-2].startswith(b"event: error\ndata: {")
    record = UsageRecord.objects.get()
    assert record.status == "stream_error" and record.cost > 0  # billed for what was sent


def test_a_client_disconnect_mid_stream_is_billed(live_server, fake_upstream):
    _, key, _ = anthropic_routed(fake_upstream)
    fake_upstream.configure(chunks=["piece "] * 40, chunk_interval=0.05)
    with requests.post(
        f"{live_server.url}/v1/messages",
        json={
            "model": MODEL,
            "max_tokens": 500,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        stream=True,
        timeout=10,
    ) as response:
        next(response.iter_content(64))
    record = _settled()
    assert record.status == "client_disconnected"
    assert record.prompt_tokens == 12 and record.cost > 0


def test_failover_crosses_kinds(live_server, fake_upstream_factory):
    broken, working = fake_upstream_factory(), fake_upstream_factory()
    token, key, first = anthropic_routed(broken, priority=10)
    broken.configure(status=529)
    second = make_channel(
        "openai-b",
        groups=[first.groups.get()],
        base_url=working.url,
        model_names=MODEL,
        input_price=Decimal("1"),
    )
    message = ask(claude(live_server, key))
    assert message.content[0].text == "Hello from the fake upstream."
    assert broken.requests[-1].path == "/v1/messages"
    assert working.requests[-1].path == "/v1/chat/completions"
    record = UsageRecord.objects.get()
    assert (record.channel_id, record.attempts, record.status) == (second.pk, 2, "success")


@pytest.mark.parametrize(
    "behaviour",
    [
        {"body": b"not json"},
        {"answer_status": 204},
        {"content_encoding": "gzip"},
        {"body": b'{"type": "error", "error": {}}'},
    ],
)
def test_an_invalid_200_is_a_channel_failure(live_server, fake_upstream, behaviour):
    _, key, _ = anthropic_routed(fake_upstream)
    fake_upstream.configure(**behaviour)
    with pytest.raises(anthropic.APIStatusError) as caught:
        ask(claude(live_server, key))
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"
    record = UsageRecord.objects.get()
    assert (record.status, record.cost) == ("upstream_error", 0)


def test_models_answer_in_anthropics_shape_for_an_anthropic_client(live_server, fake_upstream):
    _, key, _ = anthropic_routed(fake_upstream)
    page = claude(live_server, key).models.list()
    assert [m.id for m in page.data] == [MODEL]


def _settled():
    """The usage record once its stream has settled (the server finishes after the client)."""
    import time

    for _ in range(100):
        record = UsageRecord.objects.get()
        if record.status != "pending":
            return record
        time.sleep(0.05)
    return UsageRecord.objects.get()
