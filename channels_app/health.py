"""Channel health: what the relay and `check_channels` record on the channel.

The relay reports every attempt, but only writes when it matters: an error, the first success
after an error, and the latency at most once a minute per channel and process. A healthy channel
under load therefore costs no extra database round trip per request.

An upstream that refuses the channel's own key (401, 403) will refuse every request: the
channel is disabled automatically, with the reason, until `check_channels` finds it answering
again (or an operator enables it). Transient failures (timeouts, 429, 5xx) only fail over.
"""

import json
import threading
import time
from dataclasses import dataclass

from django.utils.timezone import now as utc_now

from channels_app import routing_table, upstream
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


def refused(channel, error: str) -> None:
    """The upstream refused the channel's key: take the channel out of routing."""
    disabled = Channel.objects.filter(pk=channel.id, status=Channel.Status.ENABLED).update(
        status=Channel.Status.AUTO_DISABLED,
        status_reason=f"The upstream refused the channel's key: {error}"[:500],
        last_error=error[:2000],
        last_error_at=utc_now(),
    )
    if disabled:
        routing_table.changed()
    with _lock:
        _last[channel.id] = (True, time.monotonic())


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
    if not error and channel.status == Channel.Status.AUTO_DISABLED:
        # It answers again: back into routing (a channel disabled by hand stays off).
        Channel.objects.filter(pk=channel.pk, status=Channel.Status.AUTO_DISABLED).update(
            status=Channel.Status.ENABLED, status_reason=""
        )
        routing_table.changed()
    with _lock:
        _last[channel.pk] = (bool(error), time.monotonic())
    return ProbeResult(channel, not error, status, latency_ms, error)
