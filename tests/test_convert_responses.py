"""Responses API <-> chat/completions conversion (airouter/relay/convert/responses.py).

Pure functions: no database. The openai SDK's own models and stream accumulator check that
what we produce is what a Responses client accepts.
"""

import json

import pytest
from openai._types import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from airouter.relay.convert.responses import (
    ChatToResponsesStream,
    ConversionError,
    chat_response_to_responses,
    failed_response,
    responses_request_to_chat,
)
from billing.pricing import Usage

EVENT = TypeAdapter(ResponseStreamEvent)

SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Run a command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
    "strict": False,
}
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+"},
}
SHELL_CHAT = {
    "type": "function",
    "function": {
        "name": "shell",
        "description": "Run a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        "strict": False,
    },
}


def user(text):
    return {"role": "user", "content": text}


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- request: Responses -> chat ----------------------------------------------------------

REQUEST_ROWS = [
    pytest.param(
        {"model": "m", "instructions": "Be brief.", "input": "hi"},
        {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, user("hi")]},
        id="instructions",
    ),
    pytest.param(
        {"model": "m", "input": "hello"},
        {"model": "m", "messages": [user("hello")]},
        id="string-input",
    ),
    pytest.param(
        {
            "model": "m",
            "input": [
                {"type": "message", "role": "developer", "content": "rules"},
                {"role": "system", "content": [{"type": "input_text", "text": "sys"}]},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "one"},
                        {"type": "input_text", "text": "two"},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "ok", "annotations": []}],
                },
                {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]},
                {"role": "critic", "content": "unknown role"},
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "rules"},
                {"role": "system", "content": "sys"},
                user("one\ntwo"),
                {"role": "assistant", "content": "ok"},
            ],
        },
        id="message-items-with-parts",
    ),
    pytest.param(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
                        {"type": "input_image", "file_id": "file_1"},
                        {"type": "input_file", "file_data": "..."},
                    ],
                }
            ],
        },
        {
            "model": "m",
            "messages": [
                user(
                    [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/cat.png", "detail": "low"},
                        },
                    ]
                )
            ],
        },
        id="images",
    ),
    pytest.param(
        {
            "model": "m",
            "tools": [SHELL],
            "input": [
                user("list files"),
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_A",
                    "name": "shell",
                    "arguments": '{"command":"ls"}',
                },
                {"type": "function_call_output", "call_id": "call_A", "output": "a.txt"},
            ],
        },
        {
            "model": "m",
            "tools": [SHELL_CHAT],
            "messages": [
                user("list files"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call("call_A", "shell", '{"command":"ls"}')],
                },
                {"role": "tool", "tool_call_id": "call_A", "content": "a.txt"},
            ],
        },
        id="function-call-round-trip",
    ),
    pytest.param(
        {
            "model": "m",
            "input": [
                user("two things"),
                {"role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_text", "text": "A"}],
                },
                {"type": "function_call_output", "call_id": "c2", "output": "B"},
                {"role": "assistant", "content": "Done."},
            ],
        },
        {
            "model": "m",
            "messages": [
                user("two things"),
                {
                    "role": "assistant",
                    "content": "On it.",
                    "tool_calls": [call("c1", "a", "{}"), call("c2", "b", "{}")],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "A"},
                {"role": "tool", "tool_call_id": "c2", "content": "B"},
                {"role": "assistant", "content": "Done."},
            ],
        },
        id="parallel-calls-merged",
    ),
    pytest.param(
        {
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "v1", "name": "view_image", "arguments": "{}"},
                {"type": "function_call", "call_id": "v2", "name": "view_image", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "v1",
                    "output": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}],
                },
                {"type": "function_call_output", "call_id": "v2", "output": "no image"},
            ],
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call("v1", "view_image", "{}"), call("v2", "view_image", "{}")],
                },
                {
                    "role": "tool",
                    "tool_call_id": "v1",
                    "content": "(image output: see the next message)",
                },
                {"role": "tool", "tool_call_id": "v2", "content": "no image"},
                user(
                    [
                        {"type": "text", "text": "Image output of tool call v1:"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ]
                ),
            ],
        },
        id="tool-output-image-after-the-tool-messages",
    ),
    pytest.param(
        {
            "model": "m",
            "tools": [APPLY_PATCH],
            "tool_choice": {"type": "custom", "name": "apply_patch"},
            "input": [
                {
                    "type": "custom_tool_call",
                    "call_id": "p1",
                    "name": "apply_patch",
                    "input": "*** Begin Patch\n*** End Patch",
                },
                {"type": "custom_tool_call_output", "call_id": "p1", "output": "Done!"},
            ],
        },
        {
            "model": "m",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "apply_patch",
                        "description": "Edit files",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "input": {
                                    "type": "string",
                                    "description": "The tool's raw input, as plain text (not "
                                    "JSON-encoded). It must match this lark grammar:\n"
                                    "start: begin_patch hunk+",
                                }
                            },
                            "required": ["input"],
                        },
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "apply_patch"}},
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        call(
                            "p1",
                            "apply_patch",
                            json.dumps({"input": "*** Begin Patch\n*** End Patch"}),
                        )
                    ],
                },
                {"role": "tool", "tool_call_id": "p1", "content": "Done!"},
            ],
        },
        id="custom-tool",
    ),
    pytest.param(
        {
            "model": "m",
            "tools": [
                {
                    "type": "namespace",
                    "name": "mcp__github__",
                    "description": "GitHub",
                    "tools": [{"type": "function", "name": "get_issue", "parameters": {}}],
                },
                {"type": "namespace", "name": "clock", "description": "", "tools": [SHELL]},
            ],
            "input": [
                {
                    "type": "function_call",
                    "call_id": "g1",
                    "namespace": "mcp__github__",
                    "name": "get_issue",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "g1", "output": "#1"},
            ],
        },
        {
            "model": "m",
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "mcp__github__get_issue", "parameters": {}},
                },
                {**SHELL_CHAT, "function": {**SHELL_CHAT["function"], "name": "clock__shell"}},
            ],
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call("g1", "mcp__github__get_issue", "{}")],
                },
                {"role": "tool", "tool_call_id": "g1", "content": "#1"},
            ],
        },
        id="namespace-tools-flattened",
    ),
    pytest.param(
        {
            "model": "m",
            "input": [
                user("think"),
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "hmm"}],
                    "encrypted_content": "gAAAA",
                },
                {"role": "assistant", "content": "thought"},
                {"type": "local_shell_call", "call_id": "l", "action": {}},
                {"type": "web_search_call", "id": "ws", "status": "completed"},
                {"type": "item_reference", "id": "msg_0"},
                {"type": "mystery"},
            ],
            "reasoning": {"effort": "high", "summary": "auto"},
        },
        {
            "model": "m",
            "reasoning_effort": "high",
            "messages": [user("think"), {"role": "assistant", "content": "thought"}],
        },
        id="reasoning-items-dropped-effort-mapped",
    ),
    pytest.param(
        {
            "model": "m",
            "input": "json please",
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                    "strict": True,
                },
                "verbosity": "low",
            },
        },
        {
            "model": "m",
            "messages": [user("json please")],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                    "strict": True,
                },
            },
        },
        id="text-format-json-schema",
    ),
    pytest.param(
        {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}},
        {"model": "m", "messages": [user("x")], "response_format": {"type": "json_object"}},
        id="text-format-json-object",
    ),
    pytest.param(
        {"model": "m", "input": "x", "text": {"format": {"type": "text"}}},
        {"model": "m", "messages": [user("x")]},
        id="text-format-text",
    ),
    pytest.param(
        {"model": "m", "input": "x", "max_output_tokens": 256, "temperature": 0.2, "top_p": 0.9},
        {
            "model": "m",
            "messages": [user("x")],
            "max_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
        },
        id="max-output-tokens-and-sampling",
    ),
    pytest.param(
        {
            "model": "m",
            "input": "x",
            "tools": [SHELL, {"type": "web_search"}, {"type": "local_shell"}, {"type": "mcp"}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        {
            "model": "m",
            "messages": [user("x")],
            "tools": [SHELL_CHAT],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        id="built-in-tools-dropped",
    ),
    pytest.param(
        {
            "model": "m",
            "input": "x",
            "tools": [{"type": "web_search"}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        },
        {"model": "m", "messages": [user("x")]},
        id="no-tools-left-no-tool-choice",
    ),
    pytest.param(
        {
            "model": "m",
            "input": "x",
            "tools": [SHELL],
            "tool_choice": {"type": "function", "name": "shell"},
        },
        {
            "model": "m",
            "messages": [user("x")],
            "tools": [SHELL_CHAT],
            "tool_choice": {"type": "function", "function": {"name": "shell"}},
        },
        id="tool-choice-function",
    ),
    pytest.param(
        {"model": "m", "input": "x", "tools": [SHELL], "tool_choice": {"type": "web_search"}},
        {"model": "m", "messages": [user("x")], "tools": [SHELL_CHAT], "tool_choice": "auto"},
        id="tool-choice-other-is-auto",
    ),
    pytest.param(
        {"model": "m", "input": "x", "stream": True, "safety_identifier": "u-1"},
        {
            "model": "m",
            "messages": [user("x")],
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u-1",
        },
        id="stream-and-safety-identifier",
    ),
    pytest.param(
        {
            "model": "m",
            "input": "x",
            "user": "u-2",
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k",
            "service_tier": "auto",
            "truncation": "auto",
            "background": False,
            "metadata": {"a": "b"},
            "previous_response_id": None,
        },
        {"model": "m", "messages": [user("x")], "user": "u-2"},
        id="unsupported-fields-dropped",
    ),
]


@pytest.mark.parametrize(("body", "chat"), REQUEST_ROWS)
def test_request_to_chat(body, chat):
    assert responses_request_to_chat(body) == chat


def test_previous_response_id_is_refused():
    body = {"model": "m", "input": "x", "previous_response_id": "resp_1"}
    with pytest.raises(ConversionError) as caught:
        responses_request_to_chat(body)
    assert caught.value.param == "previous_response_id"
    assert "send the whole conversation in `input`" in caught.value.message


def test_no_input_is_refused():
    with pytest.raises(ConversionError) as caught:
        responses_request_to_chat({"model": "m", "input": []})
    assert caught.value.param == "input"


# --- answer: chat -> Responses (whole) ---------------------------------------------------


def completion(message, finish="stop", usage=None):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


REQUEST = {
    "model": "client-model",
    "instructions": "Be brief.",
    "input": "x",
    "tools": [SHELL, APPLY_PATCH],
    "tool_choice": "auto",
    "temperature": 0.5,
    "top_p": 1,
    "parallel_tool_calls": False,
    "max_output_tokens": 100,
    "text": {"format": {"type": "text"}, "verbosity": "low"},
    "reasoning": {"effort": "low", "summary": "auto"},
    "metadata": {"k": "v"},
    "store": False,
}

ANSWER_ROWS = [
    pytest.param(
        completion({"role": "assistant", "content": "Hi!"}),
        [
            {
                "type": "message",
                "id": "msg_1_0",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Hi!", "annotations": [], "logprobs": []}
                ],
            }
        ],
        id="text",
    ),
    pytest.param(
        completion({"role": "assistant", "content": "42", "reasoning_content": "think"}),
        [
            {
                "type": "reasoning",
                "id": "rs_1_0",
                "summary": [{"type": "summary_text", "text": "think"}],
            },
            {
                "type": "message",
                "id": "msg_1_1",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "42", "annotations": [], "logprobs": []}
                ],
            },
        ],
        id="reasoning-content",
    ),
    pytest.param(
        completion({"role": "assistant", "content": None, "refusal": "No."}),
        [
            {
                "type": "message",
                "id": "msg_1_0",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": "No."}],
            }
        ],
        id="refusal",
    ),
    pytest.param(
        completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    call("call_1", "shell", '{"command":"ls"}'),
                    call("call_2", "apply_patch", json.dumps({"input": "*** Begin Patch"})),
                    call("call_3", "apply_patch", "not json"),
                ],
            },
            finish="tool_calls",
        ),
        [
            {
                "type": "function_call",
                "id": "fc_1_0",
                "call_id": "call_1",
                "name": "shell",
                "arguments": '{"command":"ls"}',
                "status": "completed",
            },
            {
                "type": "custom_tool_call",
                "id": "ctc_1_1",
                "call_id": "call_2",
                "name": "apply_patch",
                "input": "*** Begin Patch",
            },
            {
                "type": "custom_tool_call",
                "id": "ctc_1_2",
                "call_id": "call_3",
                "name": "apply_patch",
                "input": "not json",
            },
        ],
        id="function-and-custom-tool-calls",
    ),
]


