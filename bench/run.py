"""`make bench`: the fake upstream, the router under gunicorn and a load generator, one table.

The router (gunicorn, gunicorn.conf.py with env overrides) is pinned to core 0; the fake
upstream and the load generator to core 1. Every figure is measured in the same run for the
router and for the upstream called directly, so "added" is router minus direct.

Environment:
    DATABASE_URL        unset: a temporary SQLite file. postgres://...: a scratch database
                        <name>_bench on that server, dropped at the end.
    BENCH_QUICK=1       shorter runs and 200 held streams instead of 1000 (fast iteration)
    BENCH_SECONDS       seconds per non-stream load run (default 8; quick 3)
    BENCH_STREAMS       streams per stream run (default 200; quick 50)
    BENCH_HOLD          concurrent 20-second streams (default 1000; quick 200; 0 skips)
    BENCH_PARTS         which tables: load,streams,hold (default all three)
    BENCH_CONCURRENCY   non-stream concurrencies (default 1,8,32)
    BENCH_PROFILE=FILE  first record a py-spy profile of the workers under c=8 load and print
                        its top (needs py-spy). BENCH_PROFILE_STREAMS picks streams instead:
                        1 or paced (paced chat), or one of the burst rows: chat, messages
                        (native, anthropic channel), messages-chat, responses-chat (converted)
    WEB_CONCURRENCY, GUNICORN_THREADS, GUNICORN_WORKER_CLASS, ...: passed to gunicorn.conf.py
"""

import json
import os
import platform
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
GUNICORN = str(Path(PY).parent / "gunicorn")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = float(os.environ.get("BENCH_SECONDS", 3 if QUICK else 8))
STREAMS = int(os.environ.get("BENCH_STREAMS", 50 if QUICK else 200))
HOLD = int(os.environ.get("BENCH_HOLD", 200 if QUICK else 1000))
PARTS = os.environ.get("BENCH_PARTS", "load,streams,hold").split(",")
CONCURRENCY = tuple(int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,8,32").split(","))
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TWO_CORES = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
ROUTER_CORE, LOAD_CORE = "0", "1"
ANTHROPIC_MODEL = "bench-anthropic"  # served by the anthropic channel only
# 50-chunk burst stream rows: label -> (client format, model, format the upstream answers in,
# which is what the direct figure is measured on).
BURST_ROWS = {
    "chat": ("burst", "chat", "bench", "chat"),
    "messages": (
        "burst, Messages native (anthropic channel)",
        "messages",
        ANTHROPIC_MODEL,
        "messages",
    ),
    "messages-chat": ("burst, Messages -> chat (openai channel)", "messages", "bench", "chat"),
    "responses-chat": ("burst, Responses -> chat (openai channel)", "responses", "bench", "chat"),
}


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if TWO_CORES else argv


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s")


# --- processes ----------------------------------------------------------------------
class Router:
    """gunicorn with gunicorn.conf.py; CPU and RSS read from /proc for master + workers."""

    def __init__(self, env: dict, log: Path):
        self.port = free_port()
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            pinned(ROUTER_CORE, [GUNICORN, "-c", "gunicorn.conf.py", "airouter.wsgi"]),
            cwd=ROOT,
            env={**env, "BIND": f"127.0.0.1:{self.port}"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)
        time.sleep(1.0)  # workers import Django after the master binds

    def pids(self) -> list[int]:
        pids = [self.proc.pid]
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(pid) for pid in children)
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / TICKS

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            except FileNotFoundError:
                continue
        return total

    def worker_pids(self) -> list[int]:
        return self.pids()[1:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class PeakRss(threading.Thread):
    """Samples the router's RSS every 200 ms until stopped."""

    def __init__(self, router: Router):
        super().__init__(daemon=True)
        self.router, self.peak, self.halt = router, 0, threading.Event()

    def run(self):
        while not self.halt.wait(0.2):
            self.peak = max(self.peak, self.router.rss_bytes())


def start_upstream() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        pinned(LOAD_CORE, [PY, str(BENCH / "upstream.py")]), stdout=subprocess.PIPE, text=True
    )
    return proc, int(proc.stdout.readline())


