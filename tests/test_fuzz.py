"""Bad input is never a 500: mutated bodies on every /v1 endpoint and format.

A seeded mutator (no dependency: the same seed sends the same bodies) takes a valid, feature-rich
body of each endpoint (system prompts, images, tools, tool calls and results, reasoning,
streaming or not) and breaks it: type swaps, nulls, huge numbers (1e20, 5e12, 10**30), NaN and
Infinity literals, lone surrogates (escaped `"\\ud800"` and raw `ED A0 80`), deep nesting, empty
arrays, unknown fields, dropped fields, truncated bodies and wrong content types. Each body is
posted to a live server whose group has an openai channel, an openai channel that serves the
Responses API itself and an anthropic channel, so every conversion runs. Every answer must be
a success or a 4xx in the client's envelope (OpenAI's, or Anthropic's on /v1/messages*), a
stream must end with its format's final or error event, and nothing may log an error.

FUZZ_SEED and FUZZ_BODIES change the seed and the count (defaults: 9 and 600, a few seconds).
The bodies that once found a 500 are replayed first, as regression cases.
"""

import copy
import json
import logging
import math
import os
import random
import traceback

import pytest
import requests

from tests.factories import make_channel
from tests.relay_setup import routed

pytestmark = pytest.mark.django_db(transaction=True)

SEED = int(os.environ.get("FUZZ_SEED", "9"))
BODIES = int(os.environ.get("FUZZ_BODIES", "600"))

OPENAI_MODEL, RESPONSES_MODEL, ANTHROPIC_MODEL = "gpt-4o-mini", "gpt-resp", "claude-x"
MODELS = (OPENAI_MODEL, RESPONSES_MODEL, ANTHROPIC_MODEL)
IMAGE = "data:image/png;base64,iVBORw0KGgo="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the weather?"},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather.", "parameters": SCHEMA},
        }
    ],
    "tool_choice": "auto",
    "max_tokens": 50,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": ["\n\n"],
    "user": "u1",
    "n": 1,
    "reasoning_effort": "low",
    "response_format": {"type": "text"},
    "stream_options": {"include_usage": True},
}
COMPLETIONS = {"prompt": "Say hi", "max_tokens": 20, "n": 1, "best_of": 1, "stop": "x"}
EMBEDDINGS = {"input": ["a", "b"], "encoding_format": "float"}
MESSAGES = {
    "max_tokens": 100,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the weather?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "P"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": [{"name": "get_weather", "description": "Weather.", "input_schema": SCHEMA}],
    "tool_choice": {"type": "auto"},
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 5,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u1"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}
COUNT_TOKENS = {k: v for k, v in MESSAGES.items() if k != "max_tokens"}
RESPONSES = {
    "instructions": "Be brief.",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is the weather?"},
                {"type": "input_image", "image_url": IMAGE},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Hm"}]},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "x"},
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": "done"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
    ],
    "tools": [
        {"type": "function", "name": "get_weather", "description": "W.", "parameters": SCHEMA},
        {"type": "custom", "name": "apply_patch", "description": "Patch."},
        {"type": "web_search"},
    ],
    "tool_choice": "auto",
    "max_output_tokens": 100,
    "reasoning": {"effort": "low", "summary": "auto"},
    "text": {"format": {"type": "text"}},
    "store": False,
    "temperature": 0.3,
    "parallel_tool_calls": True,
}
# endpoint -> (valid body without model and stream, whether it streams)
ENDPOINTS = {
    "chat/completions": (CHAT, True),
    "completions": (COMPLETIONS, True),
    "embeddings": (EMBEDDINGS, False),
    "messages": (MESSAGES, True),
    "messages/count_tokens": (COUNT_TOKENS, False),
    "responses": (RESPONSES, True),
}
# The kinds each endpoint reaches (completions and embeddings: openai channels only).
ENDPOINT_MODELS = {
    "completions": (OPENAI_MODEL, RESPONSES_MODEL),
    "embeddings": (OPENAI_MODEL, RESPONSES_MODEL),
}

