"""The built-in mock upstream: what a channel of kind `mock` answers, in memory.

Every endpoint is answered in its own wire format, as the real services answer it (OpenAI's
chat/completions, completions, embeddings and Responses API; Anthropic's Messages API and
count_tokens), stream or not, with usage. The text is "Mock answer to: " and the first 200
characters of the last user message; the tokens are counted at about 4 characters a token
(the request's text for the prompt, the answer's for the completion), so billing shows real
numbers. A request's max_tokens (max_completion_tokens, max_output_tokens) cuts the answer
short, as a model would ("length", "max_tokens", "incomplete").

`respond()` is what `transports.MockTransport` sends back: a whole answer (`answer()`), or a
stream's events (`events()`) served by a `MockStream`, which `channels_app.upstream` reads as
it reads a urllib3 response (`read1`, `release_conn`, `close`).
"""

import base64
import hashlib
import json
import re
import struct
import time
import uuid

from billing.pricing import estimate_tokens

CHARS_PER_TOKEN = 4  # billing.pricing.estimate_tokens counts the same way
ECHO_CHARS = 200
EMBEDDING_DIMENSIONS = 16  # unless the request asks for `dimensions`
MAX_DIMENSIONS = 4096
STREAMS = ("chat/completions", "completions", "messages", "responses")
# Keys whose strings are no text a model reads (ids, names, media data).
NOT_TEXT = frozenset(
    {
        "model",
        "id",
        "type",
        "role",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "signature",
        "data",
        "url",
        "image_url",
        "media_type",
        "stream_options",
        "metadata",
        "user",
        "encoding_format",
    }
)
WORD = re.compile(r"\s*\S+")


class MockError(Exception):
    """A request the mock cannot answer (the relay validated it, so hardly ever)."""


# --- what is asked, what is answered ------------------------------------------------