@pytest.mark.parametrize(("resp", "output"), ANSWER_ROWS)
def test_chat_response_to_responses(resp, output):
    out = chat_response_to_responses(resp, REQUEST, "resp_1")
    assert out["output"] == output
    assert out["id"] == "resp_1"
    assert out["object"] == "response"
    assert out["status"] == "completed"
    assert out["created_at"] == 1700000000
    assert "output_text" not in out
    Response.model_validate(out)  # the SDK accepts it


def test_echoes_the_request():
    out = chat_response_to_responses(completion({"content": "hi"}), REQUEST, "resp_1")
    expected = {
        "model": "client-model",
        "instructions": "Be brief.",
        "tools": REQUEST["tools"],
        "tool_choice": "auto",
        "temperature": 0.5,
        "top_p": 1,
        "parallel_tool_calls": False,
        "max_output_tokens": 100,
        "text": REQUEST["text"],
        "reasoning": REQUEST["reasoning"],
        "metadata": {"k": "v"},
        "store": False,
        "error": None,
        "incomplete_details": None,
        "usage": None,
    }
    assert {key: out[key] for key in expected} == expected


def test_echo_defaults():
    out = chat_response_to_responses(completion({"content": "hi"}), {"model": "m"}, "resp_2")
    assert out["tools"] == [] and out["tool_choice"] == "auto"
    assert out["parallel_tool_calls"] is True
    assert out["temperature"] is None and out["top_p"] is None
    assert out["text"] == {"format": {"type": "text"}}


