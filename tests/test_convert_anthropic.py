"""Anthropic Messages <-> OpenAI chat conversions: one row per feature, then the streams fed
through the official SDKs' own accumulators, then garbage in."""

import json
import random

import httpx2
import pytest
from anthropic import Anthropic
from anthropic._models import construct_type
from anthropic.lib.streaming._messages import accumulate_event, build_events
from anthropic.types import RawMessageStreamEvent
from openai import OpenAI
from openai._models import construct_type as openai_construct
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from airouter.relay.convert.anthropic import (
    ChatToMessagesStream,
    ConversionError,
    MessagesToChatStream,
    chat_request_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
    messages_response_to_chat,
)
from billing.pricing import Usage

USER = {"role": "user", "content": "Hi"}
PNG = "iVBORw0KGgo="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def text(value):
    return {"type": "text", "text": value}


# ------------------------------------------------------------------ Messages request -> chat


def m2c(**body):
    return messages_request_to_chat({"model": "claude-x", "max_tokens": 100, **body})


M2C_ROWS = {
    "system string": (
        {"system": "Be brief.", "messages": [USER]},
        [{"role": "system", "content": "Be brief."}, USER],
    ),
    "system blocks, cache_control dropped": (
        {
            "system": [
                text("One."),
                {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}},
            ],
            "messages": [USER],
        },
        [{"role": "system", "content": "One.\n\nTwo."}, USER],
    ),
    "text blocks joined": (
        {"messages": [{"role": "user", "content": [text("a"), text("b")]}]},
        [{"role": "user", "content": "a\n\nb"}],
    ),
    "image base64 and url": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        text("What?"),
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/a.jpg"}},
                    ],
                }
            ]
        },
        [
            {
                "role": "user",
                "content": [
                    text("What?"),
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://x/a.jpg"}},
                ],
            }
        ],
    ),
    "documents: text kept, pdf dropped": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "Doc"},
                        },
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf"},
                        },
                        text("Sum up"),
                    ],
                }
            ]
        },
        [{"role": "user", "content": "Doc\n\nSum up"}],
    ),
    "parallel tool calls and their results, tools first": (
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "content": [
                        text("Checking."),
                        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "Pé"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "t", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        text("also this"),
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [text("12:00"), text("UTC")],
                        },
                    ],
                },
            ]
        },
        [
            USER,
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"c":"Pé"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "t", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "12:00\n\nUTC"},
            {"role": "user", "content": "also this"},
        ],
    ),
    "tool_use only: content None": (
        {
            "messages": [
                USER,
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n"}]},
            ]
        },
        [
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "n", "arguments": "{}"}}
                ],
            },
        ],
    ),
    "tool_result with an image and is_error": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_9",
                            "is_error": True,
                            "content": [
                                text("bad"),
                                {"type": "image", "source": {"type": "url", "url": "https://i"}},
                            ],
                        }
                    ],
                }
            ]
        },
        [
            {"role": "tool", "tool_call_id": "toolu_9", "content": "Error: bad"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://i"}}]},
        ],
    ),
    "thinking -> reasoning_content, redacted dropped": (
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xx"},
                        text("Hello"),
                    ],
                },
            ]
        },
        [USER, {"role": "assistant", "content": "Hello", "reasoning_content": "Hmm."}],
    ),
}


@pytest.mark.parametrize("body, messages", M2C_ROWS.values(), ids=M2C_ROWS.keys())
def test_messages_request_to_chat_messages(body, messages):
    assert m2c(**body)["messages"] == messages


TOOLS = [
    {"name": "w", "description": "Weather", "input_schema": WEATHER_SCHEMA},
    {"name": "t", "input_schema": None},
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    {"type": "bash_20250124", "name": "bash"},
    {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {"name": "w", "description": "Weather", "parameters": WEATHER_SCHEMA},
    },
    {
        "type": "function",
        "function": {"name": "t", "parameters": {"type": "object", "properties": {}}},
    },
]

