"""The gunicorn worker of gunicorn.conf.py: gunicorn's threaded worker (gthread) with two changes.

1. No thread ever waits for a request's head (request line and headers). gthread gives a
   connection to a thread as soon as its first byte comes; the thread then waits for the rest
   of the head with no time limit, so 2,400 connections sending one header line every 3 s
   held every thread and normal requests timed out ("slowloris"). Here a thread reads what has
   come without blocking and, while the head is not whole, hands the connection back to the
   event loop, which gives it to a thread again when more comes. A head not complete
   HEADER_TIMEOUT seconds after its first byte is answered 408 and closed; one that grows past
   MAX_HEAD_BYTES, 431 (414 when that is all request line). Connections waiting for their head
   cost a socket each, no thread, and do not count in `worker_connections`: up to
   MAX_WAITING_HEADS of them wait beside it (the oldest is dropped for a newer one past that),
   so they never keep the worker from accepting.
2. Once the head is in, the connection gets a timeout of CLIENT_TIMEOUT seconds for each read
   of the body and each write of the answer: a client that stops reading a stream (its window
   full, the process suspended) would otherwise hold a thread and its request's hold forever;
   now the write fails, the stream closes and settles as a client disconnect.
3. The errors gunicorn answers itself, before the application sees a request (a request line
   or headers too large, a malformed request, a bad chunked body), and the two above are in the
   relay's JSON envelope on /v1 (Anthropic's on /v1/messages), not an HTML page.

TLS, HTTP/2 cleartext and the PROXY protocol read the connection before the head: with any of
them on, heads are read by the threads as gthread does (the errors are still JSON).
"""

import contextlib
import errno
import json
import os
import resource
import selectors
import socket
import threading
import time
from functools import partial
from urllib.parse import urlsplit

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# Seconds a connection may take to send its whole head (Apache's mod_reqtimeout allows 20-40,
# nginx 60; a real client sends it in one go).
HEADER_TIMEOUT = float(os.environ.get("GUNICORN_HEADER_TIMEOUT", "10"))
# Seconds a client may take to send the next bytes of its body or to take the next bytes of
# the answer, once its head is in (a stream whose client stopped reading ends then).
CLIENT_TIMEOUT = float(os.environ.get("GUNICORN_CLIENT_TIMEOUT", "120"))
# A head larger than this is refused (431) without waiting for its end: larger than any real
# client's (nginx refuses past 32 KiB), small enough that thousands of waiting heads stay cheap.
MAX_HEAD_BYTES = 64 * 1024
# Connections a worker lets wait for their head, beside worker_connections (and fewer when
# the open-files limit is low: see waiting_room()).
MAX_WAITING_HEADS = int(os.environ.get("GUNICORN_MAX_WAITING_HEADS", "4096"))
READ_SIZE = 65536

_REASONS = {408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}
_MESSAGES = {
    408: "The request's head did not arrive in time.",
    414: "The request line is too long.",
    431: "The request's headers are too large.",
}
WAIT_FOR_HEAD = object()  # a thread's answer: give the connection back to the event loop
_current = threading.local()  # the head a worker thread is answering, for its errors


def head_complete(data: bytes | bytearray) -> bool:
    """Whether a head has ended (CRLF CRLF; a bare LF LF too, which the parser then refuses)."""
    return b"\r\n\r\n" in data or b"\n\n" in data


def request_path(line: bytes) -> str | None:
    """The path of a request line (`POST /v1/messages?beta=true HTTP/1.1`), if there is one."""
    parts = line.split(b" ")
    if len(parts) < 2:
        return None
    target = parts[1].decode("latin-1")
    if target.startswith("/"):
        return target.split("?", 1)[0]
    if "://" in target:  # absolute form
        return urlsplit(target).path or "/"
    return None


def error_body(status: int, message: str, path: str | None) -> bytes:
    """The relay's envelope for an error gunicorn answers: Anthropic's on /v1/messages*,
    OpenAI's elsewhere."""
    if path is not None and path.startswith("/v1/messages"):
        kind = "api_error" if status >= 500 else "invalid_request_error"
        if status == 408:
            kind = "timeout_error"
        elif status in (413, 431):
            kind = "request_too_large"
        body = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return json.dumps(body).encode()


def write_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's util.write_error, but the JSON envelope on /v1 paths and on requests whose
    path could not be read; other paths (the admin, the pages) keep gunicorn's HTML page."""
    path = request_path((getattr(_current, "head", b"") or b"").split(b"\r\n", 1)[0])
    if path is not None and not (path == "/v1" or path.startswith("/v1/")):
        return _html_error(sock, status, reason, message)
    body = error_body(status, message or reason, path)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


_html_error = util.write_error


def refuse(sock, head: bytes | bytearray, status: int) -> None:
    """Answer 408, 414 or 431 to a connection whose head never came whole (it is then closed)."""
    _current.head = bytes(head)
    try:
        write_error(sock, status, _REASONS[status], _MESSAGES[status])
    except OSError:
        pass  # gone already
    finally:
        _current.head = b""


