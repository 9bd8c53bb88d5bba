"""Slowloris: how normal requests fare while many connections dribble their headers.

Starts, all on 127.0.0.1 and as `make bench` does (bench/run.py): the fast fake upstream, the
router under gunicorn with gunicorn.conf.py (env overrides pass through) on a temporary SQLite
file, and a group, channel and token. Then, for each count N of slow connections:

- opens N connections that each send a request line and then one header line every
  SLOW_INTERVAL seconds, never ending the head (a connection the server closes is opened
  again, so N stay open; the reopenings are counted);
- once every slow connection has sent a header line, sends normal non-stream chat requests,
  each on a fresh connection, from 8 threads, for NORMAL_SECONDS or NORMAL_COUNT requests,
  whichever comes first, each with a 10 s timeout;
- prints p50, p99 and max latency of the normal requests (a timed-out one counts as 10 s),
  their errors and timeouts, and how many slow connections the server closed.

Bounded: at most NORMAL_COUNT requests and about NORMAL_SECONDS + 20 s per N; stops by itself,
and stops its children on the way out. Runs as root to raise the open-files limit.

    .venv/bin/python bench/slowloris.py                      # N = 0 and 2400
    SLOW_COUNTS=0,600,2400 .venv/bin/python bench/slowloris.py
"""

import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: the router, the upstream and the set-up)

COUNTS = [int(n) for n in os.environ.get("SLOW_COUNTS", "0,2400").split(",")]
SLOW_INTERVAL = float(os.environ.get("SLOW_INTERVAL", "3"))
NORMAL_SECONDS = float(os.environ.get("NORMAL_SECONDS", "30"))
NORMAL_COUNT = int(os.environ.get("NORMAL_COUNT", "600"))
NORMAL_THREADS = 8
TIMEOUT = 10.0
BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
).encode()


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        hard = needed  # root may raise the hard limit too
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class Slowloris(threading.Thread):
    """Keeps `count` connections open, each sending one header line every SLOW_INTERVAL s."""

    def __init__(self, port: int, count: int):
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.socks: list[socket.socket | None] = [None] * count
        self.lines = [0] * count
        self.reopened = 0
        self.rounds = 0
        self.halt = threading.Event()

    def open(self, i: int) -> None:
        sock = socket.socket()
        sock.setblocking(True)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.setblocking(False)
        self.socks[i] = sock
        self.lines[i] = 0

    def drip(self, i: int) -> None:
        sock = self.socks[i]
        try:
            sock.recv(4096)  # an answer (a 408) or EOF: the server is done with it
            raise ConnectionResetError
        except BlockingIOError:
            pass  # nothing to read: still open
        except OSError:
            sock.close()
            self.reopened += 1
            self.open(i)
            return
        try:
            self.lines[i] += 1
            sock.send(b"X-Slow-%d: %d\r\n" % (self.lines[i], i))
        except OSError:
            sock.close()
            self.reopened += 1
            self.open(i)

    def run(self):
        for i in range(self.count):
            if self.halt.is_set():
                return
            self.open(i)
        while not self.halt.is_set():
            started = time.monotonic()
            for i in range(self.count):
                if self.halt.is_set():
                    return
                with contextlib.suppress(OSError):  # not reopened: again on the next round
                    self.drip(i)
            self.rounds += 1
            self.halt.wait(max(0.0, SLOW_INTERVAL - (time.monotonic() - started)))

    def stop(self):
        self.halt.set()
        self.join(timeout=30)
        for sock in self.socks:
            if sock is not None:
                sock.close()


def normal_request(port: int, key: str) -> tuple[float, str]:
    """(seconds, outcome) of one chat request on a fresh connection."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn.request("POST", "/v1/chat/completions", body=BODY, headers=headers)
        response = conn.getresponse()
        response.read()
        outcome = "ok" if response.status == 200 else f"http {response.status}"
    except TimeoutError:
        outcome = "timeout"
    except OSError as exc:
        outcome = type(exc).__name__
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    return (TIMEOUT if outcome == "timeout" else elapsed), outcome


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(port: int, key: str, slow: int) -> dict:
    loris = Slowloris(port, slow)
    loris.start()
    deadline = time.monotonic() + 60
    while slow and loris.rounds < 1 and time.monotonic() < deadline:
        time.sleep(0.2)  # every slow connection open and dripping
    results: list[tuple[float, str]] = []
    stop_at = time.monotonic() + NORMAL_SECONDS
    lock = threading.Lock()
    started = [0]

    def worker():
        while time.monotonic() < stop_at:
            with lock:
                if started[0] >= NORMAL_COUNT:
                    return
                started[0] += 1
            result = normal_request(port, key)
            with lock:
                results.append(result)

    with ThreadPoolExecutor(NORMAL_THREADS) as pool:
        for _ in range(NORMAL_THREADS):
            pool.submit(worker)
    open_now = sum(1 for s in loris.socks if s is not None)
    loris.stop()
    latencies = [seconds for seconds, _ in results]
    outcomes: dict[str, int] = {}
    for _, outcome in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "slow": slow,
        "open": open_now,
        "reopened": loris.reopened,
        "requests": len(results),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "errors": {k: v for k, v in outcomes.items() if k != "ok"},
    }


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the children on the way out
    raise_open_files(max(COUNTS) * 2 + 8192)
    tmp = Path(tempfile.mkdtemp(prefix="airouter-slowloris-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "k3Jq9Wm2Xz" * 6,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    upstream, upstream_port = run.start_upstream()
    router = None
    try:
        key = run.configure(env, upstream_port)
        router = run.Router(env, tmp / "gunicorn.log")
        conf = run.runpy.run_path(str(run.ROOT / "gunicorn.conf.py"))
        worker = conf["worker_class"]
        worker = worker if isinstance(worker, str) else f"{worker.__module__}.{worker.__name__}"
        print(f"AI Router slowloris bench: {run.machine()}")
        print(
            f"gunicorn: {worker}, {len(router.worker_pids())} worker(s) x "
            f"{conf.get('threads', 1)} thread(s), {conf.get('worker_connections')} connections "
            f"each; slow connections send a header line every {SLOW_INTERVAL:g} s; normal "
            f"requests: {NORMAL_THREADS} threads, fresh connections, {TIMEOUT:g} s timeout\n"
        )
        normal_request(router.port, key)  # warm-up
        print(
            "| slow connections | open at the end | reopened | normal requests "
            "| p50 ms | p99 ms | max ms | errors |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for slow in COUNTS:
            r = measure(router.port, key, slow)
            errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
            print(
                f"| {r['slow']} | {r['open']} | {r['reopened']} | {r['requests']} "
                f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {errors} |",
                flush=True,
            )
            time.sleep(2)  # let the server drop the last slow connections
    finally:
        if router is not None:
            router.stop()
        upstream.terminate()
        upstream.wait(timeout=10)
    print(f"gunicorn log: {tmp / 'gunicorn.log'}")


if __name__ == "__main__":
    main()