M2C_PARAM_ROWS = {
    "tools, server tools dropped": ({"tools": TOOLS}, {"tools": CHAT_TOOLS}),
    "tool_choice auto": (
        {"tools": TOOLS, "tool_choice": {"type": "auto"}},
        {"tools": CHAT_TOOLS, "tool_choice": "auto"},
    ),
    "tool_choice any": (
        {"tools": TOOLS, "tool_choice": {"type": "any"}},
        {"tools": CHAT_TOOLS, "tool_choice": "required"},
    ),
    "tool_choice tool": (
        {"tools": TOOLS, "tool_choice": {"type": "tool", "name": "w"}},
        {"tools": CHAT_TOOLS, "tool_choice": {"type": "function", "function": {"name": "w"}}},
    ),
    "tool_choice none": (
        {"tools": TOOLS, "tool_choice": {"type": "none"}},
        {"tools": CHAT_TOOLS, "tool_choice": "none"},
    ),
    "disable_parallel_tool_use": (
        {"tools": TOOLS, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        {"tools": CHAT_TOOLS, "tool_choice": "auto", "parallel_tool_calls": False},
    ),
    "only server tools: no tools, no tool_choice": (
        {"tools": TOOLS[2:], "tool_choice": {"type": "any"}},
        {},
    ),
    "sampling, stop, user, stream": (
        {
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["END", "STOP"],
            "metadata": {"user_id": "u-1"},
            "stream": True,
        },
        {
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END", "STOP"],
            "user": "u-1",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    "at most 4 stop sequences": ({"stop_sequences": list("abcdef")}, {"stop": list("abcd")}),
    "thinking and other fields dropped": (
        {
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "service_tier": "auto",
            "container": "c",
            "mcp_servers": [],
            "context_management": {},
            "stream": False,
        },
        {},
    ),
}


@pytest.mark.parametrize("params, expected", M2C_PARAM_ROWS.values(), ids=M2C_PARAM_ROWS.keys())
def test_messages_request_to_chat_params(params, expected):
    out = m2c(messages=[USER], **params)
    assert out == {"model": "claude-x", "max_tokens": 100, "messages": [USER], **expected}


# ------------------------------------------------------------------ chat request -> Messages


def c2m(default_max_tokens=4096, **body):
    return chat_request_to_messages({"model": "gpt-x", **body}, default_max_tokens)


UTEXT = {"role": "user", "content": [text("Hi")]}

C2M_ROWS = {
    "system and developer -> system": (
        [
            {"role": "system", "content": "A."},
            {"role": "developer", "content": [text("B.")]},
            USER,
        ],
        {"system": "A.\n\nB.", "messages": [UTEXT]},
    ),
    "same-role turns merged": (
        [USER, {"role": "user", "content": "again"}],
        {"messages": [{"role": "user", "content": [text("Hi"), text("again")]}]},
    ),
    "leading assistant gets a user turn; prefill right-stripped": (
        [{"role": "assistant", "content": "Hello! "}],
        {
            "messages": [
                {"role": "user", "content": [text(".")]},
                {"role": "assistant", "content": [text("Hello!")]},
            ]
        },
    ),
    "images: data URL, http URL; audio dropped; blank text dropped": (
        [
            {
                "role": "user",
                "content": [
                    text("See"),
                    text("  "),
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://x/a.jpg", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "..", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "f"}},
                ],
            }
        ],
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        text("See"),
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/a.jpg"}},
                    ],
                }
            ]
        },
    ),
    "tool calls and results, ids kept, reasoning_content dropped": (
        [
            USER,
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "thought",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "t", "arguments": "{not json"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [text("12:00")]},
            {"role": "user", "content": "thanks"},
        ],
        {
            "messages": [
                UTEXT,
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "w",
                            "input": {"city": "Paris"},
                        },
                        {"type": "tool_use", "id": "call_2", "name": "t", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "12:00"},
                        text("thanks"),
                    ],
                },
            ]
        },
    ),
    "tool ids made Anthropic-safe the same way on both sides": (
        [
            USER,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "functions.w:0", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "functions.w:0", "content": ""},
        ],
        {
            "messages": [
                UTEXT,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "functions_w_0", "name": "w", "input": {}}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "functions_w_0"}],
                },
            ]
        },
    ),
}


@pytest.mark.parametrize("messages, expected", C2M_ROWS.values(), ids=C2M_ROWS.keys())
def test_chat_request_to_messages_messages(messages, expected):
    assert c2m(messages=messages) == {"model": "gpt-x", "max_tokens": 4096, **expected}


ANTHROPIC_TOOLS = [
    {"name": "w", "description": "Weather", "input_schema": WEATHER_SCHEMA},
    {"name": "t", "input_schema": {"type": "object", "properties": {}}},
]
C2M_CHAT_TOOLS = [
    CHAT_TOOLS[0],
    {"type": "function", "function": {"name": "t"}},
    {"type": "custom", "custom": {"name": "grammar"}},
]

