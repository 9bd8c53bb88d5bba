"""What reading a paced stream costs, outside Django and gunicorn: CPU per 50-chunk stream.

Starts bench/upstream.py on core 1, pins itself to core 0, and reads `bench-paced` streams
(50 chunks, 5 ms apart) through channels_app.upstream three ways: urllib3's read1 (what the
relay does), urllib3's read_chunked, and a bare de-chunker on the socket's buffered reader.
If the three cost about the same, the price is the per-chunk wake-up (recv), not parsing.

    .venv/bin/python bench/read_paced.py
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airouter.settings")

import django  # noqa: E402

django.setup()

from channels_app import upstream  # noqa: E402

STREAMS = 40
BODY = b'{"model":"bench-paced","stream":true,"messages":[]}'


def via_read1(response):
    while data := response.read1(65536):
        yield data


def via_read_chunked(response):
    yield from response.read_chunked(decode_content=False)


def via_socket(response):
    fp = response._fp.fp  # the socket's buffered reader, just past the headers
    while size := int(fp.readline(70).split(b";", 1)[0], 16):
        yield fp.read(size)
        fp.read(2)
    while fp.readline(70) not in (b"\r\n", b"\n", b""):
        pass


def cpu_ms_per_stream(url: str, reader) -> float:
    start = time.process_time()
    for _ in range(STREAMS):
        response = upstream.request(
            "POST", url, key="bench", body=BODY, connect_timeout=5, read_timeout=5
        )
        for _chunk in reader(response):
            pass
        upstream.release(response, complete=True)
    return (time.process_time() - start) / STREAMS * 1000


def main() -> None:
    server = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "upstream.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline().split()[-1])
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        os.sched_setaffinity(0, {0})
        print(f"CPU per paced 50-chunk stream, reader pinned to core 0, {STREAMS} streams each")
        for name, reader in (
            ("urllib3 read1 (the relay)", via_read1),
            ("urllib3 read_chunked", via_read_chunked),
            ("bare de-chunker on the socket", via_socket),
        ):
            cpu_ms_per_stream(url, reader)  # warm
            print(f"  {name:32s} {cpu_ms_per_stream(url, reader):5.2f} ms")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
