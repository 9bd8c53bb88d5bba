"""The one module that talks HTTP to upstreams (urllib3: the pool under requests, without
requests' per-call overhead).

One PoolManager per process keeps connections to every upstream alive. Every call has the
channel's connect timeout and its read timeout, which urllib3 applies to each socket read: the
longest silence allowed between bytes, so a long stream is fine and a stalled one is not.
Library errors become `UpstreamError(message, status)`; status is what the client would be
told if this was the last attempt (502 connection failure, 504 timeout). Retrying is the
caller's decision (the relay walks its plan), with one exception: when a connection fails with
a protocol error before any response came back (typically a kept-alive connection the upstream
had closed meanwhile), `request()` sends the same request once more on a fresh connection. An
upstream that took the request and hung up without answering looks the same, so in that case
it may receive the request twice.
"""

import json
import re
import threading
import time

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

POOL_MAXSIZE = 1024  # kept-alive connections per upstream host, per process
CHUNK = 65536
KEY_PLACEHOLDER = "[channel key]"  # what the client and the logs see instead of the channel key

_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()


class UpstreamError(Exception):
    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.message = message
        self.status = status


def pool() -> urllib3.PoolManager:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                # block=False: a burst above maxsize opens extra connections, it never waits.
                _pool = urllib3.PoolManager(num_pools=64, maxsize=POOL_MAXSIZE, block=False)
    return _pool


BASE_HEADERS = {
    "Content-Type": "application/json",
    "Accept-Encoding": "identity",  # bytes pass through untouched
    "User-Agent": "airouter",
}


def request(
    method: str,
    url: str,
    *,
    headers: dict,
    body: bytes | None = None,
    connect_timeout: float,
    read_timeout: float,
):
    """Send one request with `headers` (the channel's transport built them, its key included)
    added to BASE_HEADERS; return the urllib3 response with its body not read yet.

    The caller reads it (`read_all()`, or `read_chunk()` for streams) and must call `release()`.
    """
    headers = {**BASE_HEADERS, **headers}
    try:
        try:
            return _send(method, url, headers, body, connect_timeout, read_timeout)
        except ProtocolError:
            # A kept-alive connection the upstream had closed meanwhile: it answered nothing,
            # so send once more on a fresh connection.
            return _send(method, url, headers, body, connect_timeout, read_timeout)
    except NewConnectionError as exc:  # (a subclass of ConnectTimeoutError: test it first)
        raise UpstreamError(f"connection failed: {_reason(exc)}") from exc
    except ConnectTimeoutError as exc:
        raise UpstreamError(f"timed out connecting after {connect_timeout:g}s", status=504) from exc
    except ReadTimeoutError as exc:
        raise UpstreamError(f"sent nothing for {read_timeout:g}s", status=504) from exc
    except (ProtocolError, HTTPError, OSError) as exc:
        raise UpstreamError(f"connection error: {_reason(exc)}") from exc


def _send(method, url, headers, body, connect_timeout, read_timeout):
    return pool().request(
        method,
        url,
        body=body,
        headers=headers,
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        retries=False,
        redirect=False,
        preload_content=False,
        decode_content=False,
    )


def read_all(
    response, read_timeout: float, *, total_timeout: float | None = None, limit: int | None = None
) -> bytes:
    """The whole body of a non-stream response, within `total_timeout` seconds from now (an
    upstream dripping a byte a second never stays silent long enough for the read timeout)
    and `limit` bytes (what a worker may hold in memory for one answer)."""
    length = response.headers.get("Content-Length", "")
    if limit is not None and length.isdigit() and int(length) > limit:
        raise UpstreamError(f"the answer is larger than {limit} bytes")
    if total_timeout is None and limit is None:
        return _read(response.read, None, read_timeout)
    deadline = time.monotonic() + total_timeout if total_timeout is not None else None
    parts, size = [], 0
    while chunk := _read(response.read1, CHUNK, read_timeout):
        parts.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            raise UpstreamError(f"the answer is larger than {limit} bytes")
        if deadline is not None and time.monotonic() > deadline:
            raise UpstreamError(f"the answer took longer than {total_timeout:g}s", status=504)
    return b"".join(parts)


