"""A real upstream on 127.0.0.1 for tests (a pytest plugin): it speaks OpenAI's chat/completions,
completions, embeddings and Responses API, and Anthropic's Messages API, as the real services do
on the wire.

Fixtures
--------
`fake_upstream`
    A running `FakeUpstream` (ThreadingHTTPServer on 127.0.0.1, port 0), stopped after the test.
`fake_upstream_factory`
    Call it to start more of them: `fake_upstream_factory()` -> FakeUpstream.
`fresh_routing_table` (autouse)
    Drops the relay's cached routing table before each test (a flushed test database sends no
    signals).

FakeUpstream
------------
- `.url`: the base URL to give a channel ("http://127.0.0.1:PORT/v1"), OpenAI or Anthropic
  (an Anthropic SDK takes the URL without the "/v1").
- `.requests`: every request received, in order, as `Received(method, path, headers, json)`;
  `path` keeps the query string ("/v1/messages?beta=true"); `headers` has lower-case names, so
  `r.headers["authorization"]` (OpenAI) or `r.headers["x-api-key"]` (Anthropic) is the upstream
  key sent; `r.json["model"]` is the model name the upstream saw.
- `.last_json(path_prefix=None)`: the JSON body of the last request (of the last one whose path
  starts with `path_prefix`, e.g. "/v1/messages"); raises LookupError when there is none.
- `.configure(**behaviour)` changes how it answers (and `.reset()` back to the defaults).
  Unless said otherwise a behaviour applies to every endpoint where it makes sense:
  - `status=N`: answer every POST with HTTP N and an error body (`error_message=`): OpenAI's
    `{"error": {"message", "type": "upstream", "code": null}}`, or on /v1/messages* Anthropic's
    `{"type": "error", "error": {"type", "message"}}` whose type follows the status: 400
    invalid_request_error, 401 authentication_error, 402 billing_error, 403 permission_error,
    404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error,
    504 timeout_error, 529 overloaded_error, any other api_error.
  - `fail_times=K` (with `status=N`): the first K requests fail with N, then it answers normally.
  - `retry_after="2"` (with `status=N`): those error answers carry `Retry-After: 2` (the value
    sent as given: seconds, or an HTTP date).
  - `hangup_times=K`: the first K requests are read and the connection closed, unanswered.
  - `delay=S`: wait S seconds before answering (a connect-and-wait timeout for the relay).
  - `chunks=["Hel", "lo"]`: the text pieces of an answer (streamed one event each).
  - `thinking="Let me think."`: the model reasons first: chat -> `message.reasoning_content` /
    `delta.reasoning_content` events before the text; Anthropic -> a first `thinking` block
    (signature "fake-signature"; streamed as thinking_delta events, then a signature_delta);
    Responses -> a first `reasoning` item with one summary_text (reasoning_summary_text.delta
    events). A stream splits the thinking in two pieces.
  - `tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]`:
    the answer is these tool calls instead of the text (`arguments` a dict, or a JSON string
    sent as is; a dict is sent as compact JSON, `{"city":"Paris"}`): chat -> `message.tool_calls`
    / `delta.tool_calls` (a first fragment with id, type and name and arguments "", then the
    arguments in two fragments), finish_reason "tool_calls"; Anthropic -> `tool_use` blocks
    (`input` the dict; streamed as two input_json_delta events), stop_reason "tool_use";
    Responses -> `function_call` items (id "fc_fake_<i>", call_id the configured id; streamed
    as two function_call_arguments.delta events).
  - `tool_calls_until_result=True`: with `tool_calls`, answer a request that already carries a
    tool result (a chat `tool` message, an Anthropic `tool_result` block, a Responses
    `function_call_output`) with the text instead: one agent round trip.
  - `text_with_tools=True`: with `tool_calls`, the text (`chunks`, when not empty) comes first,
    then the calls.
  - `interleave_tools=True`: in a chat stream, the fragments of the tool calls alternate
    (index 0, 1, 0, 1 ...) as some upstreams send.
  - `stop_reason=R`: force how the answer ends. R is a chat finish_reason ("stop", "length",
    "tool_calls", "content_filter"), sent as is on chat and completions; Anthropic gets
    end_turn, max_tokens, tool_use, refusal; Responses gets status "completed" for stop and
    tool_calls, "incomplete" for length (incomplete_details.reason "max_output_tokens"; the
    message item "incomplete"; the stream ends with response.incomplete) and content_filter
    (reason "content_filter"). Any other R is sent verbatim everywhere (e.g. "pause_turn").
    Default: "stop" (end_turn), or "tool_calls" (tool_use) when there are tool calls.
  - `stall_after=K, stall=S`: in a stream, go silent for S seconds after K content events.
  - `drop_after=K`: in a stream, cut the connection after K content events.
  - `chunk_interval=S`: sleep S seconds after each content event of a stream.
    (Content events: text, reasoning and tool-argument pieces: chat/completions chunks,
    Anthropic content_block_delta text/thinking/input_json deltas, Responses *.delta events.)
  - `crlf=True`: end the stream's lines with CRLF (SSE allows it) instead of LF.
  - `usage=False`: never send usage (no `usage` in JSON answers, none in Anthropic's
    message_start / message_delta, `usage: null` in Responses, no usage chunk in streams).
  - `prompt_tokens=P, completion_tokens=C`: the usage reported. P is always ALL the input
    tokens, C all the output tokens (reasoning included). `completion_tokens="max_tokens"`
    reports the request's max_tokens (max_completion_tokens; Anthropic max_tokens; Responses
    max_output_tokens), so the cost equals the relay's hold exactly.
  - `cached_tokens=N, cache_write_tokens=M, reasoning_tokens=R` (default None: not reported),
    each in its format's own terms: chat/completions `prompt_tokens_details` {cached_tokens: N,
    cache_write_tokens: M (only when set)} with prompt_tokens P INCLUDING them, and
    `completion_tokens_details.reasoning_tokens` R; Responses `input_tokens_details`
    {cached_tokens: N, cache_write_tokens: M} and `output_tokens_details.reasoning_tokens` R
    (always there, 0 when unset) with input_tokens P including them; Anthropic
    cache_read_input_tokens N, cache_creation_input_tokens M (always there, 0 when unset) and
    input_tokens P - N - M (Anthropic's input_tokens EXCLUDES cache reads and writes), and
    `output_tokens_details.thinking_tokens` R (only when set).
  - `usage_every_chunk=True`: in a chat/completions stream, every content event also carries
    the running usage so far (completion_tokens 1, 2, ...), as upstreams with continuous usage
    stats do (vLLM's `continuous_usage_stats`); the final usage chunk still has the totals.
  - `extra_events=[b"[1, 2]", b"garbage"]`: in a stream, raw `data:` payloads sent as events
    after the content events (before the finish event; Anthropic: before message_delta;
    Responses: before response.completed).
  - `done=False`: end a stream cleanly (the HTTP body complete) but without its final event
    (`data: [DONE]`; Anthropic message_stop; Responses response.completed / .incomplete);
    `done=b"data:[DONE]\n\n"`: end it with these bytes instead.
  - `drop_after_done=True`: cut the connection right after that final event, before the body's
    end.
  - `body=b"[1, 2]"`: answer every non-stream POST (any endpoint) with HTTP 200 and these bytes
    as application/json (no usage).
  - `answer_status=204` (or 302, ...): answer every non-stream POST with that status and an
    empty body (a 3xx also has `Location: /login`).
  - `content_type="text/plain"`: the Content-Type of every 200 answer (JSON or stream).
  - `drip=S`: send a non-stream answer one byte every S seconds (an upstream that never goes
    silent long enough for a read timeout).
  - `content_encoding="gzip"`: every 200 answer (JSON or stream) is gzip-compressed and sent
    with `Content-Encoding: gzip`, whatever the request's Accept-Encoding said.
- Streams are chunked SSE, as the real services send them:
  - chat/completions: one `data: {...}` event per content piece, a finish event, the usage
    chunk (`choices: []`) only when the request asked for `stream_options.include_usage`,
    then `data: [DONE]`.
  - Anthropic (`event: <type>\\ndata: <json>\\n\\n`): message_start (usage with the input
    counts and output_tokens 1), ping, for each block content_block_start /
    content_block_delta ... / content_block_stop, message_delta {delta {stop_reason,
    stop_sequence}, usage {output_tokens}}, message_stop.
  - Responses (`event: <type>\\ndata: <json>\\n\\n`, every payload with a sequence_number):
    response.created, response.in_progress, then per output item response.output_item.added,
    (message) response.content_part.added, response.output_text.delta per piece,
    response.output_text.done, response.content_part.done, (function call)
    response.function_call_arguments.delta / .done, (reasoning)
    response.reasoning_summary_part.added, response.reasoning_summary_text.delta / .done,
    response.reasoning_summary_part.done, then response.output_item.done; last
    response.completed (or response.incomplete) with the usage. No `[DONE]`.
- Endpoints (POST, JSON bodies; a body that is not a JSON object -> 400; an unknown path -> 404):
  - `/v1/chat/completions`, `/v1/completions`: id "cmpl-fake", the model echoed.
  - `/v1/embeddings`: one 3-number embedding per input.
  - `/v1/messages` (Anthropic): a message {id "msg_fake", type "message", role "assistant",
    model (echoed), content [...], stop_reason, stop_sequence null, usage}. Checked as
    Anthropic does (after `hangup_times`, `delay` and `status`; errors in Anthropic's
    envelope, as is a body that is not a JSON object): no key (neither `x-api-key` nor
    `Authorization: Bearer ...`, which the anthropic SDK 2.x sends) -> 401
    authentication_error ("x-api-key header is required"); no `anthropic-version` header -> 400;
    no `model`, `messages` or `max_tokens` in the body -> 400 invalid_request_error
    ("max_tokens: Field required").
  - `/v1/messages/count_tokens` (Anthropic, same header checks; needs model and messages):
    `{"input_tokens": P}`, P the configured `prompt_tokens` (not derived from the body).
  - `/v1/responses` (OpenAI Responses): a response {id "resp_fake", object "response", status
    "completed", model, output [items], usage {input_tokens, input_tokens_details,
    output_tokens, output_tokens_details, total_tokens}, ...}; the text is a message item
    (id "msg_fake") with one output_text part.
- `GET /v1/models` lists `models` (constructor argument, default ["gpt-4o-mini"]); asked with
  an `anthropic-version` header it answers in Anthropic's shape ({data: [{type "model", id,
  display_name, created_at}], has_more, first_id, last_id}).
"""