def test_sdk_output_text():
    resp = completion({"role": "assistant", "content": "Hello there", "reasoning": "hmm"})
    parsed = Response.model_validate(chat_response_to_responses(resp, REQUEST, "resp_1"))
    assert parsed.output_text == "Hello there"
    assert parsed.output[0].type == "reasoning"


def test_length_is_incomplete():
    out = chat_response_to_responses(completion({"content": "cut"}, finish="length"), REQUEST, "r")
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete"
    assert Response.model_validate(out).output_text == "cut"


def test_namespaced_call_maps_back():
    request = {
        "model": "m",
        "tools": [
            {
                "type": "namespace",
                "name": "mcp__github__",
                "description": "",
                "tools": [{"type": "function", "name": "get_issue"}],
            }
        ],
    }
    resp = completion({"tool_calls": [call("c", "mcp__github__get_issue", "{}")]}, "tool_calls")
    item = chat_response_to_responses(resp, request, "resp_1")["output"][0]
    assert (item["name"], item["namespace"]) == ("get_issue", "mcp__github__")


def test_round_trip_keeps_calls_and_ids():
    """An answer's items, sent back as the next request's input (as Codex does), give chat
    the very tool calls the upstream made."""
    request = {
        **REQUEST,
        "tools": [
            SHELL,
            APPLY_PATCH,
            {"type": "namespace", "name": "mcp__gh__", "description": "", "tools": [SHELL]},
        ],
    }
    upstream_calls = [
        call("call_1", "shell", '{"command":"ls"}'),
        call("call_2", "apply_patch", json.dumps({"input": "*** Begin Patch"})),
        call("call_3", "mcp__gh__shell", "{}"),
    ]
    answer = completion(
        {"content": "Working.", "reasoning_content": "plan", "tool_calls": upstream_calls},
        "tool_calls",
    )
    output = chat_response_to_responses(answer, request, "resp_1")["output"]
    outputs = [
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Done!"},
        {"type": "function_call_output", "call_id": "call_3", "output": "ok"},
    ]
    next_request = {**request, "input": [user("go"), *output, *outputs]}
    chat = responses_request_to_chat(next_request)
    assert chat["messages"][2:] == [
        {"role": "assistant", "content": "Working.", "tool_calls": upstream_calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Done!"},
        {"role": "tool", "tool_call_id": "call_3", "content": "ok"},
    ]


USAGE_ROWS = [
    pytest.param(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 300,
            "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 800},
            "completion_tokens_details": {"reasoning_tokens": 200},
        },
        {
            "input_tokens": 1000,
            "input_tokens_details": {"cached_tokens": 800, "cache_write_tokens": 0},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 200},
            "total_tokens": 1300,
        },
        id="cached-and-reasoning",
    ),
    pytest.param(
        {"prompt_tokens": 5, "completion_tokens": 2},
        {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 7,
        },
        id="plain",
    ),
    pytest.param({"completion_tokens": 2}, None, id="no-prompt-count"),
    pytest.param(None, None, id="none"),
]