C2M_PARAM_ROWS = {
    "tools, default schema, custom tools dropped": (
        {"tools": C2M_CHAT_TOOLS},
        {"tools": ANTHROPIC_TOOLS},
    ),
    "tool_choice auto": (
        {"tools": C2M_CHAT_TOOLS, "tool_choice": "auto"},
        {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "auto"}},
    ),
    "tool_choice required": (
        {"tools": C2M_CHAT_TOOLS, "tool_choice": "required"},
        {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "any"}},
    ),
    "tool_choice function": (
        {"tools": C2M_CHAT_TOOLS, "tool_choice": {"type": "function", "function": {"name": "w"}}},
        {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "tool", "name": "w"}},
    ),
    "tool_choice none": (
        {"tools": C2M_CHAT_TOOLS, "tool_choice": "none"},
        {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "none"}},
    ),
    "parallel_tool_calls false, no choice": (
        {"tools": C2M_CHAT_TOOLS, "parallel_tool_calls": False},
        {
            "tools": ANTHROPIC_TOOLS,
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        },
    ),
    "parallel_tool_calls false with required": (
        {"tools": C2M_CHAT_TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
        {
            "tools": ANTHROPIC_TOOLS,
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
    ),
    "tool_choice without tools dropped": ({"tool_choice": "required"}, {}),
    "max_completion_tokens wins": (
        {"max_completion_tokens": 300, "max_tokens": 200},
        {"max_tokens": 300},
    ),
    "max_tokens": ({"max_tokens": 200}, {"max_tokens": 200}),
    "max tokens invalid -> default": ({"max_tokens": -1}, {}),
    "temperature above 1 clamped": (
        {"temperature": 1.7, "top_p": 0.5},
        {"temperature": 1, "top_p": 0.5},
    ),
    "temperature below 0 clamped": ({"temperature": -0.5}, {"temperature": 0}),
    "stop string": ({"stop": "END"}, {"stop_sequences": ["END"]}),
    "stop list": ({"stop": ["END", "", " ", "X"]}, {"stop_sequences": ["END", "X"]}),
    "user -> metadata.user_id, stream": (
        {"user": "u-1", "stream": True, "stream_options": {"include_usage": True}},
        {"metadata": {"user_id": "u-1"}, "stream": True},
    ),
    "dropped parameters": (
        {
            "n": 2,
            "logprobs": True,
            "top_logprobs": 2,
            "response_format": {"type": "json_object"},
            "seed": 1,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.5,
            "logit_bias": {"1": 2},
            "store": True,
        },
        {},
    ),
    "reasoning_effort low": (
        {"reasoning_effort": "low", "temperature": 0.3, "top_p": 0.9},
        {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    ),
    "reasoning_effort medium": (
        {"reasoning_effort": "medium"},
        {"thinking": {"type": "enabled", "budget_tokens": 4096 - 1}},
    ),
    "reasoning_effort high, room enough": (
        {"reasoning_effort": "high", "max_tokens": 32000},
        {"max_tokens": 32000, "thinking": {"type": "enabled", "budget_tokens": 16384}},
    ),
    "reasoning_effort high, capped below max_tokens": (
        {"reasoning_effort": "high", "max_tokens": 8000},
        {"max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 7999}},
    ),
    "reasoning_effort, max_tokens too small: no thinking": (
        {"reasoning_effort": "low", "max_tokens": 1024, "temperature": 0.3},
        {"max_tokens": 1024, "temperature": 0.3},
    ),
    "reasoning_effort minimal: no thinking": ({"reasoning_effort": "minimal"}, {}),
    "reasoning_effort with a forced tool: no thinking": (
        {"reasoning_effort": "low", "tools": C2M_CHAT_TOOLS, "tool_choice": "required"},
        {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "any"}},
    ),
}


@pytest.mark.parametrize("params, expected", C2M_PARAM_ROWS.values(), ids=C2M_PARAM_ROWS.keys())
def test_chat_request_to_messages_params(params, expected):
    out = c2m(messages=[USER], **params)
    assert out == {"model": "gpt-x", "max_tokens": 4096, "messages": [UTEXT], **expected}


TOOL_LOOP = [
    USER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
]


@pytest.mark.parametrize(
    "messages, thinking",
    [
        (TOOL_LOOP, False),  # inside a tool-use loop: the assistant turn has no thinking block
        (TOOL_LOOP + [{"role": "user", "content": "next"}], False),  # results + text: same turn
        (TOOL_LOOP + [{"role": "assistant", "content": "Sunny."}, USER], True),  # loop over
        ([USER, {"role": "assistant", "content": "Sure"}], False),  # a prefill
    ],
    ids=["tool loop", "tool results and text", "after the loop", "prefill"],
)
def test_reasoning_effort_thinking_only_where_anthropic_accepts_it(messages, thinking):
    out = c2m(messages=messages, reasoning_effort="high", max_tokens=20000)
    assert ("thinking" in out) is thinking


@pytest.mark.parametrize(
    "body",
    [{"messages": []}, {"messages": [{"role": "system", "content": "x"}]}, {}],
    ids=["empty", "system only", "none"],
)
def test_no_turn_is_a_conversion_error(body):
    with pytest.raises(ConversionError) as caught:
        chat_request_to_messages(body, 100)
    assert caught.value.param == "messages"
    with pytest.raises(ConversionError):
        messages_request_to_chat({"system": "x", **body})


# ------------------------------------------------------------------ whole answers

ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 20,
    "cache_read_input_tokens": 100,
    "output_tokens": 5,
}
CHAT_OF_ANTHROPIC_USAGE = {
    "prompt_tokens": 130,
    "completion_tokens": 5,
    "total_tokens": 135,
    "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def anthropic_message(content, stop_reason="end_turn", usage=None):
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 3, "output_tokens": 4},
    }


