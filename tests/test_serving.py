"""Serving under gunicorn.conf.py (a real gunicorn, as `make run` starts it): chunked request
bodies, gunicorn's own errors in the JSON envelope, request heads read without a thread
(slowloris), keep-alive and pipelining; and what Django's test server does with a chunked body.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.relay_setup import post, routed

ROOT = Path(__file__).resolve().parent.parent
BODY_LIMIT = 4096  # RELAY_MAX_BODY_BYTES of the gunicorn instance
HEADER_TIMEOUT = 1.5  # GUNICORN_HEADER_TIMEOUT of the gunicorn instance
THREADS = 4
CLIENT_TIMEOUT = 1.5  # GUNICORN_CLIENT_TIMEOUT: a client that stops reading is dropped then
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
pytestmark = pytest.mark.django_db(transaction=True)


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    host = db["HOST"] or "127.0.0.1"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn(django_db_setup, django_db_blocker, tmp_path_factory):
    """One router under gunicorn.conf.py for the module (1 worker, 4 threads, a 4 KiB body
    limit, a 1.5 s header timeout); yields its base URL."""
    with django_db_blocker.unblock():
        url = database_url()
    port = free_port()
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = dict(
        os.environ,
        BIND=f"127.0.0.1:{port}",
        DATABASE_URL=url,
        ROUTING_CACHE_TTL="0",  # every test makes its own channels
        SECRET_KEY=settings.SECRET_KEY,
        CHANNEL_KEY_ENCRYPTION_KEYS=",".join(settings.CHANNEL_KEY_ENCRYPTION_KEYS),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS=str(THREADS),
        GUNICORN_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        GUNICORN_CLIENT_TIMEOUT=str(CLIENT_TIMEOUT),
        RELAY_MAX_BODY_BYTES=str(BODY_LIMIT),
        DEBUG="false",
    )
    env.pop("GUNICORN_WORKER_CLASS", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "airouter.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{base}/v1/models", timeout=1).status_code == 401:
                        break
                except requests.RequestException:
                    pass  # not listening yet, or still importing Django
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def raw_exchange(base: str, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def split_answer(answer: bytes) -> tuple[int, dict, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def chunks(data: bytes, size: int = 7):
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- chunked request bodies ---------------------------------------------------------


def test_a_chunked_body_is_read(gunicorn, fake_upstream):
    _, key, _ = routed(fake_upstream)
    body = json.dumps(CHAT).encode()
    answer = requests.post(
        f"{gunicorn}/v1/chat/completions",
        data=chunks(body),  # a generator: requests sends Transfer-Encoding: chunked
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    assert fake_upstream.last_json()["messages"] == CHAT["messages"]


def test_a_chunked_anthropic_body_is_read(gunicorn, fake_upstream):
    _, key, _ = routed(fake_upstream, kind="anthropic", model_names="claude-x")
    body = json.dumps(
        {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    answer = requests.post(
        f"{gunicorn}/v1/messages",
        data=chunks(body),
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["type"] == "message"


def test_a_chunked_body_past_the_limit_is_a_413(gunicorn, fake_upstream):
    _, key, _ = routed(fake_upstream)
    body = json.dumps(dict(CHAT, user="x" * BODY_LIMIT)).encode()
    answer = requests.post(
        f"{gunicorn}/v1/chat/completions",
        data=chunks(body, 1000),
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
    assert not fake_upstream.requests


def test_an_empty_chunked_body_is_a_400(gunicorn, fake_upstream):
    _, key, _ = routed(fake_upstream)
    answer = requests.post(
        f"{gunicorn}/v1/chat/completions",
        data=iter([]),
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert "could not parse" in answer.json()["error"]["message"]


def test_the_test_server_refuses_a_chunked_body_with_a_411(live_server, fake_upstream):
    """Django's runserver (and live_server) hands a chunked body to nobody: say so."""
    _, key, _ = routed(fake_upstream)
    answer = post(
        live_server,
        "/v1/chat/completions",
        key,
        data=chunks(json.dumps(CHAT).encode()),
        headers={"Connection": "close"},
    )
    assert answer.status_code == 411
    assert answer.json()["error"]["code"] == "length_required"


# --- gunicorn's own errors ----------------------------------------------------------