def waiting_room(worker_connections: int) -> int:
    """How many connections may wait for their head: MAX_WAITING_HEADS, or what the open-files
    limit leaves beside worker_connections (each may also hold an upstream socket)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_WAITING_HEADS
    return max(16, min(MAX_WAITING_HEADS, soft - 2 * worker_connections - 256))


class HeadFirstWorker(ThreadWorker):
    """gthread whose threads never wait for a head (see the module's docstring)."""

    def init_process(self):
        cfg = self.cfg
        # Each waiting head is an open file: take the whole hard limit (a service manager's
        # default soft limit of 1,024 would shrink the waiting room to a handful).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.head_first = (
            not cfg.is_ssl
            and cfg.http2_cleartext == "off"
            and getattr(cfg, "proxy_protocol", "off") in ("off", None, False)
        )
        # Connections waiting in the event loop for the rest of their head, oldest first
        # (a dict: removing one is cheap); each has a `head_deadline`.
        self.waiting: dict = {}
        self.waiting_room = waiting_room(cfg.worker_connections)
        self.next_expiry = 0.0
        util.write_error = write_error  # this worker process only: base.Worker.handle_error
        super().init_process()

    # --- a worker thread ---
    def handle(self, conn):
        """Read what has come of the head without blocking; serve the request once it is
        whole, give the connection back to the event loop (WAIT_FOR_HEAD) while it is not."""
        if not self.head_first:
            return super().handle(conn)
        head = getattr(conn, "head", None)
        if head is None:
            head = conn.head = bytearray()
        if not head:
            conn.head_deadline = time.monotonic() + HEADER_TIMEOUT
            if conn.parser is not None:  # what a kept-alive connection already read ahead
                head += conn.parser.unreader.take_buffered()
        try:
            if not head_complete(head):
                outcome = self._read_head(conn, head)
                if outcome is not None:
                    return outcome
            conn.init()  # the parser, which reads the head from its buffer first
            raw = bytes(head)
            head.clear()
            conn.parser.unreader.unread(raw)
            _current.head = raw
            return super().handle(conn)
        finally:
            _current.head = b""

    def handle_request(self, req, conn):
        # gthread made the socket blocking without a timeout: bound the body's reads and the
        # answer's writes (a client that stops reading a stream).
        conn.sock.settimeout(CLIENT_TIMEOUT)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:  # (gthread would log it as a socket error, with a traceback)
            self.log.info("Dropped a client silent for %gs mid-request", CLIENT_TIMEOUT)
            raise ConnectionResetError(errno.ECONNRESET, "the client timed out") from None

    def _read_head(self, conn, head):
        """One read without blocking: None when the head is now complete, WAIT_FOR_HEAD when
        more must come, False when the connection ends (closed, or its head is too large)."""
        try:
            data = conn.sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return WAIT_FOR_HEAD
        except OSError:
            return False
        if not data:
            return False
        head += data
        if head_complete(head):
            return None
        if len(head) > MAX_HEAD_BYTES:
            status = 431 if b"\r\n" in head else 414
            refuse(conn.sock, head, status)
            return False
        return WAIT_FOR_HEAD

    # --- the event loop (main thread) ---
    def finish_request(self, conn, fs):
        if not fs.cancelled() and fs.exception() is None and fs.result() is WAIT_FOR_HEAD:
            try:
                self._wait(conn)
            except Exception:  # the connection is unusable: end it as gthread would
                self.nr_conns -= 1
                conn.close()
            return
        super().finish_request(conn, fs)

    def _wait(self, conn):
        """Wait in the event loop for more of the head. A waiting connection leaves the count
        gthread accepts by (nr_conns) and goes into the waiting room."""
        if not self.alive:
            raise ConnectionAbortedError
        self.nr_conns -= 1
        if len(self.waiting) >= self.waiting_room:
            self._expire(next(iter(self.waiting)))  # the oldest: the likeliest slowloris
        self.waiting[conn] = None
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn, _sock):
        self._unwait(conn)
        self.nr_conns += 1
        self.enqueue_req(conn)

    def _unwait(self, conn):
        del self.waiting[conn]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _expire(self, conn):
        """Drop a waiting connection: a 408 when it sent part of a head."""
        self._unwait(conn)
        if conn.head:
            refuse(conn.sock, conn.head, 408)
        conn.close()

    def murder_pending(self):
        """Also drop the connections whose head is late (all of them when stopping); they are
        looked at twice a second."""
        super().murder_pending()
        now = time.monotonic()
        if not self.waiting or (self.alive and now < self.next_expiry):
            return
        self.next_expiry = now + 0.5
        for conn in [c for c in self.waiting if not self.alive or c.head_deadline <= now]:
            self._expire(conn)
