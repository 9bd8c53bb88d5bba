"""/v1/responses (OpenAI's Responses API) through the openai SDK: converted to chat for an
OpenAI-compatible channel, passed through to a --responses-api one, converted to Messages for
an anthropic channel; and /v1/chat/completions converted to Messages for an anthropic one."""

from decimal import Decimal

import pytest
import requests

from billing.models import UsageRecord
from tests.relay_setup import chat, post, routed, sdk

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
WEATHER_CALL = [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]


def ask(client, **kw):
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("input", "Say hello")
    return client.responses.create(**kw)


@pytest.fixture(params=["openai", "anthropic"])
def converted(request, fake_upstream):
    """A channel that does not speak Responses: chat (openai) or Messages (anthropic)."""
    token, key, channel = routed(fake_upstream, kind=request.param)
    path = "/v1/chat/completions" if request.param == "openai" else "/v1/messages"
    return token, key, channel, path


@pytest.fixture(params=["openai", "anthropic", "responses-api"])
def any_kind(request, fake_upstream):
    """Every kind of channel, the native Responses one included: (key, upstream path)."""
    kind = "openai" if request.param == "responses-api" else request.param
    _, key, _ = routed(fake_upstream, kind=kind, responses_api=request.param == "responses-api")
    path = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}.get(
        request.param, "/v1/responses"
    )
    return key, path


def test_a_response_is_converted_and_billed(live_server, fake_upstream, converted):
    token, key, channel, path = converted
    fake_upstream.configure(prompt_tokens=20, cached_tokens=8)
    response = ask(sdk(live_server, key), instructions="Be brief.", max_output_tokens=50)
    assert response.output_text == "Hello from the fake upstream."
    assert response.status == "completed"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (20, 5)
    assert response.usage.input_tokens_details.cached_tokens == 8

    sent = fake_upstream.requests[-1]
    assert sent.path == path
    if path == "/v1/messages":
        assert sent.json["system"] == "Be brief." and sent.json["max_tokens"] == 50
        assert sent.headers["x-api-key"] == "sk-upstream-secret"
    else:
        assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent.json["max_tokens"] == 50

    record = UsageRecord.objects.get()
    assert (record.endpoint, record.status, record.channel_id) == (
        "responses",
        "success",
        channel.pk,
    )
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (20, 8, 5)
    # (12 x 1 + 8 x 1 + 5 x 2) / 1M: cached tokens at the input price when no cached price
    assert record.cost == Decimal("0.00003")


def test_a_streamed_response_is_converted(live_server, fake_upstream, converted):
    _, key, _, _ = converted
    events = list(ask(sdk(live_server, key), stream=True))
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from the fake upstream."
    assert events[-1].response.usage.output_tokens == 5
    assert [e.sequence_number for e in events] == list(range(len(events)))
    record = UsageRecord.objects.get()
    assert (record.status, record.stream, record.completion_tokens) == ("success", True, 5)


def test_a_function_tool_round_trip(live_server, fake_upstream, any_kind):
    key, path = any_kind
    client = sdk(live_server, key)
    fake_upstream.configure(tool_calls=WEATHER_CALL)
    first = ask(client, tools=TOOLS, input="Weather in Paris?")
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.call_id, call.name, call.arguments) == (
        "call_1",
        "get_weather",
        '{"city":"Paris"}',
    )

    fake_upstream.configure(tool_calls=None)
    second = ask(
        client,
        tools=TOOLS,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        ],
    )
    assert second.output_text == "Hello from the fake upstream."
    sent = fake_upstream.last_json()
    assert fake_upstream.requests[-1].path == path
    if path == "/v1/responses":  # passed through as the client wrote it
        assert sent["input"][2] == {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": "Sunny",
        }
    elif path == "/v1/messages":
        assert sent["messages"][1]["content"][0]["type"] == "tool_use"
        result = sent["messages"][2]["content"][0]
        assert (result["type"], result["tool_use_id"]) == ("tool_result", "call_1")
    else:
        assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}


def test_a_streamed_tool_call(live_server, fake_upstream, any_kind):
    key, _ = any_kind
    fake_upstream.configure(tool_calls=WEATHER_CALL)
    with sdk(live_server, key).responses.stream(
        model="gpt-4o-mini", input="Weather?", tools=TOOLS
    ) as stream:
        final = stream.get_final_response()
    call = next(item for item in final.output if item.type == "function_call")
    assert (call.call_id, call.arguments) == ("call_1", '{"city":"Paris"}')


def test_a_responses_api_channel_passes_through(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, responses_api=True)
    fake_upstream.configure(prompt_tokens=30, cached_tokens=10, reasoning_tokens=3)
    client = sdk(live_server, key)
    response = ask(client, instructions="Be brief.", store=False)
    assert response.output_text == "Hello from the fake upstream."
    sent = fake_upstream.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.json == {
        "model": "gpt-4o-mini",
        "input": "Say hello",
        "instructions": "Be brief.",
        "store": False,
    }
    streamed = list(ask(client, stream=True))
    assert streamed[-1].type == "response.completed"
    plain, stream = UsageRecord.objects.order_by("created", "id")
    for record in (plain, stream):
        assert (record.prompt_tokens, record.cached_tokens) == (30, 10)
        assert (record.completion_tokens, record.reasoning_tokens) == (5, 3)
        assert record.status == "success"


