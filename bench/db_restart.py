"""The router through a real PostgreSQL restart, measured (tests/test_database_outage.py is the
asserted version, with a proxy cut instead of a restart).

A scratch database `airouter_restart_<random>` on 127.0.0.1:5432 (dropped at the end), migrated
and provisioned with the ops commands; the router under gunicorn (gunicorn.conf.py, production
defaults unless the environment overrides them: WEB_CONCURRENCY, DATABASE_POOL_TIMEOUT, ...)
against a fake upstream. Client threads send chat requests (and streams that span the restart)
without pause; after WARMUP seconds the cluster is restarted:

    pg_ctlcluster --skip-systemctl-redirect <version> main restart

(BENCH_OUTAGE=stop:S instead stops it, waits S seconds and starts it: a longer outage;
BENCH_OUTAGE=proxy:S leaves the server alone: the router reaches it through a TCP proxy that is
cut for S seconds, every connection closed mid-statement). The load goes on for AFTER seconds
once the database accepts connections again. Printed: the requests sent before, during and
after the outage, how many got each status, whether any failed after the database was back,
and the money after `release_holds`: the balance drop against the sum of the recorded costs,
and the holds still pending (and why: never settled, or kept and never landed).

    .venv/bin/python bench/db_restart.py     # PostgreSQL is running again when it exits

Environment: BENCH_CLIENTS (non-stream client threads, default 12), BENCH_STREAM_CLIENTS
(default 4), BENCH_WARMUP (default 3), BENCH_AFTER (default 10), BENCH_OUTAGE (restart, the
default; stop:S; proxy:S). restart and stop take down the server every test run on this host
uses: run them alone.
"""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_database_outage import (  # noqa: E402  (after the path)
    BALANCE,
    MODEL,
    PG_ADMIN,
    FakeUpstream,
    Proxy,
    ledger,
    manage,
    provision,
    router_env,
    scratch_database,
    serving,
)

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "12"))
STREAM_CLIENTS = int(os.environ.get("BENCH_STREAM_CLIENTS", "4"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "3"))
AFTER = float(os.environ.get("BENCH_AFTER", "10"))
OUTAGE, _, OUTAGE_SECONDS = os.environ.get("BENCH_OUTAGE", "restart").partition(":")
if OUTAGE not in ("restart", "stop", "proxy") or (OUTAGE != "restart") != bool(OUTAGE_SECONDS):
    sys.exit("BENCH_OUTAGE: restart, stop:SECONDS or proxy:SECONDS")
PIECES = [f"piece{n} " for n in range(8)]  # streams: 8 pieces 0.25 s apart, about 2 s


def cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        timeout=120,
    )