@pytest.mark.parametrize(
    "stop_reason, finish_reason",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_messages_response_stop_reasons(stop_reason, finish_reason):
    out = messages_response_to_chat(anthropic_message([text("x")], stop_reason), "my-model")
    assert out["choices"][0]["finish_reason"] == finish_reason


def test_messages_response_to_chat():
    resp = anthropic_message(
        [
            {"type": "thinking", "thinking": "Let me see.", "signature": "s"},
            text("Checking "),
            text("now."),
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Pé"}},
            {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
        ],
        "tool_use",
        ANTHROPIC_USAGE,
    )
    out = messages_response_to_chat(resp, "my-model")
    assert isinstance(out.pop("created"), int)
    assert out == {
        "id": "msg_01",
        "object": "chat.completion",
        "model": "my-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking now.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Pé"}'},
                        }
                    ],
                    "reasoning_content": "Let me see.",
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": CHAT_OF_ANTHROPIC_USAGE,
    }


def test_messages_response_only_tools_has_null_content():
    resp = anthropic_message([{"type": "tool_use", "id": "t", "name": "n", "input": {}}])
    message = messages_response_to_chat(resp, "m")["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == "{}"


def chat_completion(message, finish_reason="stop", usage=None):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-upstream",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish_reason,
            },
            {"index": 1, "message": {"role": "assistant", "content": "ignored"}},
        ],
        "usage": usage,
    }


@pytest.mark.parametrize(
    "finish_reason, tools, stop_reason",
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("function_call", False, "tool_use"),
        ("content_filter", False, "refusal"),
        ("stop", True, "tool_use"),  # some upstreams say "stop" after tool calls
        (None, False, "end_turn"),
    ],
)
def test_chat_response_stop_reasons(finish_reason, tools, stop_reason):
    calls = [{"id": "c", "type": "function", "function": {"name": "n", "arguments": "{}"}}]
    message = {"content": "x", "tool_calls": calls if tools else None}
    out = chat_response_to_messages(chat_completion(message, finish_reason), "m")
    assert out["stop_reason"] == stop_reason


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_chat_response_to_messages(field):
    message = {
        "content": "Checking.",
        field: "Let me see.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"c":1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": "{bad"}},
        ],
    }
    usage = {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    out = chat_response_to_messages(chat_completion(message, "tool_calls", usage), "my-model")
    assert out == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "my-model",
        "content": [
            {"type": "thinking", "thinking": "Let me see.", "signature": ""},
            text("Checking."),
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"c": 1}},
            {"type": "tool_use", "id": "call_2", "name": "t", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 100,
            "output_tokens": 5,
        },
    }


