"""A fast fake OpenAI and Anthropic upstream for the benchmark: asyncio, HTTP/1.1 keep-alive,
loopback only.

POST .../chat/completions answers a fixed chat completion, or with "stream": true an SSE stream
of 50 content chunks (+ a usage chunk when the body asks for include_usage, + [DONE]).

POST .../messages answers like Anthropic's Messages API: a fixed message, or with "stream": true
`event: <type>\ndata: <json>\n\n` events: message_start (usage: input 12, output 1),
content_block_start, 50 content_block_delta text_deltas, content_block_stop, message_delta
(stop_reason, usage: output 50), message_stop. Headers are not checked.

The model name picks the pace of a stream (either path):

    bench          burst: all chunks at once
    bench-paced    5 ms between chunks
    bench-hold     50 chunks spread over HOLD_SECONDS (20 s)

Prints the port it listens on as its first line of output.
"""

import argparse
import asyncio
import json
import sys

CHUNKS = 50
PACED_GAP = 0.005
HOLD_SECONDS = 20.0
MAX_HEADER_BYTES = 64 * 1024

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    },
    separators=(",", ":"),
).encode()


def _event(payload: dict) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _chunk(delta: dict, finish=None) -> dict:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


FIRST = _event(_chunk({"role": "assistant", "content": ""}))
TOKEN = _event(_chunk({"content": "tok "}))
LAST = _event(_chunk({}, finish="stop"))
USAGE = _event(
    {
        **_chunk({}),
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS},
    }
)
DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
END = b"0\r\n\r\n"

MESSAGE = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "bench",
        "content": [{"type": "text", "text": "Hello from the bench upstream."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 8},
    },
    separators=(",", ":"),
).encode()


def _sse(kind: str, payload: dict) -> bytes:
    data = b"event: %s\ndata: %s\n\n" % (
        kind.encode(),
        json.dumps({"type": kind, **payload}, separators=(",", ":")).encode(),
    )
    return b"%x\r\n%s\r\n" % (len(data), data)


MESSAGE_START = _sse(
    "message_start",
    {
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "bench",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        }
    },
) + _sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
MESSAGE_TOKEN = _sse(
    "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "tok "}}
)
MESSAGE_END = (
    _sse("content_block_stop", {"index": 0})
    + _sse(
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": CHUNKS},
        },
    )
    + _sse("message_stop", {})
    + END
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)
JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self):
        self.buffer = b""
        self.transport = None
        self.busy = False  # a stream is being written; the next request waits in the buffer

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if len(self.buffer) > MAX_HEADER_BYTES + 1024 * 1024:
            self.transport.close()
            return
        if not self.busy:
            self.process()

    def process(self):
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            path = head.split(" ", 2)[1].split("?", 1)[0]
            if path.endswith("/chat/completions"):
                messages = False
            elif path.endswith("/messages"):
                messages = True
            else:
                self.transport.write(NOT_FOUND)
                continue
            if b'"stream":true' in body.replace(b" ", b""):
                self.busy = True
                asyncio.ensure_future(self.stream(body, messages))
                return
            answer = MESSAGE if messages else COMPLETION
            self.transport.write(JSON_HEAD % len(answer) + answer)

    async def stream(self, body: bytes, messages: bool = False):
        if b"bench-hold" in body:
            gap = HOLD_SECONDS / CHUNKS
        elif b"bench-paced" in body:
            gap = PACED_GAP
        else:
            gap = 0.0
        if messages:
            first, token, tail = MESSAGE_START, MESSAGE_TOKEN, MESSAGE_END
        else:
            first, token = FIRST, TOKEN
            tail = LAST + (USAGE if b"include_usage" in body else b"") + DONE
        write = self.transport.write
        write(STREAM_HEAD + first)
        for _ in range(CHUNKS):
            if gap:
                await asyncio.sleep(gap)
            if self.transport.is_closing():
                return
            write(token)
        write(tail)
        self.busy = False
        self.process()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