import gzip
import json
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

DEFAULTS = {
    "status": 200,
    "fail_times": None,
    "retry_after": None,
    "hangup_times": 0,
    "error_message": "The upstream is having a bad day.",
    "delay": 0.0,
    "chunks": ["Hello", " from", " the", " fake", " upstream."],
    "thinking": None,
    "tool_calls": None,
    "tool_calls_until_result": False,
    "text_with_tools": False,
    "interleave_tools": False,
    "stop_reason": None,
    "stall_after": None,
    "stall": 0.0,
    "drop_after": None,
    "chunk_interval": 0.0,
    "crlf": False,
    "usage": True,
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "cached_tokens": None,
    "cache_write_tokens": None,
    "reasoning_tokens": None,
    "usage_every_chunk": False,
    "extra_events": [],
    "body": None,
    "done": True,
    "drop_after_done": False,
    "answer_status": None,
    "content_type": None,
    "content_encoding": None,
    "drip": 0.0,
}

ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/responses": "responses",
}

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# A chat finish_reason -> Anthropic's stop_reason.
ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

# A chat finish_reason -> Responses' incomplete_details.reason (the others complete).
RESPONSES_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

SIGNATURE = "fake-signature"


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    json: dict | None


class FakeUpstream:
    def __init__(self, models=("gpt-4o-mini",)):
        self.models = list(models)
        self.requests: list[Received] = []
        self.behaviour = dict(DEFAULTS)
        self._served = 0
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"upstream": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def configure(self, **behaviour):
        unknown = set(behaviour) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown behaviour: {sorted(unknown)}")
        self.behaviour.update(behaviour)
        return self

    def reset(self):
        self.behaviour = dict(DEFAULTS)
        self.requests.clear()
        self._served = 0

    def last_json(self, path_prefix=None):
        """The body of the last request (whose path starts with `path_prefix`, if given)."""
        for received in reversed(self.requests):
            if path_prefix is None or received.path.startswith(path_prefix):
                return received.json
        seen = [r.path for r in self.requests]
        raise LookupError(f"no request to {path_prefix or 'any path'}; received {seen}")

    def _next_fails(self) -> bool:
        """Whether this request gets the configured error status."""
        with self._lock:
            self._served += 1
            served = self._served
        b = self.behaviour
        if b["status"] == 200:
            return False
        return b["fail_times"] is None or served <= b["fail_times"]


