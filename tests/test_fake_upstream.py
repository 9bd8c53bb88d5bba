"""The fake upstream itself (tests/fake_upstream.py), over real HTTP: it must answer as the real
OpenAI and Anthropic services do, or the relay's tests prove nothing. No database."""

import gzip
import json
import zlib

import anthropic
import openai
import pytest
import requests
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
MESSAGES = {**CHAT, "model": "claude-sonnet-4-5", "max_tokens": 100}
RESPONSES = {"model": "gpt-4o-mini", "input": "Hi"}
CALLS = [
    {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
    {"id": "call_2", "name": "get_time", "arguments": {"tz": "Europe/Paris"}},
]
TEXT = "Hello from the fake upstream."


def post(fake, path, body, headers=None, **kwargs):
    if path.startswith("/messages") and headers is None:
        headers = ANTHROPIC_HEADERS
    return requests.post(fake.url + path, json=body, headers=headers, timeout=5, **kwargs)


def sse(response):
    """[(event name or None, data)] of an SSE body; data parsed when it is JSON."""
    events = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        text = "\n".join(data)
        try:
            events.append((name, json.loads(text)))
        except ValueError:
            events.append((name, text))
    return events


def anthropic_client(fake):
    return anthropic.Anthropic(base_url=fake.url.removesuffix("/v1"), api_key="x", max_retries=0)


def openai_client(fake):
    return openai.OpenAI(base_url=fake.url, api_key="x", max_retries=0)


# --- chat/completions ---
def test_chat_default_answer_is_a_chat_completion(fake_upstream):
    answer = ChatCompletion.model_validate(post(fake_upstream, "/chat/completions", CHAT).json())
    assert answer.choices[0].message.content == TEXT
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 12 and answer.usage.completion_tokens == 5
    assert answer.usage.prompt_tokens_details is None  # details only when configured


def test_chat_tool_calls(fake_upstream):
    fake_upstream.configure(tool_calls=CALLS)
    answer = ChatCompletion.model_validate(post(fake_upstream, "/chat/completions", CHAT).json())
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert [(c.id, c.function.name) for c in message.tool_calls] == [
        ("call_1", "get_weather"),
        ("call_2", "get_time"),
    ]
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}


