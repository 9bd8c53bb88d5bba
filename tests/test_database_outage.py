"""The database goes away and comes back while the router serves (always on PostgreSQL).

Whatever database the suite runs on, this test makes a scratch PostgreSQL database of its own
(`airouter_outage_<random>`, dropped at the end), reached THROUGH a TCP proxy that the test can
cut (every connection closed, new ones refused) and restore. The router runs under gunicorn, as
in production, with psycopg's pool; the ops commands set it up and `release_holds` settles.

While the database is away /v1 answers 503 `service_unavailable` with Retry-After (never a 500,
never HTML) and /readyz says 503; a stream started before the cut still finishes for its client
(its settle is kept in SETTLE_SPOOL_DIR). Once the database is back the very next requests
succeed (no stale pooled connection fails one), `release_holds` lands the kept settle, and the
money adds up: the balance dropped by exactly the recorded costs, no hold is left pending.

The helpers (Proxy, scratch_database, router_env, manage, provision, serving, ledger) are also
what bench/db_restart.py measures a real PostgreSQL restart with.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql

from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
BALANCE = Decimal("100")
MODEL = "gpt-4o-mini"
# Seconds a request waits for a pooled connection before its 503 (production default: 10);
# short here so that the outage costs the test seconds, not tens of seconds.
POOL_TIMEOUT = "2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proxy:
    """A threaded TCP forwarder on 127.0.0.1 to `target` that can be cut and restored.

    `cut()` closes the listening socket (new connections are refused, as by a database that is
    down) and every forwarded connection; `restore()` listens again on the same port.
    """

    def __init__(self, target=(PG_HOST, PG_PORT)):
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    def start(self) -> "Proxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    restore = start

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            _close(listener)
        for sock in sockets:
            _close(sock)

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut: the listener is closed
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _close(client)
                    _close(server)
                    return
                self._sockets.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()


@contextmanager
def scratch_database(prefix: str = "airouter_outage"):
    """A new, empty PostgreSQL database (its name), dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def router_env(database_url: str, spool_dir: Path, **extra: str) -> dict:
    """The environment of the router and of the ops commands: this database, no Redis (kept
    settles go to files in `spool_dir`), whatever the suite itself runs with."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DATABASE_", "TEST_DATABASE", "REDIS_", "PROMETHEUS_"))
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL="",
        SETTLE_SPOOL_DIR=str(spool_dir),
        SECRET_KEY=secrets.token_urlsafe(40),
        CHANNEL_KEY_ENCRYPTION_KEYS="",
        DEBUG="false",
        LOG_FORMAT="text",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="64",
    )
    env.update(extra)
    return env


def manage(env: dict, *args: str, timeout: float = 60) -> str:
    """Run a manage.py command; its stdout. A failure shows its output."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def provision(env: dict, upstream_url: str, balance: Decimal = BALANCE) -> str:
    """A group, a user with `balance`, a channel on the upstream and a token: the key."""
    manage(env, "create_group", "outage", "--multiplier", "1.5", "--pricing-confirmed")
    with ThreadPoolExecutor(2) as pool:
        user = pool.submit(
            manage,
            env,
            "create_user",
            "outage-user",
            "--group",
            "outage",
            "--balance",
            str(balance),
        )
        channel = pool.submit(
            manage,
            env,
            "create_channel",
            "outage-upstream",
            "--base-url",
            upstream_url,
            "--key",
            "sk-upstream-outage",
            "--models",
            MODEL,
            "--groups",
            "outage",
            "--input-price",
            "1",
            "--output-price",
            "2",
        )
        user.result()
        channel.result()
    return manage(env, "create_token", "outage-user", "-v", "0").strip()


@contextmanager
def serving(env: dict, log_path: Path, port: int | None = None):
    """The router under gunicorn (gunicorn.conf.py) with `env`: its base URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "airouter.wsgi"],
            cwd=ROOT,
            env=dict(env, BIND=f"127.0.0.1:{port}"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass  # not listening yet, or still importing Django
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ledger(database: str) -> dict:
    """The money, read straight from PostgreSQL (not through the proxy)."""
    url = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{database}"
    with psycopg.connect(url, connect_timeout=5) as conn:
        balance = conn.execute(
            "SELECT balance FROM groups_user WHERE username = 'outage-user'"
        ).fetchone()[0]
        rows = conn.execute("SELECT status, cost, held FROM billing_usagerecord").fetchall()
    return {
        "balance": balance,
        "records": len(rows),
        "by_status": {s: sum(1 for r in rows if r[0] == s) for s in sorted({r[0] for r in rows})},
        "cost": sum((r[1] for r in rows), Decimal(0)),
        "cost_served": sum((r[1] for r in rows if r[0] == "success"), Decimal(0)),
        "pending": sum(1 for r in rows if r[0] == "pending"),
    }


def chat(url: str, key: str, timeout: float = 30, **body) -> requests.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 20,
        **body,
    }
    return requests.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=body,
        timeout=timeout,
    )


def messages(url: str, key: str, timeout: float = 30) -> requests.Response:
    return requests.post(
        f"{url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
        timeout=timeout,
    )


class Stream(threading.Thread):
    """A chat stream read to its end on a thread; `.started` is set at its first data event."""

    def __init__(self, url: str, key: str):
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.started = threading.Event()
        self.status: int | None = None
        self.events: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with requests.post(
                f"{self.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {self.key}"},
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 20,
                    "stream": True,
                },
                stream=True,
                timeout=30,
            ) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if line.startswith(b"data:"):
                        self.events.append(line[5:].strip().decode())
                        self.started.set()
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            self.error = exc
        finally:
            self.started.set()

    @property
    def text(self) -> str:
        pieces = []
        for event in self.events:
            if event != "[DONE]":
                for choice in json.loads(event).get("choices") or []:
                    pieces.append((choice.get("delta") or {}).get("content") or "")
        return "".join(pieces)


def assert_database_down(response: requests.Response, anthropic: bool = False) -> None:
    """A 503 the client can act on: JSON in the endpoint's envelope, with Retry-After."""
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    if anthropic:
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error", body
    else:
        assert body["error"]["code"] == "service_unavailable", body