def _has_tool_result(body: dict) -> bool:
    """Whether a request carries a tool's result (chat, Messages or Responses)."""
    for item in [*(body.get("messages") or []), *(body.get("input") or [])]:
        if not isinstance(item, dict):
            continue
        if item.get("role") == "tool" or item.get("type") in (
            "function_call_output",
            "custom_tool_call_output",
        ):
            return True
        content = item.get("content")
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") == "tool_result" for part in content
        ):
            return True
    return False


def _halves(text: str) -> list[str]:
    """`text` in two pieces (one when it is a single character, none when empty)."""
    if len(text) < 2:
        return [text] if text else []
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


def _arguments(call) -> str:
    """A configured tool call's arguments as the JSON string OpenAI sends."""
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, separators=(",", ":"))


def _input(call) -> dict:
    """A configured tool call's arguments as Anthropic's `input` object."""
    arguments = call.get("arguments", {})
    return json.loads(arguments) if isinstance(arguments, str) else arguments


def _sse(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: FakeUpstream

    def setup(self):
        super().setup()
        # Small writes go out at once (no Nagle + delayed-ACK stalls of 40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._gzip = None

    def log_message(self, format, *args):  # keep test output quiet
        pass

    _b = None  # this request's behaviour, when it differs from the configured one

    @property
    def b(self) -> dict:
        return self._b or self.upstream.behaviour

    # --- plumbing ---
    def _read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send_json(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_ok(self, data: bytes):
        """A 200 answer, with the configured Content-Type and Content-Encoding."""
        self.send_response(200)
        self.send_header("Content-Type", self.b["content_type"] or "application/json")
        if self.b["content_encoding"] == "gzip":
            data = gzip.compress(data)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.b["drip"]:
            try:
                for byte in data:  # a byte at a time: never silent for long
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(self.b["drip"])
            except OSError:  # the relay gave up
                self.close_connection = True
            return
        self.wfile.write(data)

    def _send_empty(self, status):
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "/login")
        if status not in (204, 304):  # these must have no Content-Length
            self.send_header("Content-Length", "0")
        self.end_headers()

    def _openai_error(self, status, message, type_="invalid_request_error"):
        self._send_json(status, {"error": {"message": message, "type": type_}})

    def _anthropic_error(self, status, message, headers=None):
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        payload = {"type": "error", "error": {"type": kind, "message": message}}
        self._send_json(status, payload, headers)

    def _record(self, body):
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.upstream.requests.append(Received(self.command, self.path, headers, body))

    # --- endpoints ---
    def do_GET(self):
        self._record(None)
        if urlsplit(self.path).path != "/v1/models":
            self._openai_error(404, "no such path")
        elif "anthropic-version" in self.headers:
            data = [
                {
                    "type": "model",
                    "id": m,
                    "display_name": m,
                    "created_at": "2025-01-01T00:00:00Z",
                }
                for m in self.upstream.models
            ]
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            self._send_json(
                200, {"data": data, "has_more": False, "first_id": first, "last_id": last}
            )
        else:
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.upstream.models]
            self._send_json(200, {"object": "list", "data": data})

    def do_POST(self):
        self._b = None  # a kept-alive connection serves several requests with one handler
        body = self._read_json()
        self._record(body)
        up = self.upstream
        b = self.b
        route = urlsplit(self.path).path
        anthropic = route.startswith("/v1/messages")
        error = self._anthropic_error if anthropic else self._openai_error
        if b["hangup_times"]:
            b["hangup_times"] -= 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if b["delay"]:
            time.sleep(b["delay"])
        if up._next_fails():
            headers = {"Retry-After": b["retry_after"]} if b["retry_after"] is not None else None
            if anthropic:
                self._anthropic_error(b["status"], b["error_message"], headers)
            else:
                self._send_json(
                    b["status"],
                    {"error": {"message": b["error_message"], "type": "upstream", "code": None}},
                    headers,
                )
            return
        if not isinstance(body, dict):
            error(400, "bad json")
            return
        kind = ROUTES.get(route)
        if kind is None:
            error(404, "no such path")
            return
        if b["tool_calls_until_result"] and _has_tool_result(body):
            self._b = dict(b, tool_calls=None)  # the agent ran the tool: now answer in text
        if anthropic:
            problem = self._anthropic_problem(kind, body)
            if problem:
                error(*problem)
                return
        if body.get("stream") and kind in ("chat", "text", "messages", "responses"):
            self._begin_stream()
            stream = {
                "chat": self._chat_stream,
                "text": self._chat_stream,
                "messages": self._messages_stream,
                "responses": self._responses_stream,
            }[kind]
            self._play(*stream(kind, body))
        elif b["answer_status"] is not None:
            self._send_empty(b["answer_status"])
        elif b["body"] is not None:
            self._send_ok(b["body"])
        else:
            answer = {
                "chat": self._chat,
                "text": self._chat,
                "embeddings": self._embeddings,
                "messages": self._message,
                "count_tokens": self._count_tokens,
                "responses": self._response,
            }[kind]
            self._send_ok(json.dumps(answer(kind, body)).encode())

    def _anthropic_problem(self, kind, body):
        """Anthropic's checks of a request: (status, message), or None."""
        bearer = (self.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        if not self.headers.get("x-api-key") and not bearer:
            return 401, "x-api-key header is required"
        if not self.headers.get("anthropic-version"):
            return 400, "anthropic-version: header is required"
        required = ("model", "messages") + (("max_tokens",) if kind == "messages" else ())
        for field in required:
            if field not in body:
                return 400, f"{field}: Field required"
        return None

    # --- what to answer ---
    def _text_pieces(self) -> list[str]:
        """The text pieces of the answer (none when tool calls replace the text)."""
        b = self.b
        if b["tool_calls"] and not b["text_with_tools"]:
            return []
        return list(b["chunks"])

    def _finish(self) -> str:
        """The chat finish_reason of the answer."""
        if self.b["stop_reason"]:
            return self.b["stop_reason"]
        return "tool_calls" if self.b["tool_calls"] else "stop"

    def _counts(self, body):
        """(all input, output) tokens."""
        b = self.b
        completion = b["completion_tokens"]
        if completion == "max_tokens":
            completion = (
                body.get("max_tokens")
                or body.get("max_completion_tokens")
                or body.get("max_output_tokens")
                or 0
            )
        return b["prompt_tokens"], completion

    def _usage(self, body):
        """Usage as chat/completions report it."""
        b = self.b
        prompt, completion = self._counts(body)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if b["cached_tokens"] is not None or b["cache_write_tokens"] is not None:
            details = {"cached_tokens": b["cached_tokens"] or 0}
            if b["cache_write_tokens"] is not None:
                details["cache_write_tokens"] = b["cache_write_tokens"]
            usage["prompt_tokens_details"] = details
        if b["reasoning_tokens"] is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": b["reasoning_tokens"]}
        return usage

    def _anthropic_usage(self, body, output_tokens=None):
        b = self.b
        prompt, completion = self._counts(body)
        read, written = b["cached_tokens"] or 0, b["cache_write_tokens"] or 0
        usage = {
            "input_tokens": prompt - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": completion if output_tokens is None else output_tokens,
        }
        if b["reasoning_tokens"] is not None and output_tokens is None:
            usage["output_tokens_details"] = {"thinking_tokens": b["reasoning_tokens"]}
        return usage

    def _responses_usage(self, body):
        b = self.b
        prompt, completion = self._counts(body)
        return {
            "input_tokens": prompt,
            "input_tokens_details": {
                "cached_tokens": b["cached_tokens"] or 0,
                "cache_write_tokens": b["cache_write_tokens"] or 0,
            },
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": b["reasoning_tokens"] or 0},
            "total_tokens": prompt + completion,
        }

    # --- OpenAI: chat/completions, completions, embeddings ---
    def _embeddings(self, kind, body):
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        payload = {
            "object": "list",
            "model": body.get("model"),
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                for i in range(count)
            ],
        }
        if self.b["usage"]:
            prompt = self.b["prompt_tokens"]
            payload["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        return payload

    def _chat(self, kind, body):
        b = self.b
        text = "".join(self._text_pieces())
        if kind == "chat":
            message = {"role": "assistant", "content": text}
            if b["thinking"]:
                message["reasoning_content"] = b["thinking"]
            if b["tool_calls"]:
                message["content"] = text or None
                message["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": _arguments(call)},
                    }
                    for call in b["tool_calls"]
                ]
            choice = {"index": 0, "message": message, "finish_reason": self._finish()}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": self._finish(), "logprobs": None}
            obj = "text_completion"
        payload = {
            "id": "cmpl-fake",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
        }
        if b["usage"]:
            payload["usage"] = self._usage(body)
        return payload

    def _chat_tool_fragments(self) -> list[dict]:
        """The `delta.tool_calls` entries of a chat stream, in sending order."""
        per_call = []
        for index, call in enumerate(self.b["tool_calls"] or []):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            rest = [
                {"index": index, "function": {"arguments": piece}}
                for piece in _halves(_arguments(call))
            ]
            per_call.append([head, *rest])
        if not self.b["interleave_tools"]:
            return [fragment for fragments in per_call for fragment in fragments]
        longest = max((len(fragments) for fragments in per_call), default=0)
        return [
            fragments[i] for i in range(longest) for fragments in per_call if i < len(fragments)
        ]

    def _chat_stream(self, kind, body):
        """(events, tail, final) of a chat/completions stream."""
        b = self.b
        model = body.get("model")
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def event(choices, **extra):
            payload = {
                "id": "cmpl-fake",
                "object": obj,
                "created": 1700000000,
                "model": model,
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        if kind == "chat":
            deltas = [{"reasoning_content": piece} for piece in _halves(b["thinking"] or "")]
            deltas += [{"content": text} for text in self._text_pieces()]
            deltas += [{"tool_calls": [fragment]} for fragment in self._chat_tool_fragments()]
            pieces = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
            finish = {"index": 0, "delta": {}, "finish_reason": self._finish()}
        else:
            pieces = [
                {"index": 0, "text": text, "finish_reason": None} for text in self._text_pieces()
            ]
            finish = {"index": 0, "text": "", "finish_reason": self._finish()}
        events = []
        for n, piece in enumerate(pieces):
            extra = {}
            if b["usage_every_chunk"]:
                so_far = self._usage(body)
                so_far["completion_tokens"] = n + 1
                so_far["total_tokens"] = so_far["prompt_tokens"] + n + 1
                extra["usage"] = so_far
            events.append((event([piece], **extra), True))
        tail = [event([finish])]
        options = body.get("stream_options") or {}
        if b["usage"] and options.get("include_usage"):
            tail.append(event([], usage=self._usage(body)))
        return events, tail, b"data: [DONE]\n\n"

    # --- Anthropic: messages, count_tokens ---
    def _count_tokens(self, kind, body):
        return {"input_tokens": self.b["prompt_tokens"]}

    def _stop_reason(self) -> str:
        finish = self._finish()
        return ANTHROPIC_STOP.get(finish, finish)

    def _message(self, kind, body):
        b = self.b
        content = []
        if b["thinking"]:
            content.append({"type": "thinking", "thinking": b["thinking"], "signature": SIGNATURE})
        text = "".join(self._text_pieces())
        if text:
            content.append({"type": "text", "text": text})
        for call in b["tool_calls"] or []:
            content.append(
                {"type": "tool_use", "id": call["id"], "name": call["name"], "input": _input(call)}
            )
        payload = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": self._stop_reason(),
            "stop_sequence": None,
        }
        if b["usage"]:
            payload["usage"] = self._anthropic_usage(body)
        return payload

    def _messages_stream(self, kind, body):
        """(events, tail, final) of an Anthropic Messages stream."""
        b = self.b
        start = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if b["usage"]:
            start["usage"] = self._anthropic_usage(body, output_tokens=1)
        events = [
            (_sse("message_start", {"type": "message_start", "message": start}), False),
            (_sse("ping", {"type": "ping"}), False),
        ]
        blocks = []  # (content_block at its start, [(delta, is_content)])
        if b["thinking"]:
            deltas = [
                ({"type": "thinking_delta", "thinking": piece}, True)
                for piece in _halves(b["thinking"])
            ]
            deltas.append(({"type": "signature_delta", "signature": SIGNATURE}, False))
            blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
        if self._text_pieces():
            deltas = [({"type": "text_delta", "text": t}, True) for t in self._text_pieces()]
            blocks.append(({"type": "text", "text": ""}, deltas))
        for call in b["tool_calls"] or []:
            start_block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
            deltas = [
                ({"type": "input_json_delta", "partial_json": piece}, True)
                for piece in _halves(json.dumps(_input(call), separators=(",", ":")))
            ]
            blocks.append((start_block, deltas))
        for index, (block, deltas) in enumerate(blocks):
            events.append(
                (
                    _sse(
                        "content_block_start",
                        {"type": "content_block_start", "index": index, "content_block": block},
                    ),
                    False,
                )
            )
            for delta, is_content in deltas:
                payload = {"type": "content_block_delta", "index": index, "delta": delta}
                events.append((_sse("content_block_delta", payload), is_content))
            events.append(
                (_sse("content_block_stop", {"type": "content_block_stop", "index": index}), False)
            )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
        }
        if b["usage"]:
            delta["usage"] = {"output_tokens": self._counts(body)[1]}
        tail = [_sse("message_delta", delta)]
        return events, tail, _sse("message_stop", {"type": "message_stop"})

    # --- OpenAI Responses ---
    def _response_status(self):
        """(status, incomplete_details) of a Responses answer."""
        reason = RESPONSES_INCOMPLETE.get(self._finish())
        if reason:
            return "incomplete", {"reason": reason}
        return "completed", None

    def _response_items(self) -> list[dict]:
        """The finished output items of a Responses answer."""
        b = self.b
        status, _ = self._response_status()
        items = []
        if b["thinking"]:
            items.append(
                {
                    "id": "rs_fake",
                    "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": b["thinking"]}],
                }
            )
        if self._text_pieces():
            items.append(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [self._output_text("".join(self._text_pieces()))],
                }
            )
        for i, call in enumerate(b["tool_calls"] or []):
            items.append(
                {
                    "id": f"fc_fake_{i}",
                    "type": "function_call",
                    "status": "completed",
                    "arguments": _arguments(call),
                    "call_id": call["id"],
                    "name": call["name"],
                }
            )
        return items

    @staticmethod
    def _output_text(text):
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _response_object(self, body, status, output, usage, incomplete=None):
        tools = []
        for tool in body.get("tools") or []:
            if isinstance(tool, dict) and tool.get("type") == "function":
                tool = {"strict": True, "description": None, "parameters": None, **tool}
            tools.append(tool)
        return {
            "id": "resp_fake",
            "object": "response",
            "created_at": 1700000000,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model"),
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools,
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    def _response(self, kind, body):
        status, incomplete = self._response_status()
        usage = self._responses_usage(body) if self.b["usage"] else None
        return self._response_object(body, status, self._response_items(), usage, incomplete)

    def _responses_stream(self, kind, body):
        """(events, tail, final) of a Responses stream."""
        b = self.b
        events = []
        sequence = iter(range(1_000_000))

        def add(name, is_content=False, **payload):
            payload = {"type": name, "sequence_number": next(sequence), **payload}
            events.append((_sse(name, payload), is_content))

        started = self._response_object(body, "in_progress", [], None)
        add("response.created", response=started)
        add("response.in_progress", response=started)
        for index, item in enumerate(self._response_items()):
            at = {"item_id": item["id"], "output_index": index}
            if item["type"] == "reasoning":
                add("response.output_item.added", output_index=index, item={**item, "summary": []})
                part = {"type": "summary_text", "text": ""}
                add("response.reasoning_summary_part.added", **at, summary_index=0, part=part)
                for piece in _halves(b["thinking"]):
                    add(
                        "response.reasoning_summary_text.delta",
                        True,
                        **at,
                        summary_index=0,
                        delta=piece,
                    )
                add(
                    "response.reasoning_summary_text.done",
                    **at,
                    summary_index=0,
                    text=b["thinking"],
                )
                part = {"type": "summary_text", "text": b["thinking"]}
                add("response.reasoning_summary_part.done", **at, summary_index=0, part=part)
            elif item["type"] == "message":
                opened = {**item, "status": "in_progress", "content": []}
                add("response.output_item.added", output_index=index, item=opened)
                at["content_index"] = 0
                add("response.content_part.added", **at, part=self._output_text(""))
                for piece in self._text_pieces():
                    add("response.output_text.delta", True, **at, delta=piece, logprobs=[])
                text = item["content"][0]["text"]
                add("response.output_text.done", **at, text=text, logprobs=[])
                add("response.content_part.done", **at, part=self._output_text(text))
            else:  # function_call
                opened = {**item, "status": "in_progress", "arguments": ""}
                add("response.output_item.added", output_index=index, item=opened)
                for piece in _halves(item["arguments"]):
                    add("response.function_call_arguments.delta", True, **at, delta=piece)
                add("response.function_call_arguments.done", **at, arguments=item["arguments"])
            add("response.output_item.done", output_index=index, item=item)
        final = self._response(kind, body)
        name = "response.completed" if final["status"] == "completed" else "response.incomplete"
        payload = {"type": name, "sequence_number": next(sequence), "response": final}
        return events, [], _sse(name, payload)

    # --- streaming ---
    def _begin_stream(self):
        self._gzip = None  # the handler lives as long as its (keep-alive) connection
        self.send_response(200)
        self.send_header("Content-Type", self.b["content_type"] or "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if self.b["content_encoding"] == "gzip":
            self.send_header("Content-Encoding", "gzip")
            self._gzip = zlib.compressobj(wbits=31)  # a gzip member, flushed per event
        self.end_headers()

    def _cut(self):
        """Close the connection mid-body."""
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _play(self, events, tail, final):
        """Send a stream: `events` [(bytes, is_content)], extra_events, `tail`, then `final`
        (the event that `done` replaces)."""
        b = self.b
        try:
            sent = 0  # content events so far
            for data, is_content in events:
                if is_content:
                    if b["drop_after"] is not None and sent == b["drop_after"]:
                        self._cut()
                        return
                    if b["stall_after"] is not None and sent == b["stall_after"]:
                        time.sleep(b["stall"])
                self._chunk(data)
                if is_content:
                    sent += 1
                    if b["chunk_interval"]:
                        time.sleep(b["chunk_interval"])
            for payload in b["extra_events"]:
                self._chunk(b"data: " + payload + b"\n\n")
            for data in tail:
                self._chunk(data)
            if b["done"]:
                self._chunk(b["done"] if isinstance(b["done"], bytes) else final)
            if b["drop_after_done"]:  # no terminating chunk: the body is cut short
                self._cut()
                return
            if self._gzip is not None:
                rest = self._gzip.flush()
                self.wfile.write(f"{len(rest):x}\r\n".encode() + rest + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the relay hung up (a stall test): nothing to do
            self.close_connection = True

    def _chunk(self, data: bytes):
        if self.b["crlf"]:
            data = data.replace(b"\n", b"\r\n")
        if self._gzip is not None:
            data = self._gzip.compress(data) + self._gzip.flush(zlib.Z_SYNC_FLUSH)
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture
def fake_upstream_factory():
    started = []

    def start(models=("gpt-4o-mini",)):
        upstream = FakeUpstream(models).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.stop()


@pytest.fixture
def fake_upstream(fake_upstream_factory):
    return fake_upstream_factory()


@pytest.fixture(autouse=True)
def fresh_routing_table():
    from channels_app import routing_table

    routing_table.invalidate()
    yield
    routing_table.invalidate()