SURROGATE = "\ud800"
NAN, INF = float("nan"), float("inf")
VALUES = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2.5,
    1e20,
    5e12,
    -5e12,
    10**30,
    -(10**30),
    NAN,
    INF,
    -INF,
    "",
    "x",
    SURROGATE,
    "a" + SURROGATE + "b",
    "\udc00\ud800",
    "\x00",
    [],
    {},
    [None],
    [1, 2],
    [[]],
    [{}],
    ["x"],
    {"x": 1},
    {"type": None},
    {"type": "text"},
    {"type": "text", "text": None},
    {"type": "image_url"},
    {"type": "tool_use"},
    {"type": "function"},
    {"type": "weird"},
    [{"type": "text", "text": 5}],
    {"role": "user"},
    {"role": "user", "content": None},
)
CONTENT_TYPES = (
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    None,
)
# Bodies that once answered a 500, replayed first: (endpoint, raw body).
REGRESSIONS = [
    # A part whose "type" is an object or an array: formats.media_parts looked it up in a
    # frozenset (TypeError: unhashable type), on every endpoint that holds for media parts.
    (
        "chat/completions",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
        b'[{"type": {"role": "user"}, "text": "hi"}]}]}',
    ),
    (
        "messages",
        b'{"model": "claude-x", "max_tokens": 5, "stream": true, "messages": '
        b'[{"role": "user", "content": [{"type": [{"a": 1}], "text": "hi"}]}]}',
    ),
    ("responses", b'{"model": "gpt-resp", "input": [{"type": {"type": "tool_use"}}]}'),
]


DEEP = "\x00deep\x00"  # written as 1,100 nested arrays (past the recursion limit) on the wire
DEEP_JSON = "[" * 1100 + "1" + "]" * 1100


def nested(depth: int):
    if depth > 500:
        return DEEP
    value = 1
    for n in range(depth):
        value = [value] if n % 2 else {"a": value}
    return value


def paths(value, at=()):
    """Every place in a JSON value (but deep inside nesting), as a tuple of keys and indexes."""
    yield at
    if len(at) > 12:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*at, index))


def get(value, path):
    for step in path:
        value = value[step]
    return value


def put(body, path, new):
    if not path:
        return new
    get(body, path[:-1])[path[-1]] = new
    return body


def mutate(rng: random.Random, body):
    """One mutation somewhere in body (changed in place where it can); returns the body."""
    path = rng.choice(list(paths(body)))
    node = get(body, path)
    kind = rng.randrange(8)
    if kind <= 2:  # a type swap, a null, a huge number, NaN, a surrogate...
        return put(body, path, copy.deepcopy(rng.choice(VALUES)))
    if kind == 3 and path:  # a field or an item dropped
        parent = get(body, path[:-1])
        del parent[path[-1]]
        return body
    if kind == 4 and isinstance(node, dict):  # an unknown field
        node[rng.choice(("zzz", "extra_field", "__proto__", ""))] = copy.deepcopy(
            rng.choice(VALUES)
        )
        return body
    if kind == 5 and isinstance(node, list):
        if rng.random() < 0.5:
            node.clear()  # an empty array
        elif node:
            node.append(copy.deepcopy(node[0]))  # an item repeated
        return body
    if kind == 6:  # deep nesting (past Python's recursion limit now and then)
        return put(body, path, nested(rng.choice((30, 300, 1100))))
    if isinstance(node, str):  # a string made huge or odd
        new = rng.choice((node * 2000, node + SURROGATE, "9" * 400, "-1", "1e400", "NaN"))
        return put(body, path, new)
    return put(body, path, copy.deepcopy(rng.choice(VALUES)))


def encode(rng: random.Random, body) -> bytes:
    """The body on the wire: JSON (NaN and Infinity literals allowed), now and then with raw
    surrogate bytes (ED A0 80), truncated, or not an object at all."""
    roll = rng.random()
    deep = json.dumps(DEEP)
    if roll < 0.3:
        text = json.dumps(body, ensure_ascii=False).replace(deep, DEEP_JSON)
        return text.encode("utf-8", "surrogatepass")  # lone surrogates as raw bytes
    raw = json.dumps(body).replace(deep, DEEP_JSON).encode()
    if roll < 0.36:
        return raw[: rng.randrange(len(raw))]
    if roll < 0.4:
        return rng.choice(
            (b"", b"null", b"[]", b"1e400", b'"x"', b"\xef\xbb\xbf" + raw, raw + b" junk", b"\xff")
        )
    return raw


def fuzzed_bodies(seed: int, count: int):
    """(endpoint, stream, raw body, content type) for count mutated bodies."""
    rng = random.Random(seed)
    names = sorted(ENDPOINTS)
    for n in range(count):
        endpoint = names[n % len(names)]
        base, streams = ENDPOINTS[endpoint]
        body = copy.deepcopy(base)
        body["model"] = rng.choice(ENDPOINT_MODELS.get(endpoint, MODELS))
        stream = streams and rng.random() < 0.5
        if stream:
            body["stream"] = True
        for _ in range(rng.choice((1, 1, 2, 3))):
            body = mutate(rng, body)
        content_type = "application/json"
        if rng.random() < 0.1:
            content_type = rng.choice(CONTENT_TYPES)
        yield endpoint, stream, encode(rng, body), content_type