# --- database and setup -------------------------------------------------------------
def scratch_database(url: str) -> tuple[str, callable]:
    """A fresh <name>_bench database on the server of url; returns (its url, drop)."""
    import psycopg

    parts = urllib.parse.urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'postgres'}_bench"
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}")), drop


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def configure(env: dict, upstream_port: int) -> str:
    """Group, user, channel and token through the ops commands; returns the token's key."""
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "create_group", "bench", "--multiplier", "1", "--pricing-confirmed")
    manage(env, "create_user", "bench", "--group", "bench", "--balance", "1000000")
    manage(
        env,
        *("create_channel", "bench-upstream"),
        *("--base-url", f"http://127.0.0.1:{upstream_port}/v1", "--key", "sk-bench-upstream"),
        *("--models", "bench,bench-paced,bench-hold", "--groups", "bench"),
        *("--input-price", "0.15", "--output-price", "0.6"),
    )
    # The same fake upstream answering /v1/messages as Anthropic: model names route, so a
    # Messages client asking for ANTHROPIC_MODEL passes through, one asking for "bench" is
    # converted to chat for the openai channel above.
    manage(
        env,
        *("create_channel", "bench-anthropic", "--kind", "anthropic"),
        *("--base-url", f"http://127.0.0.1:{upstream_port}/v1", "--key", "sk-bench-upstream"),
        *("--models", ANTHROPIC_MODEL, "--groups", "bench"),
        *("--input-price", "0.15", "--output-price", "0.6"),
    )
    return manage(env, "create_token", "bench", "--group", "bench").strip().splitlines()[-1]


def usage_count(env: dict, model: str) -> int:
    code = (
        "from billing.models import UsageRecord as U; "
        f"print(U.objects.filter(requested_model={model!r}, status='success').count())"
    )
    return int(manage(env, "shell", "-c", code).split()[-1])


# --- load ---------------------------------------------------------------------------
def client(*args: str, timeout: float = 300) -> dict:
    out = subprocess.run(
        pinned(LOAD_CORE, [PY, str(BENCH / "client.py"), *args]),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout)