@pytest.fixture
def postgres():
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(f"this test needs PostgreSQL on {PG_HOST}:{PG_PORT} (.ci/run starts it): {exc}")


def test_the_database_goes_away_and_comes_back(postgres, tmp_path):
    upstream = FakeUpstream([MODEL]).start()
    proxy = Proxy().start()
    log_path = tmp_path / "router.log"
    try:
        with scratch_database() as database:
            spool_dir = tmp_path / "spool"
            env = router_env(
                f"postgres://postgres@127.0.0.1:{proxy.port}/{database}",
                spool_dir,
                DATABASE_POOL_TIMEOUT=POOL_TIMEOUT,
            )
            manage(env, "migrate", "--noinput", "-v", "0", timeout=120)
            key = provision(env, upstream.url)
            phase("provisioned")
            with serving(env, log_path) as url:
                phase("serving")
                run_outage(url, key, proxy, upstream, spool_dir, log_path)
            phase("stopped")
            kept_before = [p.name for p in spool_dir.glob("*.jsonl")]
            out = manage(env, "release_holds")
            phase(f"release_holds: {out.strip()!r} (kept before it: {kept_before})")
            assert not list(spool_dir.glob("*.jsonl")), out  # every kept settle landed
            money = ledger(database)
    finally:
        proxy.stop()
        upstream.stop()
    assert money["pending"] == 0, money
    assert money["cost"] == money["cost_served"] > 0, money  # only served requests cost
    assert money["balance"] == BALANCE - money["cost"], money
    assert set(money["by_status"]) == {"success"}, money


_t0 = time.monotonic()


def phase(what: str) -> None:
    """A timed line for the test's output (shown when it fails)."""
    print(f"{time.monotonic() - _t0:7.2f}s {what}")


# When the database comes back, RESTORE_AFTER seconds after the cut: once the stream's settle
# has been refused (the stream ends about 0.6 s after the cut, then its settle waits
# POOL_TIMEOUT for a connection), an outage a database restart or a failover easily takes.
# psycopg_pool retries a lost connection 1, 3, 7, 15 ... s (+-10%) after the first failure:
# 3.6 s falls between two tries that are more than POOL_TIMEOUT apart, so a pool that only
# reconnects on that schedule fails the first request after the database is back.
RESTORE_AFTER = 3.6


def run_outage(url, key, proxy, upstream, spool_dir, log_path):
    before = [chat(url, key) for _ in range(3)]
    assert [r.status_code for r in before] == [200] * 3, [r.text for r in before]
    readyz = requests.get(f"{url}/readyz", timeout=5)
    assert readyz.status_code in (200, 404), readyz.text  # 404: no /readyz (yet)
    has_readyz = readyz.status_code == 200

    # A stream of 3 pieces 0.25 s apart: it starts before the cut and ends during the outage.
    pieces = [f"piece{n} " for n in range(3)]
    upstream.configure(chunks=pieces, chunk_interval=0.25)
    stream = Stream(url, key)
    stream.start()
    assert stream.started.wait(10) and stream.status == 200, (stream.status, stream.error)

    proxy.cut()
    cut_at = time.monotonic()
    phase("cut")
    with ThreadPoolExecutor(8) as pool:
        down = [pool.submit(chat, url, key) for _ in range(4)]
        down_messages = pool.submit(messages, url, key)
        down_models = pool.submit(
            requests.get, f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        down_ready = pool.submit(requests.get, f"{url}/readyz", timeout=30) if has_readyz else None
        for future in [*down, down_models]:
            assert_database_down(future.result())
        assert_database_down(down_messages.result(), anthropic=True)
        if down_ready is not None:
            ready = down_ready.result()
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["database"] in ("unavailable", "timeout"), ready.text
    phase("503s during the outage")

    stream.join(30)
    assert not stream.is_alive() and stream.error is None, stream.error
    assert stream.events[-1] == "[DONE]", stream.events[-3:]
    assert stream.text == "".join(pieces)
    phase("stream finished")
    assert list(spool_dir.glob("*.jsonl")), log_path.read_text()[-3000:]  # its settle is kept

    time.sleep(max(0.0, cut_at + RESTORE_AFTER - time.monotonic()))
    proxy.restore()
    phase("restored")
    upstream.reset()
    after = []
    for _ in range(3):
        after.append(chat(url, key))
        phase(f"after: {after[-1].status_code}")
    with ThreadPoolExecutor(6) as pool:
        after += list(pool.map(lambda _: chat(url, key), range(6)))
    phase(f"after: {[r.status_code for r in after]}")
    failed = [r.text[:300] for r in after if r.status_code != 200]
    assert not failed, (
        "requests failed after the database was back: the pool gets no connection until its "
        f"next reconnection attempt (psycopg_pool's reconnect_timeout and backoff): {failed}"
    )
    if has_readyz:
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