def text_length(value, depth=0) -> int:
    """Characters of text in a request (every string but ids, names and media data)."""
    if isinstance(value, str):
        return len(value)
    if depth > 10:
        return 0
    if isinstance(value, list):
        return sum(text_length(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return sum(text_length(v, depth + 1) for k, v in value.items() if k not in NOT_TEXT)
    return 0


def _content_text(content) -> str:
    """The text of a message's content: a string, or the text of its parts or blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def last_user_text(endpoint: str, body: dict) -> str:
    """What the user said last: the prompt of a completion, the last user message otherwise."""
    if endpoint == "completions":
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = next((p for p in reversed(prompt) if isinstance(p, str)), "")
        return prompt if isinstance(prompt, str) else ""
    items = body.get("input") if endpoint == "responses" else body.get("messages")
    if isinstance(items, str):  # a Responses input given as one string
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            return _content_text(item.get("content"))
    return ""


def max_tokens(body: dict) -> int | None:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class Reply:
    """The answer to one request: its text, whether max_tokens cut it, and the token counts."""

    def __init__(self, endpoint: str, body: dict):
        said = " ".join(last_user_text(endpoint, body).split())
        text = f"Mock answer to: {said[:ECHO_CHARS] or '(no text)'}"
        limit = max_tokens(body)
        self.cut = limit is not None and estimate_tokens(len(text)) > limit
        self.text = text[: limit * CHARS_PER_TOKEN] if self.cut else text
        self.model = body.get("model") or "mock"
        self.input_tokens = estimate_tokens(text_length(body))
        self.output_tokens = estimate_tokens(len(self.text))
        self.id = uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def pieces(self) -> list[str]:
        """The text as a stream sends it: a word (with the space before it) per event."""
        return WORD.findall(self.text) or [self.text]


def respond(endpoint: str, raw: bytes, *, stream: bool, interval: float = 0.0):
    """(data, response) answering the request body `raw`: a whole answer's bytes and None,
    or a stream's first event and the `MockStream` of the rest. MockError: no answer."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise MockError("The body must be a JSON object.")
    if not stream:
        return json.dumps(answer(endpoint, body)).encode(), None
    response = MockStream(events(endpoint, body), interval)
    return response.read1(), response


def error_body(endpoint: str, message: str) -> bytes:
    """A refusal in the endpoint's own envelope."""
    error = {"type": "invalid_request_error", "message": message}
    if endpoint.startswith("messages"):
        return json.dumps({"type": "error", "error": error}).encode()
    return json.dumps({"error": {**error, "param": None, "code": None}}).encode()


# --- whole answers --------------------------------------------------------------------


def answer(endpoint: str, body: dict) -> dict:
    """The whole answer of `endpoint` to `body`, as the real service writes it."""
    if endpoint == "embeddings":
        return _embeddings(body)
    if endpoint == "messages/count_tokens":
        return {"input_tokens": estimate_tokens(text_length(body))}
    reply = Reply(endpoint, body)
    if endpoint == "chat/completions":
        message = {"role": "assistant", "content": reply.text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(reply)}
        return _completion(reply, "chat.completion", choice, _chat_usage(reply))
    if endpoint == "completions":
        choice = {"index": 0, "text": reply.text, "logprobs": None, "finish_reason": _finish(reply)}
        return _completion(reply, "text_completion", choice, _chat_usage(reply))
    if endpoint == "messages":
        return _message(reply, [{"type": "text", "text": reply.text}], _stop_reason(reply))
    if endpoint == "responses":
        return _response(reply, body, [_output_message(reply, "completed")])
    raise MockError(f"The mock channel does not serve /v1/{endpoint}.")


def _finish(reply: Reply) -> str:
    return "length" if reply.cut else "stop"


def _stop_reason(reply: Reply) -> str:
    return "max_tokens" if reply.cut else "end_turn"


def _chat_usage(reply: Reply) -> dict:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def _completion(reply: Reply, kind: str, choice: dict | None, usage: dict | None) -> dict:
    """A chat completion or a text completion (or one chunk of their streams)."""
    payload = {
        "id": ("chatcmpl-mock-" if kind.startswith("chat") else "cmpl-mock-") + reply.id,
        "object": kind,
        "created": reply.created,
        "model": reply.model,
        "choices": [choice] if choice is not None else [],
    }
    if usage is not None:
        payload["usage"] = usage
    return payload


def _embeddings(body: dict) -> dict:
    inputs = body.get("input")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    dimensions = body.get("dimensions")
    if not (isinstance(dimensions, int) and 0 < dimensions <= MAX_DIMENSIONS):
        dimensions = EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embedding(json.dumps(text), dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = estimate_tokens(text_length(inputs))
    return {
        "object": "list",
        "data": data,
        "model": body.get("model") or "mock",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on the text: the same input, the same embedding."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = []
    while len(raw) < dimensions:
        seed = hashlib.sha256(seed).digest()
        raw.extend(b / 127.5 - 1 for b in seed)
    raw = raw[:dimensions]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


def _message(reply: Reply, content: list, stop_reason: str | None, output_tokens=None) -> dict:
    return {
        "id": "msg_mock_" + reply.id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": reply.output_tokens if output_tokens is None else output_tokens,
        },
    }


def _output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _output_message(reply: Reply, status: str, text: str | None = None) -> dict:
    content = [_output_text(reply.text if text is None else text)] if status != "open" else []
    return {
        "id": "msg_mock_" + reply.id,
        "type": "message",
        "status": "in_progress" if status == "open" else status,
        "role": "assistant",
        "content": content,
    }


def _response(reply: Reply, body: dict, output: list, status: str | None = None) -> dict:
    """A Responses API response object; `status` None: completed, or incomplete if cut."""
    done = status is None
    if done:
        status = "incomplete" if reply.cut else "completed"
    usage = None
    if done:
        usage = {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": reply.input_tokens + reply.output_tokens,
        }
    return {
        "id": "resp_mock_" + reply.id,
        "object": "response",
        "created_at": reply.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and reply.cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": reply.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


# --- streams --------------------------------------------------------------------------


def events(endpoint: str, body: dict) -> list[bytes]:
    """The SSE events of `endpoint`'s stream answering `body`, each ending with a blank line."""
    reply = Reply(endpoint, body)
    if endpoint in ("chat/completions", "completions"):
        return _chat_events(endpoint, body, reply)
    if endpoint == "messages":
        return _messages_events(reply)
    if endpoint == "responses":
        return _responses_events(body, reply)
    raise MockError(f"The mock channel does not stream /v1/{endpoint}.")


def _data(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _named(payload: dict) -> bytes:
    return f"event: {payload['type']}\n".encode() + _data(payload)


def _chat_events(endpoint: str, body: dict, reply: Reply) -> list[bytes]:
    chat = endpoint == "chat/completions"
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(piece=None, finish=None):
        if chat:
            delta = {} if piece is None else {"content": piece}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
        return _data(_completion(reply, kind, choice, None))

    out = []
    if chat:
        role = {"role": "assistant", "content": "", "refusal": None}
        first = {"index": 0, "delta": role, "logprobs": None, "finish_reason": None}
        out.append(_data(_completion(reply, kind, first, None)))
    out += [chunk(piece) for piece in reply.pieces()]
    out.append(chunk(finish=_finish(reply)))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        out.append(_data(_completion(reply, kind, None, _chat_usage(reply))))
    out.append(b"data: [DONE]\n\n")
    return out


def _messages_events(reply: Reply) -> list[bytes]:
    start = _message(reply, [], None, output_tokens=1)
    block = {"type": "text", "text": ""}
    out = [
        _named({"type": "message_start", "message": start}),
        _named({"type": "content_block_start", "index": 0, "content_block": block}),
        _named({"type": "ping"}),
    ]
    for piece in reply.pieces():
        delta = {"type": "text_delta", "text": piece}
        out.append(_named({"type": "content_block_delta", "index": 0, "delta": delta}))
    out.append(_named({"type": "content_block_stop", "index": 0}))
    out.append(
        _named(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            }
        )
    )
    out.append(_named({"type": "message_stop"}))
    return out


def _responses_events(body: dict, reply: Reply) -> list[bytes]:
    out = []

    def add(name, **payload):
        out.append(_named({"type": name, "sequence_number": len(out), **payload}))

    started = _response(reply, body, [], "in_progress")
    add("response.created", response=started)
    add("response.in_progress", response=started)
    at = {"item_id": "msg_mock_" + reply.id, "output_index": 0}
    add("response.output_item.added", output_index=0, item=_output_message(reply, "open"))
    add("response.content_part.added", **at, content_index=0, part=_output_text(""))
    for piece in reply.pieces():
        add("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=[])
    add("response.output_text.done", **at, content_index=0, text=reply.text, logprobs=[])
    add("response.content_part.done", **at, content_index=0, part=_output_text(reply.text))
    status = "incomplete" if reply.cut else "completed"
    item = _output_message(reply, status)
    add("response.output_item.done", output_index=0, item=item)
    add("response." + status, response=_response(reply, body, [item]))
    return out


class MockStream:
    """A stream's events, read as `channels_app.upstream` reads a urllib3 response: `read1`
    returns the next event (or the rest of one longer than asked for), b"" at the end.

    Every event after the first is held back `interval` seconds.
    """

    status = 200
    headers = {"Content-Type": "text/event-stream"}

    def __init__(self, events: list[bytes], interval: float = 0.0):
        self._events = list(reversed(events))
        self._rest = b""
        self._interval = interval
        self._started = False
        self.closed = False

    def read1(self, amount: int = -1) -> bytes:
        if not self._rest:
            if self.closed or not self._events:
                return b""
            if self._started and self._interval:
                time.sleep(self._interval)
            self._started = True
            self._rest = self._events.pop()
        if amount is None or amount < 0:
            amount = len(self._rest)
        data, self._rest = self._rest[:amount], self._rest[amount:]
        return data

    def read(self, amount: int | None = None) -> bytes:
        if amount is not None:
            return self.read1(amount)
        parts = []
        while data := self.read1():
            parts.append(data)
        return b"".join(parts)

    def release_conn(self) -> None:
        """Nothing to give back: no connection."""

    def close(self) -> None:
        self.closed = True
        self._events.clear()
        self._rest = b""