def load(port: int, key: str, concurrency: int, seconds: float) -> dict:
    """Non-stream load: wrk when installed, else the Python client."""
    if not shutil.which("wrk"):
        result = client(
            "load",
            *("--port", str(port), "--key", key),
            *("--concurrency", str(concurrency), "--seconds", str(seconds)),
        )
        responses = result["requests"] + result["errors"]
        return {**result, "responses": responses, "rps": responses / result["seconds"]}
    out = subprocess.run(
        pinned(
            LOAD_CORE,
            [
                "wrk",
                *("-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s"),
                *("-s", str(BENCH / "post.lua"), f"http://127.0.0.1:{port}/v1/chat/completions"),
            ],
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        env={**os.environ, "BENCH_KEY": key},
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    fields = dict(item.split("=") for item in line.split()[1:])
    requests = int(fields["requests"])
    errors = int(fields["non2xx"]) + int(fields["socket_errors"])
    return {
        "requests": requests - int(fields["non2xx"]),
        "errors": errors,
        "responses": requests,
        "rps": requests / (int(fields["duration_us"]) / 1e6),
        "p50_ms": int(fields["p50_us"]) / 1000,
        "p99_ms": int(fields["p99_us"]) / 1000,
    }


def measured(router: Router, run) -> tuple[dict, float]:
    """Run run(); return its result and the router CPU seconds it cost."""
    before = router.cpu_seconds()
    result = run()
    return result, router.cpu_seconds() - before


def profile(router: Router, key: str, path: str, seconds: int = 10) -> None:
    """py-spy on one worker (GIL holder only: CPU, not waiting) while the worker serves c=8
    non-stream load, or paced streams with BENCH_PROFILE_STREAMS=1; print the top frames."""
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(pyspy).exists():
        print("BENCH_PROFILE: py-spy is not installed (pip install py-spy); skipped")
        return
    streams = os.environ.get("BENCH_PROFILE_STREAMS", "")
    streams = "" if streams == "0" else "paced" if streams == "1" else streams
    if streams and streams != "paced" and streams not in BURST_ROWS:
        raise SystemExit(f"BENCH_PROFILE_STREAMS: one of 1, paced, {', '.join(BURST_ROWS)}")
    workers = router.worker_pids()
    spies = [
        subprocess.Popen(
            [pyspy, "record", "-p", str(pid), "-o", f"{path}.{pid}", "-f", "raw"]
            + ["-r", "400", "-d", str(seconds), "--gil", "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in workers
    ]
    if streams == "paced":
        count = str(int(seconds / 0.26) + 4)
        client(
            "streams",
            "--model",
            "bench-paced",
            "--count",
            count,
            "--port",
            str(router.port),
            "--key",
            key,
        )
    elif streams:
        _, client_format, model, _ = BURST_ROWS[streams]
        while any(spy.poll() is None for spy in spies):  # batches until the profile ends
            client(
                *("streams", "--format", client_format, "--model", model, "--count", "200"),
                *("--port", str(router.port), "--key", key),
            )
    else:
        load(router.port, key, 8, seconds + 2)
    for spy in spies:
        spy.wait(timeout=60)
    with open(path, "w") as merged:
        for pid in workers:
            part = Path(f"{path}.{pid}")
            if part.exists():
                merged.write(part.read_text())
                part.unlink()
    what = (
        "c=8 non-stream load"
        if not streams
        else "paced 50-chunk streams"
        if streams == "paced"
        else f"50-chunk burst streams ({BURST_ROWS[streams][0]})"
    )
    print(f"py-spy profile of the workers under {what}: {path}")
    print_profile(path)


FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def print_profile(path: str, top: int = 25) -> None:
    """The functions the samples were in (self) and under (inclusive), in % of samples."""
    inclusive, own, total = {}, {}, 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            if match:
                where = match["file"].split("site-packages/")[-1].replace(str(ROOT) + "/", "")
                frames.append(f"{match['name']} ({where})")
        if not frames:
            continue
        total += int(count)
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
    for title, table, limit in (("self", own, top), ("inclusive", inclusive, top * 2)):
        print(f"top {limit} {title} ({total} samples):")
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:limit]:
            print(f"  {count * 100 / total:5.1f}%  {frame}")


# --- report -------------------------------------------------------------------------
def fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def machine() -> str:
    model = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the children on the way out
    tmp = Path(tempfile.mkdtemp(prefix="airouter-bench-"))
    drop = None
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        url, drop = scratch_database(url)
        database = "PostgreSQL"
    else:
        url, database = f"sqlite:///{tmp / 'bench.sqlite3'}", "SQLite"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "k3Jq9Wm2Xz" * 6,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    upstream, upstream_port = start_upstream()
    router = None
    try:
        key = configure(env, upstream_port)
        router = Router(env, tmp / "gunicorn.log")
        report(env, router, key, upstream_port, database)
    finally:
        if router is not None:
            router.stop()
        upstream.terminate()
        upstream.wait(timeout=10)
        if drop is not None:
            drop()
    print(f"gunicorn log: {tmp / 'gunicorn.log'}")


def report(env: dict, router: Router, key: str, upstream_port: int, database: str) -> None:
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))  # threads and class as gunicorn has
    serving = (
        f"{conf['worker_class']}, {len(router.worker_pids())} worker(s) x "
        f"{conf.get('threads', 1)} thread(s)"
    )
    print(f"AI Router bench: {machine()}")
    pinning = (
        f"router (gunicorn: {serving}) pinned to core {ROUTER_CORE}; fake upstream and "
        f"load generator pinned to core {LOAD_CORE} (taskset)"
        if TWO_CORES
        else "NOT pinned (fewer than 2 cores or no taskset)"
    )
    print(pinning)
    print(
        f"database: {database}; load generator: {'wrk' if shutil.which('wrk') else 'Python'}"
        f"{' (quick mode)' if QUICK else ''}\n"
    )

    load(router.port, key, 8, 2)  # warm-up: imports, connections, caches
    if os.environ.get("BENCH_PROFILE"):
        profile(router, key, os.environ["BENCH_PROFILE"])

    if "load" in PARTS:
        load_table(router, key, upstream_port)
    if "streams" in PARTS:
        stream_table(router, key, upstream_port)
    if HOLD and "hold" in PARTS:
        hold_streams(env, router, key)


def load_table(router: Router, key: str, upstream_port: int) -> None:
    print("Non-stream chat completions")
    print(
        "| c | direct req/s | router req/s | direct p50 ms | router p50 ms | router p99 ms "
        "| added p50 ms | router CPU ms/req | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c in CONCURRENCY:
        direct = load(upstream_port, "", c, SECONDS)
        routed, cpu = measured(router, lambda c=c: load(router.port, key, c, SECONDS))
        per_request = cpu * 1000 / routed["responses"] if routed["responses"] else None
        print(
            f"| {c} | {direct['rps']:.0f} | {routed['rps']:.0f} | {fmt(direct['p50_ms'])} "
            f"| {fmt(routed['p50_ms'])} | {fmt(routed['p99_ms'])} "
            f"| {fmt(routed['p50_ms'] - direct['p50_ms'])} | {fmt(per_request)} "
            f"| {routed['errors']} |",
            flush=True,
        )


def stream_table(router: Router, key: str, upstream_port: int) -> None:
    print(f"\nStreams of 50 chunks, {STREAMS} one after another")
    print(
        "| kind | direct TTFT p50 ms | router TTFT p50 ms | added TTFT ms | direct total ms "
        "| router total ms | router CPU ms/stream | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = [*BURST_ROWS.values(), ("paced 5 ms", "chat", "bench-paced", "chat")]
    for label, client_format, model, upstream_format in rows:
        count = str(max(STREAMS // 4, 10) if model == "bench-paced" else STREAMS)
        # direct: the upstream called in the format the channel is called in, same model
        direct = client(
            *("streams", "--format", upstream_format, "--model", model, "--count", count),
            *("--port", str(upstream_port)),
        )
        args = ("streams", "--format", client_format, "--model", model, "--count", count)
        routed, cpu = measured(
            router, lambda args=args: client(*args, "--port", str(router.port), "--key", key)
        )
        done = routed["streams"] + routed["errors"]
        per_stream = cpu * 1000 / done if done else None
        added = (
            routed["ttft_p50_ms"] - direct["ttft_p50_ms"]
            if routed["ttft_p50_ms"] is not None
            else None
        )
        print(
            f"| {label} | {fmt(direct['ttft_p50_ms'])} | {fmt(routed['ttft_p50_ms'])} "
            f"| {fmt(added)} | {fmt(direct['total_p50_ms'], 1)} | {fmt(routed['total_p50_ms'], 1)} "
            f"| {fmt(per_stream)} | {routed['errors']} |",
            flush=True,
        )


def hold_streams(env: dict, router: Router, key: str) -> None:
    print(f"\n{HOLD} concurrent streams whose upstream takes 20 s, short requests meanwhile")
    before = usage_count(env, "bench-hold")
    sampler = PeakRss(router)
    sampler.start()
    baseline = router.rss_bytes()
    held, cpu = measured(
        router,
        lambda: client(
            "hold", "--port", str(router.port), "--key", key, "--streams", str(HOLD), timeout=240
        ),
    )
    sampler.halt.set()
    sampler.join()
    recorded = usage_count(env, "bench-hold") - before
    short = held["short"]
    print(
        "| streams | completed | errors | usage records | wall s | peak RSS MB (idle MB) "
        "| router CPU s | short req | short errors | short p50 ms | short p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {held['streams']} | {held['completed']} | {held['errors']} | {recorded} "
        f"| {held['seconds']:.1f} | {sampler.peak / 2**20:.0f} ({baseline / 2**20:.0f}) "
        f"| {cpu:.1f} | {held['short_requests']} | {held['short_errors']} "
        f"| {fmt(short['p50_ms'])} | {fmt(short['p99_ms'])} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