def test_chat_response_without_usage_reports_zeros():
    out = chat_response_to_messages(chat_completion({"content": "x"}), "m")
    assert out["usage"] == {
        "input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }


# ------------------------------------------------------------------ chat stream -> Messages


def chunk(delta=None, finish_reason=None, usage=None, choices=True):
    out = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-upstream",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]
        if choices
        else [],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def call(index, id=None, name=None, arguments=None):
    entry = {"index": index, "function": {}}
    if id:
        entry.update(id=id, type="function")
        entry["function"]["name"] = name
    if arguments is not None:
        entry["function"]["arguments"] = arguments
    return chunk({"tool_calls": [entry]})


CHAT_USAGE = {
    "prompt_tokens": 130,
    "completion_tokens": 5,
    "total_tokens": 135,
    "prompt_tokens_details": {"cached_tokens": 100},
}


def run_chat_stream(chunks, message_id="msg_1"):
    stream = ChatToMessagesStream("my-model", message_id)
    events = []
    for item in chunks:
        events += stream.feed(item)
    events += stream.finish()
    assert stream.finish() == []
    return stream, events


def start(index, block):
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index, kind, value):
    field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": kind, field[kind]: value},
    }


def stop(index):
    return {"type": "content_block_stop", "index": index}


ZERO_USAGE = {
    "input_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 0,
}
MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "my-model",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": ZERO_USAGE,
    },
}


def message_end(stop_reason, usage=ZERO_USAGE):
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": usage,
        },
        {"type": "message_stop"},
    ]


TOOL_W = {"type": "tool_use", "id": "call_a", "name": "w", "input": {}}
TOOL_T = {"type": "tool_use", "id": "call_b", "name": "t", "input": {}}

CHAT_STREAM_ROWS = {
    "nothing at all": ([], [MESSAGE_START, *message_end("end_turn")]),
    "text, usage after finish_reason": (
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(usage=CHAT_USAGE, choices=False),
        ],
        [
            MESSAGE_START,
            start(0, {"type": "text", "text": ""}),
            delta(0, "text_delta", "Hel"),
            delta(0, "text_delta", "lo"),
            stop(0),
            *message_end(
                "end_turn",
                {
                    "input_tokens": 30,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 100,
                    "output_tokens": 5,
                },
            ),
        ],
    ),
    "reasoning then text": (
        [
            chunk({"reasoning_content": "Hm"}),
            chunk({"reasoning": "m."}),
            chunk({"content": "Yes"}),
            chunk({}, "length"),
        ],
        [
            MESSAGE_START,
            start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, "thinking_delta", "Hm"),
            delta(0, "thinking_delta", "m."),
            stop(0),
            start(1, {"type": "text", "text": ""}),
            delta(1, "text_delta", "Yes"),
            stop(1),
            *message_end("max_tokens"),
        ],
    ),
    "text then sequential tool calls": (
        [
            chunk({"content": "On it."}),
            call(0, "call_a", "w", ""),
            call(0, arguments='{"c":'),
            call(0, arguments='"P"}'),
            call(1, "call_b", "t", "{}"),
            chunk({}, "tool_calls"),
        ],
        [
            MESSAGE_START,
            start(0, {"type": "text", "text": ""}),
            delta(0, "text_delta", "On it."),
            stop(0),
            start(1, TOOL_W),
            delta(1, "input_json_delta", '{"c":'),
            delta(1, "input_json_delta", '"P"}'),
            stop(1),
            start(2, TOOL_T),
            delta(2, "input_json_delta", "{}"),
            stop(2),
            *message_end("tool_use"),
        ],
    ),
    "interleaved tool calls": (
        [
            call(0, "call_a", "w"),
            call(1, "call_b", "t"),
            call(0, arguments='{"c":'),
            call(1, arguments='{"x":'),
            call(0, arguments='"P"}'),
            call(1, arguments="1"),
            call(1, arguments="}"),
            chunk({}, "tool_calls"),
        ],
        [
            MESSAGE_START,
            start(0, TOOL_W),
            delta(0, "input_json_delta", '{"c":'),
            delta(0, "input_json_delta", '"P"}'),
            stop(0),
            start(1, TOOL_T),  # opens once call 0 is whole, with what it buffered
            delta(1, "input_json_delta", '{"x":'),
            delta(1, "input_json_delta", "1"),
            delta(1, "input_json_delta", "}"),
            stop(1),
            *message_end("tool_use"),
        ],
    ),
    "tool calls finished with stop, one without a name dropped": (
        [call(0, "call_a", "w", "{}"), call(1, "call_x", None, "{}"), chunk({}, "stop")],
        [
            MESSAGE_START,
            start(0, TOOL_W),
            delta(0, "input_json_delta", "{}"),
            stop(0),
            *message_end("tool_use"),
        ],
    ),
    "content_filter": (
        [chunk({"content": "x"}, "content_filter")],
        [
            MESSAGE_START,
            start(0, {"type": "text", "text": ""}),
            delta(0, "text_delta", "x"),
            stop(0),
            *message_end("refusal"),
        ],
    ),
}