def read_chunk(response, read_timeout: float) -> bytes:
    """Whatever bytes have arrived (at least one, or b"" at the end of the body)."""
    return _read(response.read1, CHUNK, read_timeout)


def _read(read, amount: int | None, read_timeout: float) -> bytes:
    """read(amount), its errors as UpstreamErrors (a plain call: it runs once per chunk)."""
    try:
        return read(amount)
    except ReadTimeoutError as exc:
        raise UpstreamError(f"sent nothing for {read_timeout:g}s", status=504) from exc
    except (ProtocolError, HTTPError, OSError) as exc:
        raise UpstreamError(f"connection dropped: {_reason(exc)}") from exc


def release(response, complete: bool) -> None:
    """Give the connection back to the pool if the body was read to its end, else drop it."""
    try:
        if complete:
            response.release_conn()
        else:
            response.close()
            response.release_conn()
    except Exception:  # noqa: S110  (a broken connection is simply not reused)
        pass


def _reason(exc: Exception) -> str:
    """What went wrong, without where: the message reaches API clients, and the upstream's
    address is the operator's business (the channel name says which one it was)."""
    plain = _plain_words(exc)
    if plain:
        return plain
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    # urllib3 prefixes the connection object's repr: keep the useful tail.
    text = text.split(": ", 1)[-1] if text.startswith("<") else text
    text = _RESOLVE.sub("could not resolve the upstream's host name", text)
    return _ADDRESS.sub("", text).strip() or type(exc).__name__


# What urllib3 and the socket layer say (a Python repr, such as "Connection broken:
# IncompleteRead(0 bytes read)"), in words a client can read.
_PLAIN = (
    ("IncompleteRead", "the upstream closed the connection mid-answer"),
    ("InvalidChunkLength", "the upstream closed the connection mid-answer"),
    ("RemoteDisconnected", "the upstream closed the connection without answering"),
    ("Connection reset", "the upstream reset the connection"),
    ("Broken pipe", "the upstream closed the connection while the request was sent"),
    ("Connection refused", "connection refused (nothing listens at the upstream's address)"),
)


def _plain_words(exc: Exception) -> str:
    seen, text = exc, ""
    while seen is not None and len(text) < 2000:  # the exception and its causes
        text += f" {seen!r} {getattr(seen, 'reason', '')!r} {seen.__class__.__name__}"
        seen = seen.__cause__ or seen.__context__
    return next((words for marker, words in _PLAIN if marker in text), "")


# urllib3's "Failed to resolve 'llm.internal' ([Errno -2] ...)" names the host
_RESOLVE = re.compile(r"Failed to resolve '[^']*'(?: \([^)]*\))?")
# "HTTPConnection(host='10.0.0.5', port=8000): " and "host='...', port=N" in urllib3 messages
_ADDRESS = re.compile(r"HTTPS?Connection(?:Pool)?\([^)]*\):\s*|\(?host='[^']*', port=\d+\)?,?\s*")


def describe(status: int, data: bytes, key: str | None) -> str:
    """What an upstream error answer said, in one line, with the channel key scrubbed."""
    message = ""
    try:
        parsed = json.loads(data)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
        elif isinstance(error, str):
            message = error
        elif isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    except ValueError:
        message = data[:200].decode("utf-8", "replace").strip()
    if key and key in message:
        message = message.replace(key, KEY_PLACEHOLDER)
    return f"HTTP {status}: {message[:300]}" if message else f"HTTP {status}"


def scrub(data: bytes, key: str | None) -> bytes:
    """An upstream's answer with every occurrence of the channel key replaced."""
    if not key:
        return data
    return data.replace(key.encode(), KEY_PLACEHOLDER.encode())