@pytest.mark.parametrize(("chat_usage", "responses_usage"), USAGE_ROWS)
def test_usage(chat_usage, responses_usage):
    out = chat_response_to_responses(completion({"content": "x"}, usage=chat_usage), {}, "r")
    assert out["usage"] == responses_usage
    Response.model_validate(out)
    stream = ChatToResponsesStream({}, "r")
    stream.feed(chunk(content="x"))
    stream.feed({"choices": [], "usage": chat_usage})
    assert stream.finish()[-1]["response"]["usage"] == responses_usage


def test_failed_response():
    out = failed_response(REQUEST, "resp_9", "upstream broke", "server_error")
    assert out["status"] == "failed"
    assert out["error"] == {"code": "server_error", "message": "upstream broke"}
    assert out["output"] == [] and out["id"] == "resp_9"
    Response.model_validate(out)
    # Codex reads codes the SDK does not list (context_length_exceeded): passed through as is
    assert failed_response({}, "r", "too long", "context_length_exceeded")["error"]["code"] == (
        "context_length_exceeded"
    )


# --- answer: chat -> Responses (stream) --------------------------------------------------


def chunk(content=None, reasoning=None, tool_calls=None, finish=None, usage=None):
    delta = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    out = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def fragment(index, arguments, call_id=None, name=None):
    function = {"arguments": arguments}
    if name:
        function["name"] = name
    out = {"index": index, "function": function}
    if call_id:
        out.update(id=call_id, type="function")
    return out