@pytest.mark.parametrize("chunks, events", CHAT_STREAM_ROWS.values(), ids=CHAT_STREAM_ROWS.keys())
def test_chat_to_messages_stream(chunks, events):
    assert run_chat_stream(chunks)[1] == events


def test_chat_to_messages_stream_usage():
    stream, _ = run_chat_stream(
        [chunk({"content": "x"}, "stop"), chunk(usage=CHAT_USAGE, choices=False)]
    )
    assert stream.usage == Usage(input_tokens=130, output_tokens=5, cached_tokens=100)
    assert run_chat_stream([chunk({"content": "x"})])[0].usage is None
    assert stream.feed(chunk({"content": "late"})) == []


def sdk_accumulate(events):
    """The anthropic SDK's own accumulation, as MessageStream runs it."""
    snapshot, json_bufs = None, {}
    for raw in events:
        event = construct_type(type_=RawMessageStreamEvent, value=json.loads(json.dumps(raw)))
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
        build_events(event=event, message_snapshot=snapshot)
    return snapshot


INTERLEAVED = [
    chunk({"role": "assistant", "reasoning_content": "Two calls."}),
    chunk({"content": "Checking both."}),
    call(0, "call_a", "weather", ""),
    call(1, "call_b", "time", ""),
    call(0, arguments='{"city"'),
    call(1, arguments='{"tz":'),
    call(0, arguments=': "Paris'),
    call(1, arguments=' "UTC"'),
    call(0, arguments='"}'),
    call(1, arguments="}"),
    chunk({}, "tool_calls"),
    chunk(usage=CHAT_USAGE, choices=False),
]


def test_anthropic_sdk_accumulates_interleaved_tool_calls():
    message = sdk_accumulate(run_chat_stream(INTERLEAVED)[1])
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    thinking, answer, weather, clock = message.content
    assert thinking.thinking == "Two calls."
    assert answer.text == "Checking both."
    assert (weather.id, weather.name, weather.input) == ("call_a", "weather", {"city": "Paris"})
    assert (clock.id, clock.name, clock.input) == ("call_b", "time", {"tz": "UTC"})
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 30
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.output_tokens == 5


def test_anthropic_client_streams_the_converted_events():
    """End to end: the events framed as the relay frames them, read by messages.stream()."""
    _, events = run_chat_stream(INTERLEAVED)
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()

    def handler(request):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = Anthropic(
        api_key="test",
        base_url="http://relay.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with client.messages.stream(model="m", max_tokens=10, messages=[USER]) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert texts == ["Checking both."]
    assert [(b.type, getattr(b, "input", None)) for b in message.content][2:] == [
        ("tool_use", {"city": "Paris"}),
        ("tool_use", {"tz": "UTC"}),
    ]
    assert message.stop_reason == "tool_use"


def random_interleaving(rng, calls):
    """Fragments of several tool calls, each call in order, the calls shuffled together."""
    queues = []
    for index, (call_id, name, arguments) in enumerate(calls):
        cuts = sorted(rng.sample(range(1, len(arguments)), min(4, len(arguments) - 1)))
        pieces = [arguments[a:b] for a, b in zip([0, *cuts], [*cuts, len(arguments)], strict=True)]
        queues.append([call(index, call_id, name, "")] + [call(index, arguments=p) for p in pieces])
    out = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        out.append(queue.pop(0))
    return out


def test_anthropic_sdk_accumulates_any_interleaving():
    rng = random.Random(7)
    calls = [
        ("call_a", "a", json.dumps({"path": "src/x.py", "content": '}{ "}" '})),
        ("call_b", "b", json.dumps({"n": [1, 2, {"k": "v"}]})),
        ("call_c", "c", "{}"),
    ]
    for _ in range(200):
        chunks = [
            chunk({"content": "ok"}),
            *random_interleaving(rng, calls),
            chunk({}, "tool_calls"),
        ]
        _, events = run_chat_stream(chunks)
        open_block = None
        for event in events:  # sequential: one block open at a time, deltas only to it
            if event["type"] == "content_block_start":
                assert open_block is None
                open_block = event["index"]
            elif event["type"] == "content_block_delta":
                assert event["index"] == open_block
            elif event["type"] == "content_block_stop":
                assert event["index"] == open_block
                open_block = None
        message = sdk_accumulate(events)
        tools = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
        assert sorted(tools) == [(i, n, json.loads(a)) for i, n, a in calls]


# ------------------------------------------------------------------ Messages stream -> chat

ANTHROPIC_EVENTS = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-upstream",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 20,
                "cache_read_input_tokens": 100,
                "output_tokens": 1,
            },
        },
    },
    {"type": "ping"},
    start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, "thinking_delta", "Hmm."),
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "signature_delta", "signature": "s"},
    },
    stop(0),
    start(1, {"type": "text", "text": ""}),
    delta(1, "text_delta", "Checking."),
    stop(1),
    start(2, {"type": "tool_use", "id": "toolu_a", "name": "w", "input": {}}),
    delta(2, "input_json_delta", ""),
    delta(2, "input_json_delta", '{"city":'),
    delta(2, "input_json_delta", ' "Paris"}'),
    stop(2),
    start(3, {"type": "tool_use", "id": "toolu_b", "name": "t", "input": {}}),
    delta(3, "input_json_delta", "{}"),
    stop(3),
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 42},
    },
    {"type": "message_stop"},
]