def request(path: str, extra_headers: bytes = b"", body: bytes = b"{}") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n".encode()
        + extra_headers
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("what", "data", "status"),
    [
        ("request line too long", request("/v1/chat/completions?q=" + "a" * 5000), 414),
        (
            "a header too large",
            request("/v1/chat/completions", b"X-Big: " + b"b" * 9000 + b"\r\n"),
            431,
        ),
        (
            "too many headers",
            request("/v1/chat/completions", b"".join(b"X-%d: y\r\n" % n for n in range(120))),
            431,
        ),
        ("malformed request line", b"POST /v1/chat/completions HTTP/1.1 extra\r\n\r\n", 400),
        ("invalid header name", request("/v1/embeddings", b"Bad Header: x\r\n"), 400),
        ("a head past 64 KiB", request("/v1/chat/completions", b"X-A: a\r\n" * 9000), 431),
        ("a request line past 64 KiB", b"GET /v1/models?" + b"a" * 70000, 414),
    ],
)
def test_gunicorn_errors_on_v1_are_the_openai_envelope(gunicorn, what, data, status):
    code, headers, body = split_answer(raw_exchange(gunicorn, data))
    assert code == status, (what, body)
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_gunicorn_errors_on_messages_are_anthropic_envelope(gunicorn):
    data = request("/v1/messages?beta=" + "a" * 5000)
    code, headers, body = split_answer(raw_exchange(gunicorn, data))
    assert code == 414
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": json.loads(body)["error"]["message"]},
    }
    data = request("/v1/messages/count_tokens", b"X-Big: " + b"b" * 9000 + b"\r\n")
    code, _, body = split_answer(raw_exchange(gunicorn, data))
    assert code == 431
    assert json.loads(body)["error"]["type"] == "request_too_large"


def test_gunicorn_errors_elsewhere_stay_html(gunicorn):
    code, headers, _ = split_answer(raw_exchange(gunicorn, request("/admin/?q=" + "a" * 5000)))
    assert code == 414
    assert headers["content-type"] == "text/html"


# --- heads read without a thread (slowloris) -----------------------------------------


def test_slow_heads_hold_no_thread_and_time_out_with_a_408(gunicorn, fake_upstream):
    _, key, _ = routed(fake_upstream)
    host, port = gunicorn.removeprefix("http://").split(":")
    slow = []
    for n in range(THREADS * 10):  # ten times the threads, each with half a head
        sock = socket.create_connection((host, int(port)), timeout=10)
        path = "/v1/messages" if n == 0 else "/v1/chat/completions"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        slow.append(sock)
    try:
        started = time.monotonic()
        for _ in range(3):  # the threads are all free for whole requests
            answer = post(gunicorn_url(gunicorn), "/v1/chat/completions", key, json=CHAT)
            assert answer.status_code == 200
        assert time.monotonic() - started < HEADER_TIMEOUT
        for n, sock in enumerate(slow):  # then each slow one gets a 408 and is closed
            sock.settimeout(HEADER_TIMEOUT + 5)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            code, headers, body = split_answer(answer)
            assert code == 408
            envelope = json.loads(body)
            assert envelope["type"] == "error" if n == 0 else envelope["error"]["message"]
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    finally:
        for sock in slow:
            sock.close()


def gunicorn_url(base: str):
    """`post()` of relay_setup takes a live_server-like object."""
    return type("Server", (), {"url": base})


def test_a_head_in_pieces_is_served(gunicorn, fake_upstream):
    _, key, _ = routed(fake_upstream)
    body = json.dumps(CHAT).encode()
    data = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}"
        f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    host, port = gunicorn.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for piece in chunks(data, 40):
            sock.sendall(piece)
            time.sleep(0.01)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert split_answer(answer)[0] == 200


def test_keep_alive_and_pipelined_requests(gunicorn, fake_upstream):
    _, key, _ = routed(fake_upstream)
    with requests.Session() as session:  # one kept-alive connection
        for _ in range(3):
            answer = session.post(
                f"{gunicorn}/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert answer.status_code == 200
    body = json.dumps(CHAT).encode()
    one = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}"
        f"\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    pipelined = one + b"\r\n" + body + one + b"Connection: close\r\n\r\n" + body
    answer = raw_exchange(gunicorn, pipelined)
    assert answer.count(b"HTTP/1.1 200 OK") == 2


def test_a_stream_whose_client_stops_reading_ends_and_is_billed(gunicorn, fake_upstream):
    from billing.models import UsageRecord

    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(chunks=["x" * 60_000] * 400)  # 24 MB: more than the socket buffers
    body = json.dumps(dict(CHAT, stream=True)).encode()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", int(gunicorn.rsplit(":", 1)[1])))
    client.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:  # ... and never reads a byte
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            record = UsageRecord.objects.order_by("-id").first()
            if record is not None and record.status != "pending":
                break
            time.sleep(0.2)
        assert record.status == "client_disconnected"
        assert record.completion_tokens > 0  # billed for what was sent before it stopped
    finally:
        client.close()
