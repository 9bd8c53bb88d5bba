"""Channel health: what the relay and `check_channels` record on the channel.

The relay reports every attempt's `transports.Result`, but only writes when it matters: an
error, the first success after an error, and the latency at most once a minute per channel
and process. A healthy channel under load therefore costs no extra database round trip.

An upstream that refuses the channel's own key (401, 403) will refuse every request: the
channel is disabled automatically, with the reason, until `check_channels` finds it answering
again (or an operator enables it). Transient failures (timeouts, 429, 5xx) only fail over.

Every outcome also goes to the channel's circuit breaker (`channels_app.breaker`), which
takes a channel that keeps failing out of routing for a while: no database write for that.
"""

import json
import threading
import time
from dataclasses import dataclass

from channels_app import breaker, routing_table, transports
from channels_app.models import Channel

LATENCY_EVERY = 60.0  # seconds between latency writes of a healthy channel, per process

_lock = threading.Lock()
_last: dict[int, tuple[bool, float]] = {}  # channel id -> (failing, monotonic time of last write)

Outcome = Channel.Outcome


def note(
    channel,
    outcome: str,
    error: str = "",
    latency_ms: int | None = None,
    retry_after: float | None = None,
    *,
    breaks: bool = True,
) -> None:
    """Record one attempt's outcome on a routing-table channel entry, when it is news, and on
    its breaker (always: that costs a dict lookup unless the channel has been failing).

    A refused request (the client's fault) says nothing about the channel: it counts as an
    answer. `breaks=False`: an answer to a side request (a token count) that says nothing of
    whether the channel serves, so it neither opens nor closes a breaker."""
    if outcome == Outcome.REFUSED:
        outcome, error = Outcome.SUCCESS, ""
    if breaks or outcome != Outcome.SUCCESS:
        breaker.record(channel.id, outcome, error, retry_after)
    now = time.monotonic()
    failing, written = _last.get(channel.id, (bool(channel.last_error), -LATENCY_EVERY))
    if outcome == Outcome.SUCCESS and not failing and now - written < LATENCY_EVERY:
        return
    with _lock:
        _last[channel.id] = (outcome != Outcome.SUCCESS, now)
    if Channel.record_result(channel.id, outcome, error=error, latency_ms=latency_ms):
        routing_table.changed()


def record(channel, result: transports.Result, *, breaks: bool = True) -> None:
    note(
        channel,
        result.outcome,
        result.message,
        result.latency_ms or None,
        result.retry_after,
        breaks=breaks,
    )


@dataclass(frozen=True)
class ProbeResult:
    channel: Channel
    ok: bool
    status: int | None
    latency_ms: int
    error: str


def is_embedding_model(model: str) -> bool:
    return "embed" in model.lower()


def probe_request(channel: Channel) -> tuple[str, dict]:
    """The smallest request the channel can answer: (upstream endpoint, body)."""
    models = channel.model_list
    model = channel.upstream_model(models[0]) if models else ""
    if models and all(is_embedding_model(m) for m in models):
        return "embeddings", {"model": model, "input": "ping"}
    message = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    if channel.kind == Channel.Kind.ANTHROPIC:
        return "messages", message
    return "chat/completions", message


def probe(channel: Channel) -> ProbeResult:
    """Send the smallest request the channel can answer; record the outcome on it (a channel
    disabled automatically that answers is enabled again)."""
    endpoint, body = probe_request(channel)
    started = time.monotonic()
    try:
        key = channel.get_key()
        result = transports.transport(channel).send(
            endpoint, json.dumps(body).encode(), stream=False, key=key
        )
        status, error = result.status or None, result.message
        ok = result.ok
    except Exception as exc:  # a key that cannot be decrypted, a bad URL...
        status, error, ok = None, f"{type(exc).__name__}: {exc}", False
    latency_ms = int((time.monotonic() - started) * 1000)
    outcome = Outcome.SUCCESS if ok else Outcome.FAILURE
    breaker.record(channel.pk, outcome, error)
    if Channel.record_result(channel.pk, outcome, error=error, latency_ms=latency_ms, checked=True):
        routing_table.changed()
    with _lock:
        _last[channel.pk] = (not ok, time.monotonic())
    return ProbeResult(channel, ok, status, latency_ms, error)