def expected_chunk(delta, finish_reason=None, usage=True):
    out = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "my-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage:
        out["usage"] = None
    return out


def run_messages_stream(events, include_usage=True):
    stream = MessagesToChatStream("my-model", "chatcmpl-1", include_usage)
    stream.created = 0
    chunks = []
    for event in events:
        chunks += stream.feed(event)
    chunks += stream.finish()
    assert stream.finish() == []
    return stream, chunks


def test_messages_to_chat_stream():
    stream, chunks = run_messages_stream(ANTHROPIC_EVENTS)
    assert stream.done and stream.error is None
    assert chunks == [
        expected_chunk({"role": "assistant", "content": ""}),
        expected_chunk({"reasoning_content": "Hmm."}),
        expected_chunk({"content": "Checking."}),
        expected_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_a",
                        "type": "function",
                        "function": {"name": "w", "arguments": ""},
                    }
                ]
            }
        ),
        expected_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        expected_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
        expected_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_b",
                        "type": "function",
                        "function": {"name": "t", "arguments": ""},
                    }
                ]
            }
        ),
        expected_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        expected_chunk({}, "tool_calls"),
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "my-model",
            "choices": [],
            "usage": {
                "prompt_tokens": 130,
                "completion_tokens": 42,
                "total_tokens": 172,
                "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        },
    ]
    assert stream.usage == Usage(
        input_tokens=130, output_tokens=42, cached_tokens=100, cache_write_tokens=20
    )


@pytest.mark.parametrize(
    "stop_reason, finish_reason",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_messages_to_chat_stream_finish_reasons(stop_reason, finish_reason):
    events = [{"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {}}]
    _, chunks = run_messages_stream(events, include_usage=False)
    assert chunks == [expected_chunk({}, finish_reason, usage=False)]


def test_messages_to_chat_stream_error_event():
    stream = MessagesToChatStream("m", "c", include_usage=False)
    error = {"type": "overloaded_error", "message": "Overloaded"}
    assert stream.feed({"type": "error", "error": error}) == []
    assert stream.error == error
    assert not stream.done
    assert stream.finish() == []


def test_openai_sdk_accumulates_the_converted_chunks():
    _, chunks = run_messages_stream(ANTHROPIC_EVENTS)
    state = ChatCompletionStreamState()
    for item in chunks:
        value = json.loads(json.dumps(item))
        state.handle_chunk(openai_construct(type_=ChatCompletionChunk, value=value))
    completion = state.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    assert choice.message.reasoning_content == "Hmm."
    assert [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls] == [
        ("toolu_a", "w", '{"city": "Paris"}'),
        ("toolu_b", "t", "{}"),
    ]
    assert completion.usage.prompt_tokens == 130
    assert completion.usage.completion_tokens == 42


def test_openai_client_streams_the_converted_chunks():
    """End to end: the chunks framed as the relay frames them, read by chat.completions.stream()."""
    _, chunks = run_messages_stream(ANTHROPIC_EVENTS)
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def handler(request):
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=body.encode()
        )

    client = OpenAI(
        api_key="test",
        base_url="http://relay.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with client.chat.completions.stream(model="m", messages=[USER]) as stream:
        completion = stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Checking."
    assert [t.function.arguments for t in message.tool_calls] == ['{"city": "Paris"}', "{}"]
    assert completion.usage.total_tokens == 172


# ------------------------------------------------------------------ garbage in


ODD_VALUES = [None, "", "x", 0, -1, 1.5, True, 10**12, float("nan"), [], {}, [None], {"type": 1}]


def mutate(rng, value, rate=0.15):
    """A copy of a valid input with random nodes replaced by odd values, keys dropped and list
    items lost or repeated."""
    if rng.random() < rate:
        return rng.choice(ODD_VALUES)
    if isinstance(value, dict):
        return {k: mutate(rng, v, rate) for k, v in value.items() if rng.random() > rate / 3}
    if isinstance(value, list):
        items = [mutate(rng, v, rate) for v in value if rng.random() > rate / 3]
        if items and rng.random() < rate:
            items.append(rng.choice(items))
        return items
    return value


REQUESTS = [
    {"model": "m", "max_tokens": 9, **body, **params}
    for body, _ in M2C_ROWS.values()
    for params in [{}, {"tools": TOOLS, "tool_choice": {"type": "tool", "name": "w"}}]
] + [
    {"model": "m", "messages": messages, "tools": C2M_CHAT_TOOLS, "reasoning_effort": "low"}
    for messages, _ in C2M_ROWS.values()
]
ANSWERS = [
    anthropic_message(
        [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            text("x"),
            {"type": "tool_use", "id": "t", "name": "n", "input": {"a": 1}},
        ],
        "tool_use",
        ANTHROPIC_USAGE,
    ),
    chat_completion(
        {
            "content": "x",
            "reasoning_content": "r",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "n"}}],
        },
        "tool_calls",
        CHAT_USAGE,
    ),
]