def test_a_mid_stream_failure_is_response_failed(live_server, fake_upstream, converted):
    _, key, _, _ = converted
    fake_upstream.configure(drop_after=2)
    response = post(
        live_server,
        "/v1/responses",
        key,
        json={"model": "gpt-4o-mini", "input": "Hi", "stream": True},
    )
    assert response.status_code == 200
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: response.failed\ndata: {")
    assert b'"status":"failed"' in last
    record = UsageRecord.objects.get()
    assert record.status == "stream_error" and record.cost > 0


def test_a_client_disconnect_on_a_responses_stream_is_billed(live_server, fake_upstream, converted):
    _, key, _, _ = converted
    fake_upstream.configure(chunks=["piece "] * 40, chunk_interval=0.05)
    with requests.post(
        f"{live_server.url}/v1/responses",
        json={"model": "gpt-4o-mini", "input": "Hi", "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=10,
    ) as response:
        next(response.iter_content(64))
    record = _settled()
    assert record.status == "client_disconnected"
    assert record.prompt_tokens > 0 and record.cost > 0  # billed for what was sent


@pytest.mark.parametrize("field", ["previous_response_id", "conversation", "prompt"])
def test_stored_state_is_refused_with_a_clear_400(live_server, fake_upstream, any_kind, field):
    key, _ = any_kind  # even a --responses-api channel: a failover could not follow it
    response = post(
        live_server,
        "/v1/responses",
        key,
        json={"model": "gpt-4o-mini", "input": "Hi", field: "resp_1"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field
    assert "Send the whole conversation" in response.json()["error"]["message"]
    assert fake_upstream.requests == [] and not UsageRecord.objects.exists()


@pytest.mark.parametrize(
    "behaviour, stream",
    [
        ({"body": b"<html>oops</html>"}, False),
        ({"answer_status": 302}, False),
        ({"content_type": "text/plain"}, True),  # a stream answered without an event stream
        ({"content_encoding": "gzip"}, True),
    ],
)
def test_an_invalid_200_is_a_channel_failure(
    live_server, fake_upstream, converted, behaviour, stream
):
    _, key, _, _ = converted
    fake_upstream.configure(**behaviour)
    response = post(
        live_server,
        "/v1/responses",
        key,
        json={"model": "gpt-4o-mini", "input": "Hi", "stream": stream},
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert UsageRecord.objects.get().cost == 0


# --- chat completions to an anthropic channel ---------------------------------------------


def test_chat_is_converted_to_messages_for_an_anthropic_channel(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, kind="anthropic")
    fake_upstream.configure(prompt_tokens=20, cached_tokens=4, cache_write_tokens=6)
    client = sdk(live_server, key)
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        temperature=1.7,
        stop="END",
    )
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 20
    assert completion.usage.prompt_tokens_details.cached_tokens == 4

    sent = fake_upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json["system"] == "Be brief."
    assert sent.json["temperature"] == 1  # Anthropic's range ends at 1
    assert sent.json["stop_sequences"] == ["END"]
    assert sent.json["max_tokens"] == 4096  # RELAY_DEFAULT_MAX_TOKENS: Anthropic requires one

    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.cached_tokens, record.cache_write_tokens) == (20, 4, 6)


def test_chat_streams_and_tool_calls_through_an_anthropic_channel(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, kind="anthropic")
    fake_upstream.configure(thinking="Let me think.", tool_calls=WEATHER_CALL)
    client = sdk(live_server, key)
    chunks = list(
        chat(
            client,
            stream=True,
            stream_options={"include_usage": True},
            tools=[{"type": "function", "function": TOOLS[0] | {"type": None}}],
        )
    )
    calls = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert calls[0][0].id == "call_1" and calls[0][0].function.name == "get_weather"
    arguments = "".join(part[0].function.arguments or "" for part in calls)
    assert arguments == '{"city":"Paris"}'
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["tool_calls"]
    assert chunks[-1].usage.completion_tokens == 5
    record = UsageRecord.objects.get()
    assert (record.status, record.completion_tokens) == ("success", 5)


def test_completions_are_not_served_by_an_anthropic_channel(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, kind="anthropic")
    response = post(
        live_server, "/v1/completions", key, json={"model": "gpt-4o-mini", "prompt": "Hi"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert fake_upstream.requests == []


def _settled():
    import time

    for _ in range(100):
        record = UsageRecord.objects.get()
        if record.status != "pending":
            return record
        time.sleep(0.05)
    return UsageRecord.objects.get()
