"""The benchmark's Python client (asyncio, raw HTTP/1.1 keep-alive): loopback only, bounded.

    client.py load    --port P [--key K] --concurrency C --seconds S    non-stream req/s, latency
    client.py streams --port P [--key K] --model M --count N            sequential 50-chunk streams
                      [--format chat|messages|responses]                (default chat)
    client.py hold    --port P [--key K] --streams N                    N concurrent long streams
                      --short-port P2                                   + short requests meanwhile

Each prints one JSON object on stdout. Used where wrk is missing and for what wrk cannot see
(time to first token, long concurrent streams).

A stream counts as complete only with status 200, its first content token seen and its
format's final event seen (chat `data: [DONE]`, Messages `event: message_stop`, Responses
`event: response.completed`), and no in-band error (chat: an `"error"` object; Messages
`event: error`; Responses `event: response.failed` / `response.incomplete` / `error`).
Anything else is an error.
"""

import argparse
import asyncio
import json
import statistics
import time

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


class Format:
    """A client format's stream request and what its events look like on the wire."""

    def __init__(self, path, body, token, end, errors, anthropic=False):
        self.path = path
        self.body = body  # model -> the stream request's body
        self.token = token  # bytes in the first event carrying a content token
        self.end = end  # bytes of the format's final event
        self.errors = errors  # bytes of an in-band error event
        self.anthropic = anthropic  # x-api-key and anthropic-version instead of Bearer


FORMATS = {
    "chat": Format(
        PATH,
        lambda model: {
            **CHAT,
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        token=b'"content":"tok',
        end=b"data: [DONE]",
        errors=(b'"error"',),
    ),
    "messages": Format(
        "/v1/messages",
        lambda model: {**CHAT, "model": model, "stream": True},
        token=b'"text":"tok',
        end=b"event: message_stop\n",
        errors=(b"event: error\n",),
        anthropic=True,
    ),
    "responses": Format(
        "/v1/responses",
        lambda model: {"model": model, "input": "Say hello.", "stream": True},
        token=b'"delta":"tok',
        end=b"event: response.completed\n",
        errors=(
            b"event: response.failed\n",
            b"event: response.incomplete\n",
            b"event: error\n",
        ),
    ),
}
CARRY = 64  # bytes kept from the previous piece: a marker split across two pieces is found


def build_request(body: dict, key: str, path: str = PATH, anthropic: bool = False) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    if anthropic:
        auth = f"x-api-key: {key}\r\n" if key else ""
        auth += "anthropic-version: 2023-06-01\r\n"
    else:
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{auth}"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def read_head(reader) -> tuple[int, dict]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers


async def iter_body(reader, headers: dict):
    """Yield the body's pieces as they arrive (content-length, chunked, or until EOF)."""
    if "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            yield (await reader.readexactly(size + 2))[:-2]
    else:
        while piece := await reader.read(65536):
            yield piece


class Connection:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def send(self, request: bytes):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(request)
        status, headers = await read_head(self.reader)
        return status, headers

    def done(self, headers: dict):
        if headers.get("connection", "").lower() == "close":
            self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def one_request(conn: Connection, request: bytes) -> bool:
    try:
        status, headers = await conn.send(request)
        body = b"".join([piece async for piece in iter_body(conn.reader, headers)])
        conn.done(headers)
        return status == 200 and b'"choices"' in body
    except (OSError, asyncio.IncompleteReadError, ValueError):
        conn.close()
        return False


async def load(port: int, key: str, concurrency: int, seconds: float) -> dict:
    request = build_request(CHAT, key)
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal errors
        conn = Connection(port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if await one_request(conn, request):
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "seconds": elapsed, **summary(latencies)}


def summary(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def stream_once(
    conn: Connection, request: bytes, timeout: float, fmt: Format = FORMATS["chat"]
) -> tuple:
    """(ttft, total, ok): time to the first content token and to the end of the stream; ok
    only when the format's final event came and no error event did."""
    started = time.perf_counter()
    ttft, ok, ended, failed, carry = None, False, False, False, b""
    token, end, errors = fmt.token, fmt.end, fmt.errors
    try:
        async with asyncio.timeout(timeout):
            status, headers = await conn.send(request)
            async for piece in iter_body(conn.reader, headers):
                window = carry + piece
                if ttft is None and token in window:
                    ttft = time.perf_counter() - started
                if not ended and end in window:
                    ended = True
                if any(error in window for error in errors):
                    failed = True
                carry = window[-CARRY:]
            ok = status == 200 and ended and not failed and ttft is not None
            conn.done(headers)
    except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
        conn.close()
    return ttft, time.perf_counter() - started, ok


async def streams(port: int, key: str, model: str, count: int, fmt: str = "chat") -> dict:
    form = FORMATS[fmt]
    request = build_request(form.body(model), key, form.path, form.anthropic)
    conn = Connection(port)
    ttfts, totals, errors = [], [], 0
    for _ in range(count):
        ttft, total, ok = await stream_once(conn, request, 30, form)
        if ok:
            ttfts.append(ttft)
            totals.append(total)
        else:
            errors += 1
    conn.close()
    return {
        "streams": len(totals),
        "errors": errors,
        "ttft_p50_ms": statistics.median(ttfts) * 1000 if ttfts else None,
        "total_p50_ms": statistics.median(totals) * 1000 if totals else None,
    }


async def hold(port: int, key: str, count: int, short_port: int, short_key: str) -> dict:
    """count concurrent bench-hold streams; one short request every 50 ms meanwhile."""
    body = {**CHAT, "model": "bench-hold", "stream": True}
    request = build_request(body, key)
    short_request = build_request(CHAT, short_key)
    finished = asyncio.Event()
    short_latencies, short_errors = [], 0

    async def one_stream():
        conn = Connection(port)
        try:
            return await stream_once(conn, request, timeout=90)
        finally:
            conn.close()

    async def short_requests():
        nonlocal short_errors
        conn = Connection(short_port)
        deadline = time.perf_counter() + 120
        while not finished.is_set() and time.perf_counter() < deadline:
            started = time.perf_counter()
            if await one_request(conn, short_request):
                short_latencies.append(time.perf_counter() - started)
            else:
                short_errors += 1
            await asyncio.sleep(0.05)
        conn.close()

    shorts = asyncio.ensure_future(short_requests())
    started = time.perf_counter()
    results = await asyncio.gather(*(one_stream() for _ in range(count)))
    elapsed = time.perf_counter() - started
    finished.set()
    await shorts
    totals = [total for _, total, ok in results if ok]
    return {
        "streams": count,
        "completed": len(totals),
        "errors": count - len(totals),
        "seconds": elapsed,
        "stream_total_p50_s": statistics.median(totals) if totals else None,
        "stream_total_max_s": max(totals) if totals else None,
        "short_requests": len(short_latencies),
        "short_errors": short_errors,
        "short": summary(short_latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["load", "streams", "hold"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--format", choices=sorted(FORMATS), default="chat")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--short-port", type=int)
    parser.add_argument("--short-key", default="")
    args = parser.parse_args()
    if args.mode == "load":
        result = load(args.port, args.key, args.concurrency, args.seconds)
    elif args.mode == "streams":
        result = streams(args.port, args.key, args.model, args.count, args.format)
    else:
        result = hold(
            args.port,
            args.key,
            args.streams,
            args.short_port or args.port,
            args.short_key or args.key,
        )
    print(json.dumps(asyncio.run(result)))


if __name__ == "__main__":
    main()