def only_conversion_errors(convert, value):
    try:
        json.dumps(convert(value))
    except ConversionError:
        return 0
    return 1


def test_garbage_raises_only_conversion_error():
    rng = random.Random(1)
    converted = 0
    for _ in range(150):
        for body in REQUESTS:
            value = mutate(rng, body)
            converted += only_conversion_errors(messages_request_to_chat, value)
            converted += only_conversion_errors(lambda v: chat_request_to_messages(v, 99), value)
        for answer in ANSWERS:
            value = mutate(rng, answer)
            converted += only_conversion_errors(lambda v: messages_response_to_chat(v, "m"), value)
            converted += only_conversion_errors(lambda v: chat_response_to_messages(v, "m"), value)
        for chunks in [INTERLEAVED, *(rows[0] for rows in CHAT_STREAM_ROWS.values())]:
            stream = ChatToMessagesStream("m", "msg_1")
            events = [e for item in chunks for e in stream.feed(mutate(rng, item))]
            json.dumps(events + stream.finish())
        stream = MessagesToChatStream("m", "c", True)
        chunks = [c for event in ANTHROPIC_EVENTS for c in stream.feed(mutate(rng, event))]
        json.dumps(chunks + stream.finish())
    assert converted > 1000  # the mutations mostly leave something to convert


@pytest.mark.parametrize(
    "body",
    [
        {"messages": "hello"},
        {"messages": [None, 3, {"role": "user", "content": None}]},
        {"messages": [{"role": "user", "content": [None, "x", {"type": "alien"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]},
    ],
)
def test_nothing_usable_is_a_conversion_error(body):
    with pytest.raises(ConversionError):
        messages_request_to_chat(body)
    with pytest.raises(ConversionError):
        chat_request_to_messages(body, 100)


@pytest.mark.parametrize("body", [None, "x", [], 3])
def test_not_an_object_is_a_conversion_error(body):
    for convert in (
        messages_request_to_chat,
        lambda v: chat_request_to_messages(v, 1),
        lambda v: messages_response_to_chat(v, "m"),
        lambda v: chat_response_to_messages(v, "m"),
    ):
        with pytest.raises(ConversionError):
            convert(body)


def test_odd_shapes_are_dropped_or_defaulted():
    out = m2c(
        system=None,
        messages=[
            {"role": "user", "content": [text("ok"), {"type": "tool_result"}, {"type": "alien"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "input": "not a dict"}]},
        ],
        tools="nope",
        tool_choice=None,
        stop_sequences="END",
        metadata=[],
        temperature="hot",
    )
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "", "content": ""},
        {"role": "user", "content": "ok"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "", "type": "function", "function": {"name": "", "arguments": "{}"}}
            ],
        },
    ]
    assert set(out) == {"model", "max_tokens", "messages"}