@pytest.fixture
def fuzz_router(live_server, fake_upstream):
    """A token whose group has an openai channel, one that serves the Responses API itself
    and an anthropic channel, one model each; returns (base url, key)."""
    token, key, _ = routed(fake_upstream, model_names=OPENAI_MODEL)
    group = token.owner.group
    make_channel(
        "ch-resp",
        groups=[group],
        base_url=fake_upstream.url,
        model_names=RESPONSES_MODEL,
        responses_api=True,
        input_price=1,
        output_price=2,
    )
    make_channel(
        "ch-claude",
        groups=[group],
        base_url=fake_upstream.url,
        model_names=ANTHROPIC_MODEL,
        kind="anthropic",
        input_price=1,
        output_price=2,
    )
    return live_server.url, key


def problem(endpoint: str, response: requests.Response) -> str | None:
    """What is wrong with an answer, or None."""
    status = response.status_code
    if status >= 500:
        return f"HTTP {status}: {response.text[:300]}"
    kind = response.headers.get("Content-Type", "")
    if status >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {status} without a JSON envelope: {response.text[:200]}"
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            return f"HTTP {status} without an error object: {response.text[:200]}"
        if endpoint.startswith("messages") and body.get("type") != "error":
            return f"HTTP {status} not in Anthropic's envelope: {response.text[:200]}"
        return None
    if kind.startswith("text/event-stream"):
        text = response.text
        ends = {
            "messages": ("event: message_stop", "event: error"),
            "responses": ("event: response.completed", "event: response.failed"),
        }.get(endpoint, ("data: [DONE]",))
        if not any(end in text for end in ends):
            return f"a stream cut short: {text[-300:]!r}"
        return None
    try:
        response.json()
    except ValueError:
        return f"HTTP {status} that is not JSON: {response.text[:200]}"
    return None


def send(url: str, key: str, endpoint: str, raw: bytes, content_type: str | None):
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    if content_type:
        headers["Content-Type"] = content_type
    if endpoint.startswith("messages"):
        headers["anthropic-version"] = "2023-06-01"
    return requests.post(f"{url}/v1/{endpoint}", data=raw, headers=headers, timeout=20)


def where(records) -> str:
    """Where the first logged exception was raised (file:line and the exception)."""
    for record in records:
        if record.exc_info and record.exc_info[2] is not None:
            frame = traceback.extract_tb(record.exc_info[2])[-1]
            name = frame.filename.rsplit("/main/", 1)[-1]
            return f"\n  raised at {name}:{frame.lineno}: {record.exc_info[1]!r}"
    return ""


class ErrorLogs(logging.Handler):
    """Every ERROR record logged while the bodies are sent (a 500 logs one; so does a stream
    whose generator failed after its status was sent)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def error_logs():
    handler = ErrorLogs()
    logging.getLogger().addHandler(handler)
    yield handler.records
    logging.getLogger().removeHandler(handler)


@pytest.mark.parametrize(("endpoint", "raw"), REGRESSIONS)
def test_bodies_that_once_failed_answer_an_envelope(fuzz_router, error_logs, endpoint, raw):
    url, key = fuzz_router
    response = send(url, key, endpoint, raw, "application/json")
    assert problem(endpoint, response) is None, raw[:300]
    assert not error_logs, [r.getMessage() for r in error_logs]


def test_mutated_bodies_never_answer_a_5xx(fuzz_router, error_logs):
    url, key = fuzz_router
    found, statuses = [], {}
    for endpoint, stream, raw, content_type in fuzzed_bodies(SEED, BODIES):
        before = len(error_logs)
        response = send(url, key, endpoint, raw, content_type)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        wrong = problem(endpoint, response)
        if wrong is None and len(error_logs) > before:
            wrong = "logged: " + "; ".join(r.getMessage() for r in error_logs[before:])
        if wrong:
            wrong += where(error_logs[before:])
            found.append((endpoint, stream, raw[:400], wrong))
    print(f"fuzz: seed {SEED}, {BODIES} bodies, statuses {dict(sorted(statuses.items()))}")
    assert not found, "\n".join(f"{e} stream={s} {w}\n  body: {r!r}" for e, s, r, w in found)
    assert sum(statuses.values()) == BODIES
    assert statuses.get(200, 0) > BODIES // 10  # the mutations leave many bodies servable


def test_the_mutator_is_seeded():
    assert list(fuzzed_bodies(3, 30)) == list(fuzzed_bodies(3, 30))
    assert any(math.isnan(v) for v in VALUES if isinstance(v, float))