def run(chunks, request=REQUEST, end="finish"):
    stream = ChatToResponsesStream(request, "resp_s")
    events = []
    for c in chunks:
        events += stream.feed(c)
    events += stream.finish() if end == "finish" else stream.fail("boom", "server_error")
    return stream, events


def accumulate(events, request=REQUEST):
    """Every event through the SDK's strict models, then its own accumulator; the final
    Response (of response.completed)."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    final = None
    for event in events:
        for out in state.handle_event(EVENT.validate_python(event)):
            if out.type in ("response.completed", "response.incomplete", "response.failed"):
                final = out.response
    return final


def types(events):
    return [e["type"] for e in events]


def test_stream_text():
    _, events = run(
        [chunk(content=""), chunk(content="Hel"), chunk(content="lo"), chunk(finish="stop")]
    )
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    assert events[2]["item"] == {
        "type": "message",
        "id": "msg_s_0",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    assert events[4] == {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": "msg_s_0",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hel",
        "logprobs": [],
    }
    assert events[6]["text"] == "Hello"
    assert events[8]["item"]["content"][0]["text"] == "Hello"
    assert events[8]["item"]["status"] == "completed"
    final = accumulate(events)
    assert final.output_text == "Hello"
    assert final.id == "resp_s" and final.status == "completed"
    assert final.model == "client-model"


def test_stream_reasoning_then_text_then_call():
    _, events = run(
        [
            chunk(reasoning="Let me "),
            chunk(reasoning="think."),
            chunk(content="Running ls."),
            chunk(tool_calls=[fragment(0, "", "call_1", "shell")]),
            chunk(tool_calls=[fragment(0, '{"command":')]),
            chunk(tool_calls=[fragment(0, '"ls"}')]),
            chunk(finish="tool_calls"),
        ]
    )
    assert types(events)[2:] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1, 2]
    assert added[2]["item"] == {
        "type": "function_call",
        "id": "fc_s_2",
        "call_id": "call_1",
        "name": "shell",
        "arguments": "",
        "status": "in_progress",
    }
    final = accumulate(events)
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].summary[0].text == "Let me think."
    assert final.output_text == "Running ls."
    assert final.output[2].arguments == '{"command":"ls"}'
    assert final.output[2].call_id == "call_1"


def test_stream_interleaved_tool_calls():
    _, events = run(
        [
            chunk(tool_calls=[fragment(0, "", "call_a", "shell")]),
            chunk(tool_calls=[fragment(1, "", "call_b", "shell")]),
            chunk(tool_calls=[fragment(0, '{"command":')]),
            chunk(tool_calls=[fragment(1, '{"command":')]),
            chunk(tool_calls=[fragment(0, '"ls"}'), fragment(1, '"pwd"}')]),
            chunk(finish="tool_calls"),
        ]
    )
    closed = set()
    for e in events:  # never a delta for a closed item
        if e["type"] == "response.output_item.done":
            closed.add(e["output_index"])
        elif "output_index" in e:
            assert e["output_index"] not in closed
    final = accumulate(events)
    calls = [(item.call_id, item.arguments) for item in final.output]
    assert calls == [("call_a", '{"command":"ls"}'), ("call_b", '{"command":"pwd"}')]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [item["arguments"] for item in done] == ['{"command":"ls"}', '{"command":"pwd"}']


def test_stream_calls_reusing_index_zero():
    """Some upstreams number every parallel call 0: a new id is a new call."""
    _, events = run(
        [
            chunk(tool_calls=[fragment(0, '{"command":"ls"}', "call_a", "shell")]),
            chunk(tool_calls=[fragment(0, '{"command":"pwd"}', "call_b", "shell")]),
            chunk(finish="tool_calls"),
        ]
    )
    final = accumulate(events)
    assert [item.call_id for item in final.output] == ["call_a", "call_b"]
    assert final.output[1].arguments == '{"command":"pwd"}'


def test_stream_custom_tool_call():
    patch = "*** Begin Patch\n*** End Patch"
    arguments = json.dumps({"input": patch})
    _, events = run(
        [
            chunk(tool_calls=[fragment(0, arguments[:10], "call_p", "apply_patch")]),
            chunk(tool_calls=[fragment(0, arguments[10:])]),
            chunk(finish="tool_calls"),
        ]
    )
    assert types(events)[2:] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-2]["item"] == {
        "type": "custom_tool_call",
        "id": "ctc_s_0",
        "call_id": "call_p",
        "name": "apply_patch",
        "input": patch,
    }
    final = accumulate(events)
    assert final.output[0].input == patch


def test_stream_usage_and_length():
    stream, events = run(
        [
            chunk(content="cut sh"),
            chunk(finish="length"),
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 4,
                    "prompt_tokens_details": {"cached_tokens": 6},
                    "completion_tokens_details": {"reasoning_tokens": 1},
                },
            },
        ]
    )
    assert stream.usage == Usage(
        input_tokens=10, output_tokens=4, cached_tokens=6, reasoning_tokens=1
    )
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["usage"]["input_tokens_details"]["cached_tokens"] == 6
    final = accumulate(events)
    assert final.status == "incomplete" and final.output_text == "cut sh"


def test_stream_completed_has_full_output():
    _, events = run([chunk(content="a"), chunk(tool_calls=[fragment(0, "{}", "c", "shell")])])
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["output"] == done
    assert completed["response"]["usage"] is None


def test_stream_events_are_not_changed_afterwards():
    stream = ChatToResponsesStream(REQUEST, "resp_s")
    first = stream.feed(chunk(content="a"))
    snapshot = json.dumps(first)
    stream.feed(chunk(content="b"))
    stream.finish()
    assert json.dumps(first) == snapshot


def test_stream_fail_before_anything():
    stream = ChatToResponsesStream(REQUEST, "resp_f")
    events = stream.fail("upstream timed out", "server_error")
    assert types(events) == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["error"] == {
        "code": "server_error",
        "message": "upstream timed out",
    }
    assert events[-1]["response"]["status"] == "failed"
    assert accumulate(events).status == "failed"
    assert stream.fail("again", "server_error") == [] and stream.finish() == []


def test_stream_fail_midway_and_idempotence():
    stream = ChatToResponsesStream(REQUEST, "resp_f")
    events = stream.feed(chunk(content="partial"))
    events += stream.fail("boom", "server_error")
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["sequence_number"] == len(events) - 1
    assert stream.finish() == [] and stream.feed(chunk(content="late")) == []
    EVENT.validate_python(events[-1])


def test_stream_finish_is_idempotent_and_empty_stream_completes():
    stream = ChatToResponsesStream(REQUEST, "resp_e")
    events = stream.finish()
    assert types(events) == ["response.created", "response.in_progress", "response.completed"]
    assert stream.finish() == [] and stream.fail("x", "server_error") == []
    assert accumulate(events).output == []


def test_stream_error_chunk_fails():
    stream = ChatToResponsesStream(REQUEST, "resp_e")
    events = stream.feed({"error": {"message": "overloaded", "type": "server_error"}})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"] == "overloaded"


def test_stream_refusal():
    _, events = run(
        [
            {"choices": [{"index": 0, "delta": {"refusal": "I can't"}}]},
            {"choices": [{"index": 0, "delta": {"refusal": " help."}}]},
        ]
    )
    assert "response.refusal.delta" in types(events)
    final = accumulate(events)
    assert final.output[0].content[0].refusal == "I can't help."


# --- garbage in: only ConversionError ----------------------------------------------------

GARBAGE = [
    None,
    "text",
    42,
    [],
    {},
    {"input": None},
    {"input": 7},
    {"input": [None, 3, "x", {"type": None}, {"role": None}, {"type": "message"}]},
    {"input": [{"type": "message", "role": "user", "content": [None, 1, {"type": "input_text"}]}]},
    {"input": [{"type": "function_call", "call_id": 1, "name": None, "arguments": {"a": 1}}]},
    {"input": [{"type": "function_call_output", "call_id": "c", "output": {"x": 1}}]},
    {"input": [{"type": "function_call_output", "call_id": "c", "output": 3.5}]},
    {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": 5}]}]},
    {"input": "x", "tools": "all", "tool_choice": 5, "text": "json", "reasoning": "high"},
    {"input": "x", "tools": [None, {"type": "function"}, {"type": "custom", "name": 3}]},
    {
        "input": "x",
        "tools": [
            {"type": "namespace", "tools": None},
            {"type": "custom", "name": "c", "format": "x"},
        ],
    },
    {"input": "x", "max_output_tokens": "100", "temperature": "hot", "stream": "yes"},
    {"input": "x", "text": {"format": {"type": "json_schema"}}},
    {"input": [{"role": ["user"], "content": "x"}, {"type": ["message"], "role": "user"}]},
    {"input": [{"role": "user", "content": [{"type": ["input_text"], "text": "x"}]}]},
    {"input": "x", "tools": [{"type": ["function"], "name": "f"}], "tool_choice": ["auto"]},
    {"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": ["auto"]},
    {"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": []}},
    {"instructions": ["not", {"role": "user", "content": "items"}]},
]


@pytest.mark.parametrize("body", GARBAGE)
def test_request_garbage(body):
    try:
        chat = responses_request_to_chat(body)
    except ConversionError:
        return
    json.dumps(chat)


ANSWER_GARBAGE = [
    None,
    "x",
    {},
    {"choices": None},
    {"choices": [None]},
    {"choices": [{"message": "hi"}]},
    {"choices": [{"message": {"content": 5, "tool_calls": "x", "reasoning_content": 1}}]},
    {
        "choices": [
            {"message": {"tool_calls": [None, {"function": None}, {"function": {"name": 1}}]}}
        ]
    },
    {
        "choices": [
            {"message": {"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}}
        ]
    },
    {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, None]}}], "usage": "lots"},
]


@pytest.mark.parametrize("resp", ANSWER_GARBAGE)
@pytest.mark.parametrize("request_", [None, "x", {"tools": "x", "model": 5}, REQUEST])
def test_answer_garbage(resp, request_):
    out = chat_response_to_responses(resp, request_, "resp_g")
    json.dumps(out)
    assert out["status"] in ("completed", "incomplete")


STREAM_GARBAGE = [
    None,
    "data",
    {},
    {"choices": "x"},
    {"choices": [None]},
    {"choices": [{"delta": None, "finish_reason": 5}]},
    {"choices": [{"delta": {"content": 5, "reasoning_content": [], "refusal": 1}}]},
    {"choices": [{"delta": {"tool_calls": "x"}}]},
    {"choices": [{"delta": {"tool_calls": [None, {"index": "a"}, {"function": None}]}}]},
    {"choices": [{"delta": {"tool_calls": [{"index": True, "function": {"name": 3}}]}}]},
    {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": {"a": 1}}}]}}]},
    {"choices": [], "usage": {"prompt_tokens": -1}},
    {"choices": [{"delta": {"tool_calls": [{"index": [0], "id": ["x"]}]}}]},
    {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": {}, "function": {"name": []}}]}}]},
    {"error": "string error"},
    {"error": {"message": None, "code": 5}},
]


def test_stream_garbage():
    for request_ in (None, "x", {"tools": [None, 3]}, REQUEST):
        stream = ChatToResponsesStream(request_, "resp_g")
        events = []
        for c in STREAM_GARBAGE:
            events += stream.feed(c)
        events += stream.finish()
        json.dumps(events)
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] in ("response.completed", "response.failed")
