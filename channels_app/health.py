"""Channel health: what the relay and `check_channels` record on the channel.

The relay reports every attempt, but only writes when it matters: an error, the first success
after an error, and the latency at most once a minute per channel and process. A healthy channel
under load therefore costs no extra database round trip per request.
"""

import json
import threading
import time
from dataclasses import dataclass

from channels_app import upstream
from channels_app.models import Channel

LATENCY_EVERY = 60.0  # seconds between latency writes of a healthy channel, per process

_lock = threading.Lock()
_last: dict[int, tuple[bool, float]] = {}  # channel id -> (failing, monotonic time of last write)


def note(channel, error: str = "", latency_ms: int | None = None) -> None:
    """Record one attempt's outcome on a routing-table channel entry, when it is news."""
    now = time.monotonic()
    failing, written = _last.get(channel.id, (bool(channel.last_error), -LATENCY_EVERY))
    if not error and not failing and now - written < LATENCY_EVERY:
        return
    with _lock:
        _last[channel.id] = (bool(error), now)
    Channel.record_result(channel.id, error=error, latency_ms=latency_ms)


@dataclass(frozen=True)
class ProbeResult:
    channel: Channel
    ok: bool
    status: int | None
    latency_ms: int
    error: str


def probe(channel: Channel) -> ProbeResult:
    """Send the smallest chat completion the channel can answer; record the outcome on it."""
    models = channel.model_list
    body = json.dumps(
        {
            "model": channel.upstream_model(models[0]) if models else "",
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
        }
    ).encode()
    started = time.monotonic()
    status = None
    try:
        key = channel.get_key()
        response = upstream.request(
            "POST",
            channel.base_url.rstrip("/") + "/chat/completions",
            key=key,
            body=body,
            connect_timeout=channel.connect_timeout,
            read_timeout=channel.read_timeout,
        )
        data = upstream.read_all(response, channel.read_timeout)
        upstream.release(response, complete=True)
        status = response.status
        error = "" if 200 <= status < 300 else upstream.describe(status, data, key)
    except upstream.UpstreamError as exc:
        error = exc.message
    except Exception as exc:  # a key that cannot be decrypted, a bad URL...
        error = f"{type(exc).__name__}: {exc}"
    latency_ms = int((time.monotonic() - started) * 1000)
    Channel.record_result(channel.pk, error=error, latency_ms=latency_ms, checked=True)
    with _lock:
        _last[channel.pk] = (bool(error), time.monotonic())
    return ProbeResult(channel, not error, status, latency_ms, error)