def test_chat_stream_tool_calls_are_fragments_the_sdk_puts_together(fake_upstream):
    fake_upstream.configure(tool_calls=CALLS, text_with_tools=True, chunks=["Let me ", "look."])
    events = sse(post(fake_upstream, "/chat/completions", {**CHAT, "stream": True}))
    fragments = [
        e["choices"][0]["delta"]["tool_calls"][0]
        for _, e in events
        if isinstance(e, dict) and e["choices"] and "tool_calls" in e["choices"][0]["delta"]
    ]
    assert [f["index"] for f in fragments] == [0, 0, 0, 1, 1, 1]
    assert fragments[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert "".join(f["function"]["arguments"] for f in fragments[:3]) == '{"city":"Paris"}'
    assert events[-1] == (None, "[DONE]")

    with openai_client(fake_upstream).chat.completions.stream(**CHAT) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me look."
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [
        {"city": "Paris"},
        {"tz": "Europe/Paris"},
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_chat_stream_interleaved_tool_calls(fake_upstream):
    fake_upstream.configure(tool_calls=CALLS, interleave_tools=True)
    events = sse(post(fake_upstream, "/chat/completions", {**CHAT, "stream": True}))
    indexes = [
        e["choices"][0]["delta"]["tool_calls"][0]["index"]
        for _, e in events
        if isinstance(e, dict) and "tool_calls" in e["choices"][0]["delta"]
    ]
    assert indexes == [0, 1, 0, 1, 0, 1]
    assert not any("content" in e["choices"][0]["delta"] for _, e in events if isinstance(e, dict))


def test_chat_thinking(fake_upstream):
    fake_upstream.configure(thinking="Let me think.")
    body = post(fake_upstream, "/chat/completions", CHAT).json()
    assert body["choices"][0]["message"]["reasoning_content"] == "Let me think."
    events = sse(post(fake_upstream, "/chat/completions", {**CHAT, "stream": True}))
    deltas = [e["choices"][0]["delta"] for _, e in events if isinstance(e, dict)][:-1]
    assert [list(d) for d in deltas[:3]] == [["reasoning_content"]] * 2 + [["content"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think."


def test_chat_usage_details(fake_upstream):
    fake_upstream.configure(
        prompt_tokens=100, cached_tokens=60, cache_write_tokens=10, reasoning_tokens=3
    )
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    usage = sse(post(fake_upstream, "/chat/completions", body))[-2][1]["usage"]
    assert usage["prompt_tokens"] == 100  # cached tokens included
    assert usage["prompt_tokens_details"] == {"cached_tokens": 60, "cache_write_tokens": 10}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 3}


def test_stop_reason_length_in_every_format(fake_upstream):
    fake_upstream.configure(stop_reason="length")
    chat = post(fake_upstream, "/chat/completions", CHAT).json()
    assert chat["choices"][0]["finish_reason"] == "length"
    text = post(fake_upstream, "/completions", {"model": "m", "prompt": "Hi"}).json()
    assert text["choices"][0]["finish_reason"] == "length"
    assert post(fake_upstream, "/messages", MESSAGES).json()["stop_reason"] == "max_tokens"
    response = Response.model_validate(post(fake_upstream, "/responses", RESPONSES).json())
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    events = sse(post(fake_upstream, "/responses", {**RESPONSES, "stream": True}))
    assert events[-1][0] == "response.incomplete"


def test_new_behaviours_leave_completions_and_embeddings_alone(fake_upstream):
    fake_upstream.configure(thinking="Hmm.", tool_calls=CALLS, text_with_tools=True)
    text = post(fake_upstream, "/completions", {"model": "m", "prompt": "Hi"}).json()
    assert text["choices"][0]["text"] == TEXT
    embeddings = post(fake_upstream, "/embeddings", {"model": "e", "input": ["a", "b"]}).json()
    assert len(embeddings["data"]) == 2


# --- Anthropic Messages ---
def test_messages_answer_is_an_anthropic_message(fake_upstream):
    answer = post(fake_upstream, "/messages", MESSAGES)
    assert answer.headers["content-type"] == "application/json"
    message = Message.model_validate(answer.json())
    assert message.id == "msg_fake" and message.model == "claude-sonnet-4-5"
    assert message.content[0].type == "text" and message.content[0].text == TEXT
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 5
    assert message.usage.cache_read_input_tokens == message.usage.cache_creation_input_tokens == 0
    sent = fake_upstream.requests[-1]
    assert sent.headers["x-api-key"] == "sk-ant-test" and sent.json == MESSAGES


def test_messages_usage_excludes_cache_reads_and_writes(fake_upstream):
    fake_upstream.configure(
        prompt_tokens=100, cached_tokens=60, cache_write_tokens=10, reasoning_tokens=3
    )
    usage = Message.model_validate(post(fake_upstream, "/messages", MESSAGES).json()).usage
    assert usage.input_tokens == 30
    assert usage.cache_read_input_tokens == 60 and usage.cache_creation_input_tokens == 10
    assert usage.output_tokens_details.thinking_tokens == 3
    with anthropic_client(fake_upstream).messages.stream(**MESSAGES) as stream:
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (30, 60)
    assert final.usage.output_tokens == 5


def test_messages_tool_use_and_thinking(fake_upstream):
    fake_upstream.configure(thinking="Let me think.", tool_calls=CALLS[:1])
    message = Message.model_validate(post(fake_upstream, "/messages", MESSAGES).json())
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[0].thinking == "Let me think."
    assert message.content[0].signature == "fake-signature"
    tool = message.content[1]
    assert (tool.id, tool.name, tool.input) == ("call_1", "get_weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"


def test_messages_stream_with_the_anthropic_sdk(fake_upstream):
    fake_upstream.configure(chunks=["Hel", "lo"])
    with anthropic_client(fake_upstream).messages.stream(**MESSAGES) as stream:
        assert "".join(stream.text_stream) == "Hello"
        final = stream.get_final_message()
    assert final.content[0].text == "Hello" and final.stop_reason == "end_turn"
    events = sse(post(fake_upstream, "/messages", {**MESSAGES, "stream": True}))
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[0][1]["message"]["usage"]["output_tokens"] == 1
    assert events[-2][1]["usage"] == {"output_tokens": 5}


def test_messages_stream_tools_and_thinking_with_the_anthropic_sdk(fake_upstream):
    fake_upstream.configure(
        thinking="Let me think.", tool_calls=CALLS, text_with_tools=True, chunks=["On it."]
    )
    with anthropic_client(fake_upstream).messages.stream(**MESSAGES) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[0].thinking == "Let me think."
    assert final.content[0].signature == "fake-signature"
    assert final.content[1].text == "On it."
    assert [b.input for b in final.content[2:]] == [{"city": "Paris"}, {"tz": "Europe/Paris"}]
    assert final.stop_reason == "tool_use"
    events = sse(post(fake_upstream, "/messages", {**MESSAGES, "stream": True}))
    json_deltas = [
        d["delta"]["partial_json"]
        for _, d in events
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    assert len(json_deltas) == 4  # two fragments per call


def test_messages_beta_query_is_routed_and_recorded(fake_upstream):
    beta = anthropic_client(fake_upstream).beta.messages.create(**MESSAGES, betas=["b-1"])
    assert beta.content[0].text == TEXT
    assert fake_upstream.requests[-1].headers["anthropic-beta"] == "b-1"
    answer = post(fake_upstream, "/messages?beta=true", MESSAGES)
    assert Message.model_validate(answer.json()).content[0].text == TEXT
    assert fake_upstream.requests[-1].path == "/v1/messages?beta=true"
    assert fake_upstream.last_json("/v1/messages")["max_tokens"] == 100


def test_messages_validation_and_auth_errors(fake_upstream):
    for missing in ("max_tokens", "messages"):
        body = {k: v for k, v in MESSAGES.items() if k != missing}
        answer = post(fake_upstream, "/messages", body)
        assert answer.status_code == 400
        assert answer.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": f"{missing}: Field required"},
        }
    version = {"anthropic-version": "2023-06-01"}
    answer = post(fake_upstream, "/messages", MESSAGES, headers=version)
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
    bearer = {**version, "Authorization": "Bearer sk-ant-test"}  # what the anthropic SDK sends
    assert post(fake_upstream, "/messages", MESSAGES, headers=bearer).status_code == 200
    answer = post(fake_upstream, "/messages", MESSAGES, headers={"x-api-key": "k"})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
        (502, "api_error"),
    ],
)
def test_messages_configured_errors_in_anthropic_envelope(fake_upstream, status, kind):
    fake_upstream.configure(status=status, error_message="nope")
    answer = post(fake_upstream, "/messages", {**MESSAGES, "stream": True})
    assert answer.status_code == status
    assert answer.json() == {"type": "error", "error": {"type": kind, "message": "nope"}}


def test_fail_times_then_normal_on_the_new_endpoints(fake_upstream):
    fake_upstream.configure(status=529, fail_times=1)
    assert post(fake_upstream, "/messages", MESSAGES).status_code == 529
    assert post(fake_upstream, "/messages", MESSAGES).status_code == 200
    fake_upstream.reset()
    fake_upstream.configure(status=429, fail_times=1)
    failed = post(fake_upstream, "/responses", RESPONSES)
    assert failed.status_code == 429 and "message" in failed.json()["error"]  # OpenAI's envelope
    assert post(fake_upstream, "/responses", RESPONSES).status_code == 200


def test_count_tokens(fake_upstream):
    fake_upstream.configure(prompt_tokens=321)
    count = anthropic_client(fake_upstream).messages.count_tokens(
        model="claude-sonnet-4-5", messages=MESSAGES["messages"]
    )
    assert count.input_tokens == 321
    assert fake_upstream.requests[-1].path == "/v1/messages/count_tokens"
    assert post(fake_upstream, "/messages/count_tokens", {"model": "m"}).status_code == 400


def test_anthropic_models_list(fake_upstream):
    page = anthropic_client(fake_upstream).models.list()
    assert [m.id for m in page.data] == ["gpt-4o-mini"]
    assert requests.get(fake_upstream.url + "/models", timeout=5).json()["object"] == "list"


# --- OpenAI Responses ---
def test_responses_answer_is_a_response(fake_upstream):
    response = Response.model_validate(post(fake_upstream, "/responses", RESPONSES).json())
    assert response.id == "resp_fake" and response.status == "completed"
    assert response.output_text == TEXT
    assert response.output[0].type == "message"
    assert response.usage.input_tokens == 12 and response.usage.output_tokens == 5
    assert response.usage.total_tokens == 17


def test_responses_usage_includes_cached_tokens(fake_upstream):
    fake_upstream.configure(prompt_tokens=100, cached_tokens=60, reasoning_tokens=3)
    usage = Response.model_validate(post(fake_upstream, "/responses", RESPONSES).json()).usage
    assert usage.input_tokens == 100 and usage.input_tokens_details.cached_tokens == 60
    assert usage.output_tokens_details.reasoning_tokens == 3


def test_responses_function_calls_and_reasoning(fake_upstream):
    fake_upstream.configure(thinking="Let me think.", tool_calls=CALLS[:1])
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    body = {**RESPONSES, "tools": tools}
    response = Response.model_validate(post(fake_upstream, "/responses", body).json())
    reasoning, call = response.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Let me think."
    assert (call.type, call.call_id, call.name) == ("function_call", "call_1", "get_weather")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert response.tools[0].name == "get_weather"


def test_responses_stream_with_the_openai_sdk(fake_upstream):
    fake_upstream.configure(thinking="Hmm.", tool_calls=CALLS[:1], text_with_tools=True)
    client = openai_client(fake_upstream)
    events = list(client.responses.create(**RESPONSES, stream=True))
    names = [e.type for e in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == TEXT and len(deltas) == 5
    assert names.count("response.function_call_arguments.delta") == 2
    assert names.count("response.reasoning_summary_text.delta") == 2
    final = events[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.usage.total_tokens == 17
    raw = post(fake_upstream, "/responses", {**RESPONSES, "stream": True})
    assert raw.headers["content-type"] == "text/event-stream"
    assert "[DONE]" not in raw.text
    assert all(name == data["type"] for name, data in sse(raw))

    with client.responses.stream(**RESPONSES) as stream:
        assert stream.get_final_response().output_text == TEXT


# --- behaviours shared by the new endpoints ---
@pytest.mark.parametrize(
    ("path", "body", "last"),
    [
        ("/messages", MESSAGES, "message_delta"),
        ("/responses", RESPONSES, "response.output_item.done"),
        ("/chat/completions", CHAT, None),
    ],
)
def test_done_false_drops_the_final_event(fake_upstream, path, body, last):
    fake_upstream.configure(done=False)
    answer = post(fake_upstream, path, {**body, "stream": True})
    assert answer.status_code == 200
    events = sse(answer)
    if last:
        assert events[-1][0] == last
    else:
        assert events[-1][1]["choices"][0]["finish_reason"] == "stop"


def test_drop_after_cuts_new_streams_after_k_content_events(fake_upstream):
    fake_upstream.configure(drop_after=2)
    answer = requests.post(
        fake_upstream.url + "/messages",
        json={**MESSAGES, "stream": True},
        headers=ANTHROPIC_HEADERS,
        stream=True,
        timeout=5,
    )
    received = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in answer.iter_content(None):
            received += piece
    assert received.count(b"text_delta") == 2 and b"message_stop" not in received


def test_completion_tokens_max_tokens_and_usage_false(fake_upstream):
    fake_upstream.configure(completion_tokens="max_tokens")
    assert post(fake_upstream, "/messages", MESSAGES).json()["usage"]["output_tokens"] == 100
    body = {**RESPONSES, "max_output_tokens": 77}
    assert post(fake_upstream, "/responses", body).json()["usage"]["output_tokens"] == 77
    fake_upstream.configure(usage=False)
    assert "usage" not in post(fake_upstream, "/messages", MESSAGES).json()
    assert post(fake_upstream, "/responses", RESPONSES).json()["usage"] is None
    events = sse(post(fake_upstream, "/messages", {**MESSAGES, "stream": True}))
    assert "usage" not in events[0][1]["message"] and "usage" not in events[-2][1]


def test_raw_body_and_answer_status(fake_upstream):
    fake_upstream.configure(body=b"[1, 2]")
    for path, body in [("/messages", MESSAGES), ("/responses", RESPONSES)]:
        answer = post(fake_upstream, path, body)
        assert (answer.status_code, answer.content) == (200, b"[1, 2]")
    fake_upstream.configure(answer_status=204)
    answer = post(fake_upstream, "/messages", MESSAGES)
    assert (answer.status_code, answer.content) == (204, b"")
    fake_upstream.configure(answer_status=302)
    answer = post(fake_upstream, "/chat/completions", CHAT, allow_redirects=False)
    assert (answer.status_code, answer.content) == (302, b"")


def test_content_type_override(fake_upstream):
    fake_upstream.configure(content_type="text/plain")
    assert post(fake_upstream, "/responses", RESPONSES).headers["content-type"] == "text/plain"
    answer = post(fake_upstream, "/messages", {**MESSAGES, "stream": True})
    assert answer.headers["content-type"] == "text/plain"


def test_gzip_although_identity_was_asked(fake_upstream):
    fake_upstream.configure(content_encoding="gzip")
    identity = {**ANTHROPIC_HEADERS, "Accept-Encoding": "identity"}
    answer = post(fake_upstream, "/messages", MESSAGES, headers=identity, stream=True)
    assert answer.headers["content-encoding"] == "gzip"
    raw = answer.raw.read(decode_content=False)
    assert json.loads(gzip.decompress(raw))["type"] == "message"
    answer = post(
        fake_upstream, "/chat/completions", {**CHAT, "stream": True}, headers=identity, stream=True
    )
    text = zlib.decompress(answer.raw.read(decode_content=False), wbits=31)
    assert text.endswith(b"data: [DONE]\n\n")


def test_crlf_and_extra_events_on_anthropic_stream(fake_upstream):
    fake_upstream.configure(crlf=True, extra_events=[b"garbage"])
    answer = post(fake_upstream, "/messages", {**MESSAGES, "stream": True})
    assert b"\r\n\r\n" in answer.content and b"\n\n" not in answer.content.replace(b"\r\n", b"")
    events = sse(answer)
    assert events[-3] == (None, "garbage") and events[-1][0] == "message_stop"


def test_last_json(fake_upstream):
    post(fake_upstream, "/messages", MESSAGES)
    post(fake_upstream, "/chat/completions", CHAT)
    assert fake_upstream.last_json() == CHAT
    assert fake_upstream.last_json("/v1/messages") == MESSAGES
    with pytest.raises(LookupError):
        fake_upstream.last_json("/v1/responses")