def database_answers(port: int = 5432) -> bool:
    try:
        with psycopg.connect(PG_ADMIN.replace(":5432/", f":{port}/"), connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


class Load:
    """Client threads sending without pause; every request as (sent, done, outcome)."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[float, float, str, bool]] = []  # sent, done, outcome, stream
        self.threads = [
            threading.Thread(target=self._client, args=(stream,), daemon=True)
            for stream in [False] * CLIENTS + [True] * STREAM_CLIENTS
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _client(self, stream: bool) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            sent = time.monotonic()
            outcome = self._stream(session) if stream else self._chat(session)
            with self.lock:
                self.results.append((sent, time.monotonic(), outcome, stream))

    def _post(self, session, **body):
        return session.post(
            f"{self.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.key}"},
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 20,
                **body,
            },
            timeout=60,
            stream=body.get("stream", False),
        )

    def _chat(self, session) -> str:
        try:
            response = self._post(session)
        except requests.RequestException as exc:
            return f"no answer ({type(exc).__name__})"
        return describe(response)

    def _stream(self, session) -> str:
        try:
            with self._post(session, stream=True) as response:
                if response.status_code != 200:
                    return describe(response)
                lines = [line for line in response.iter_lines() if line.startswith(b"data:")]
        except requests.RequestException as exc:
            return f"stream cut ({type(exc).__name__})"
        if lines and lines[-1].strip() == b"data: [DONE]" and b'"error"' not in b"".join(lines):
            return "200 stream complete"
        return "200 stream incomplete"


def describe(response: requests.Response) -> str:
    """A status and what kind of answer it was: '503 service_unavailable +Retry-After'."""
    if response.status_code == 200:
        return "200"
    kind = response.headers.get("Content-Type", "").split(";")[0]
    if kind != "application/json":
        return f"{response.status_code} {kind or 'no content type'} (not JSON)"
    try:
        code = response.json()["error"].get("code") or response.json()["error"].get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        code = "unrecognised body"
    retry = " +Retry-After" if "Retry-After" in response.headers else ""
    return f"{response.status_code} {code}{retry}"


def main() -> None:
    if not database_answers():
        sys.exit("PostgreSQL does not answer on 127.0.0.1:5432")
    upstream = FakeUpstream([MODEL]).start()
    upstream.configure(chunks=PIECES, chunk_interval=0.25)
    try:
        with tempfile.TemporaryDirectory() as tmp, scratch_database("airouter_restart") as db:
            run(Path(tmp), db, upstream)
    finally:
        upstream.stop()
        if not database_answers():  # never leave the server down
            cluster("start")
    print(f"PostgreSQL answers again: {database_answers()}")


def run(tmp: Path, db: str, upstream: FakeUpstream) -> None:
    proxy = Proxy().start() if OUTAGE == "proxy" else None
    try:
        measure(tmp, db, upstream, proxy)
    finally:
        if proxy is not None:
            proxy.stop()


def outage(proxy: Proxy | None) -> None:
    if OUTAGE == "restart":
        cluster("restart")
        return
    if OUTAGE == "stop":
        cluster("stop")
    else:
        proxy.cut()
    time.sleep(float(OUTAGE_SECONDS))
    if OUTAGE == "stop":
        cluster("start")
    else:
        proxy.restore()


def measure(tmp: Path, db: str, upstream: FakeUpstream, proxy: Proxy | None) -> None:
    spool_dir = tmp / "spool"
    port = proxy.port if proxy else 5432
    env = router_env(
        f"postgres://postgres@127.0.0.1:{port}/{db}",
        spool_dir,
        WEB_CONCURRENCY=os.environ.get("WEB_CONCURRENCY", "2"),
        GUNICORN_THREADS=os.environ.get("GUNICORN_THREADS", "256"),
        **{k: v for k, v in os.environ.items() if k.startswith("DATABASE_POOL_")},
    )
    manage(env, "migrate", "--noinput", "-v", "0", timeout=300)
    key = provision(env, upstream.url)
    with serving(env, tmp / "router.log") as url:
        load = Load(url, key)
        load.start()
        time.sleep(WARMUP)
        down_at = time.monotonic()
        outage(proxy)
        command_done = time.monotonic()
        while not database_answers(port):
            time.sleep(0.05)
        back_at = time.monotonic()
        time.sleep(AFTER)
        load.finish()
        ended_at = time.monotonic()
    log = (tmp / "router.log").read_text(errors="replace")
    spooled = sorted(p.name for p in spool_dir.glob("*.jsonl"))
    released = manage(env, "release_holds").strip()
    money = ledger(db)
    with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{db}") as conn:
        pending = conn.execute(
            "SELECT id, request_id, held, created FROM billing_usagerecord "
            "WHERE status = 'pending' ORDER BY id"
        ).fetchall()
    report(
        load.results,
        down_at,
        command_done,
        back_at,
        ended_at,
        log,
        spooled,
        released,
        money,
        pending,
    )


def report(
    results, down_at, command_done, back_at, ended_at, log, spooled, released, money, pending
):
    action = {
        "restart": "PostgreSQL restart",
        "stop": f"PostgreSQL stop, {OUTAGE_SECONDS} s, start",
        "proxy": f"proxy to PostgreSQL cut for {OUTAGE_SECONDS} s",
    }[OUTAGE]
    print(
        f"{action}: took {command_done - down_at:.2f} s; the database answered the router's "
        f"address again {back_at - down_at:.2f} s after it began"
    )
    print(
        f"load: {CLIENTS} chat clients + {STREAM_CLIENTS} stream clients (8 pieces 0.25 s "
        f"apart), {WARMUP:g} s before, {AFTER:g} s after; {ended_at - down_at:.1f} s in all"
    )
    phases = [
        ("before the outage", lambda sent: sent < down_at),
        ("during the outage", lambda sent: down_at <= sent < back_at),
        (f"in the {AFTER:g} s after", lambda sent: sent >= back_at),
    ]
    for name, sent_in in phases:
        picked = [r for r in results if sent_in(r[0])]
        counts = Counter(r[2] for r in picked)
        slowest = max((r[1] - r[0] for r in picked), default=0.0)
        print(f"\nsent {name}: {len(picked)} requests (slowest {slowest:.2f} s)")
        for outcome, count in sorted(counts.items()):
            print(f"  {count:6d}  {outcome}")
    failed_after = [r for r in results if r[0] >= back_at and not r[2].startswith("200")]
    unfinished_before = [
        r for r in results if r[0] < back_at and r[1] >= back_at and not r[2].startswith("200")
    ]
    last = (
        f" (the last one sent {max(r[0] for r in failed_after) - back_at:.2f} s after it)"
        if failed_after
        else ""
    )
    print(f"\nfailed after the database was back: {len(failed_after)}{last}")
    print(f"sent before it was back, failed after it was back: {len(unfinished_before)}")
    print(f"500s in all: {sum(1 for r in results if r[2].startswith('500'))}")
    replayed = sum(int(n) for n in re.findall(r"settle spool: (\d+) kept settle", log))
    print(
        f"router log: settles kept {log.count('kept for retry')}, replayed by the router "
        f"{replayed} (found no longer pending: {log.count('was no longer pending')}), "
        f"'Database unavailable' {log.count('Database unavailable')}, "
        f"tracebacks {log.count('Traceback')}"
    )
    print(f"\nkept settles left when the router stopped: {len(spooled)} file(s) {spooled}")
    print(f"release_holds: {released!r}")
    served = sum(1 for r in results if r[2].startswith("200"))
    print(f"usage records: {money['records']} {money['by_status']} (the clients got {served} 200s)")
    drop = BALANCE - money["balance"]
    print(f"balance drop {drop}; sum of recorded costs {money['cost']}")
    print(f"balance drop == sum of costs: {drop == money['cost']}")
    print(f"holds still pending: {money['pending']}")
    kept_ids = {int(n) for n in re.findall(r"could not settle record (\d+)", log)}
    for record_id, request_id, held, _created in pending:
        why = "its settle was kept, never landed" if record_id in kept_ids else "never settled"
        print(f"  pending: record {record_id} request {request_id} held {held} ({why})")


if __name__ == "__main__":
    main()
