"""A real OpenAI-compatible upstream on 127.0.0.1 for tests (a pytest plugin).

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
- `.url`: the base URL to give a channel ("http://127.0.0.1:PORT/v1").
- `.requests`: every request received, in order, as `Received(method, path, headers, json)`;
  `headers` has lower-case names, so `r.headers["authorization"]` is the upstream key sent;
  `r.json["model"]` is the model name the upstream saw.
- `.configure(**behaviour)` changes how it answers (and `.reset()` back to the defaults):
  - `status=N`: answer every request with HTTP N and an OpenAI error body (`error_message=`).
  - `fail_times=K` (with `status=N`): the first K requests fail with N, then it answers normally.
  - `hangup_times=K`: the first K requests are read and the connection closed, unanswered.
  - `delay=S`: wait S seconds before answering (a connect-and-wait timeout for the relay).
  - `chunks=["Hel", "lo"]`: the content pieces of an answer (streamed one event each).
  - `stall_after=K, stall=S`: in a stream, go silent for S seconds after K content events.
  - `drop_after=K`: in a stream, cut the connection after K content events.
  - `chunk_interval=S`: sleep S seconds between stream events.
  - `crlf=True`: end the stream's lines with CRLF (SSE allows it) instead of LF.
  - `usage=False`: never send usage (no `usage` in JSON answers, no usage chunk in streams).
  - `prompt_tokens=P, completion_tokens=C`: the usage reported; `completion_tokens="max_tokens"`
    reports the request's max_tokens, so the cost equals the relay's hold exactly.
  - `usage_every_chunk=True`: in a stream, every content event also carries the running usage
    so far (completion_tokens 1, 2, ...), as upstreams with continuous usage stats do (vLLM's
    `continuous_usage_stats`); the final usage chunk still has the totals.
  - `extra_events=[b"[1, 2]", b"garbage"]`: in a stream, raw `data:` payloads sent as events
    after the content events (before the finish event).
  - `done=False`: end a stream cleanly (the HTTP body complete) but without `data: [DONE]`;
    `done=b"data:[DONE]\n\n"`: end it with these bytes instead.
  - `drop_after_done=True`: cut the connection right after `[DONE]`, before the body's end.
  - `body=b"[1, 2]"`: answer every non-stream request with HTTP 200 and these bytes as
    application/json (no usage).
- Streams are chunked SSE like OpenAI's: one `data: {...}` event per content piece, a finish
  event, the usage chunk (`choices: []`) only when the request asked for
  `stream_options.include_usage`, then `data: [DONE]`.
- `GET /v1/models` lists `models` (constructor argument, default ["gpt-4o-mini"]).
"""

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

DEFAULTS = {
    "status": 200,
    "fail_times": None,
    "hangup_times": 0,
    "error_message": "The upstream is having a bad day.",
    "delay": 0.0,
    "chunks": ["Hello", " from", " the", " fake", " upstream."],
    "stall_after": None,
    "stall": 0.0,
    "drop_after": None,
    "chunk_interval": 0.0,
    "crlf": False,
    "usage": True,
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "usage_every_chunk": False,
    "extra_events": [],
    "body": None,
    "done": True,
    "drop_after_done": False,
}


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

    def _next_fails(self) -> bool:
        """Whether this request gets the configured error status."""
        with self._lock:
            self._served += 1
            served = self._served
        b = self.behaviour
        if b["status"] == 200:
            return False
        return b["fail_times"] is None or served <= b["fail_times"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: FakeUpstream

    def setup(self):
        super().setup()
        # Small writes go out at once (no Nagle + delayed-ACK stalls of 40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # --- plumbing ---
    def _read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body):
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.upstream.requests.append(Received(self.command, self.path, headers, body))

    # --- endpoints ---
    def do_GET(self):
        self._record(None)
        if self.path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.upstream.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(
                404, {"error": {"message": "no such path", "type": "invalid_request_error"}}
            )

    def do_POST(self):
        body = self._read_json()
        self._record(body)
        up = self.upstream
        b = up.behaviour
        if b["hangup_times"]:
            b["hangup_times"] -= 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if b["delay"]:
            time.sleep(b["delay"])
        if up._next_fails():
            self._send_json(
                b["status"],
                {"error": {"message": b["error_message"], "type": "upstream", "code": None}},
            )
            return
        if body is None:
            self._send_json(
                400, {"error": {"message": "bad json", "type": "invalid_request_error"}}
            )
            return
        kind = {
            "/v1/chat/completions": "chat",
            "/v1/completions": "text",
            "/v1/embeddings": "embeddings",
        }.get(self.path)
        if kind is None:
            self._send_json(
                404, {"error": {"message": "no such path", "type": "invalid_request_error"}}
            )
        elif kind == "embeddings":
            self._embeddings(body)
        elif body.get("stream"):
            self._stream(kind, body)
        elif b["body"] is not None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(b["body"])))
            self.end_headers()
            self.wfile.write(b["body"])
        else:
            self._complete(kind, body)

    def _usage(self, body):
        b = self.upstream.behaviour
        completion = b["completion_tokens"]
        if completion == "max_tokens":
            completion = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        prompt = b["prompt_tokens"]
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _embeddings(self, body):
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
        if self.upstream.behaviour["usage"]:
            prompt = self.upstream.behaviour["prompt_tokens"]
            payload["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        self._send_json(200, payload)

    def _complete(self, kind, body):
        text = "".join(self.upstream.behaviour["chunks"])
        if kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            obj = "text_completion"
        payload = {
            "id": "cmpl-fake",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
        }
        if self.upstream.behaviour["usage"]:
            payload["usage"] = self._usage(body)
        self._send_json(200, payload)

    def _stream(self, kind, body):
        b = self.upstream.behaviour
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
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

        def piece(text):
            if kind == "chat":
                return {"index": 0, "delta": {"content": text}, "finish_reason": None}
            return {"index": 0, "text": text, "finish_reason": None}

        try:
            for n, text in enumerate(b["chunks"]):
                if b["drop_after"] is not None and n == b["drop_after"]:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if b["stall_after"] is not None and n == b["stall_after"]:
                    time.sleep(b["stall"])
                extra = {}
                if b["usage_every_chunk"]:
                    so_far = self._usage(body)
                    so_far["completion_tokens"] = n + 1
                    so_far["total_tokens"] = so_far["prompt_tokens"] + n + 1
                    extra["usage"] = so_far
                self._chunk(event([piece(text)], **extra))
                if b["chunk_interval"]:
                    time.sleep(b["chunk_interval"])
            for payload in b["extra_events"]:
                self._chunk(b"data: " + payload + b"\n\n")
            finish = (
                {"index": 0, "delta": {}, "finish_reason": "stop"}
                if kind == "chat"
                else {"index": 0, "text": "", "finish_reason": "stop"}
            )
            self._chunk(event([finish]))
            options = body.get("stream_options") or {}
            if b["usage"] and options.get("include_usage"):
                self._chunk(event([], usage=self._usage(body)))
            if b["done"]:
                self._chunk(b["done"] if isinstance(b["done"], bytes) else b"data: [DONE]\n\n")
            if b["drop_after_done"]:  # no terminating chunk: the body is cut short
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the relay hung up (a stall test): nothing to do
            self.close_connection = True

    def _chunk(self, data: bytes):
        if self.upstream.behaviour["crlf"]:
            data = data.replace(b"\n", b"\r\n")
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
