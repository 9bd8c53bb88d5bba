"""What the router tells operators about its traffic: one log line per proxied request and the
Prometheus metrics served at /metrics (airouter.health_views). The relay calls these hooks;
they never fail a request.

Metric updates are in-memory (or, under gunicorn, writes to a per-worker mmap file: the
prometheus_client multiprocess mode that gunicorn.conf.py turns on with
PROMETHEUS_MULTIPROC_DIR): a few microseconds, never a query. Labels take only bounded values:
the endpoint, the group and channel names, the models a channel serves (a request reaches
request_finished only once its model routed), the record's status and the transport outcome.
"""

import logging
import os
import threading

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger("airouter.relay")

# One series per counter, not two (`*_created` doubles what a scrape reads for no use here;
# the multiprocess mode never exports them anyway).
disable_created_metrics()

REQUESTS = Counter(
    "airouter_requests",
    "Relayed requests that got past the hold, by how they settled.",
    ["endpoint", "group", "model", "channel", "status"],
)
REQUEST_DURATION = Histogram(
    "airouter_request_duration_seconds",
    "Time from the request's arrival to its settle (a stream's whole length).",
    ["channel", "stream"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "airouter_time_to_first_token_seconds",
    "Streams: time from the request's arrival to the upstream's first answer.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60),
)
UPSTREAM_ATTEMPTS = Counter(
    "airouter_upstream_attempts",
    "Upstream attempts by channel and outcome (success, failure, key_refused, refused).",
    ["channel", "outcome"],
)
RATE_LIMITED = Counter(
    "airouter_rate_limited",
    "Requests refused by a rate limit, by the limit's scope.",
    ["scope"],
)
TOKENS = Counter(
    "airouter_tokens",
    "Tokens of served requests: input counts every prompt token (cached and cache_write are "
    "parts of it), output every generated token (reasoning is part of it).",
    ["group", "kind"],
)
COST = Counter(
    "airouter_cost",
    "What served requests cost, in the deployment's currency (the group's multiplier applied).",
    ["group"],
)
TOKEN_KINDS = ("input", "cached", "cache_write", "output", "reasoning")

_children: dict = {}  # (metric, label values) -> the labelled metric


def child(metric, *labels):
    """metric.labels(*labels), remembered: labels() validates and locks (about 2 us), a dict
    lookup costs a fiftieth of that. As bounded as the labels themselves."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def request_finished(
    *,
    request_id,
    endpoint,
    token,
    group,
    channel,
    model,
    stream,
    status,
    status_code,
    attempts,
    usage,
    cost,
    latency_ms,
    ttft_ms,
) -> None:
    """A relayed request settled (once per request that got past the hold)."""
    amount = f"{cost:f}"  # a Decimal, exact as billed ("0E-10" would be its str)
    logger.info(
        "relay %s %s token=%s group=%s channel=%s model=%s status=%s code=%s "
        "tokens=%d+%d cached=%d cost=%s attempts=%d %dms ttft=%s",
        request_id,
        endpoint,
        token,
        group or "-",
        channel or "-",
        model,
        status,
        status_code,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        amount,
        attempts,
        latency_ms,
        "-" if ttft_ms is None else f"{ttft_ms}ms",
        # LOG_FORMAT=json writes these as the line's own fields (airouter.log_format).
        extra={
            "fields": {
                "event": "request_finished",
                "request_id": request_id,
                "endpoint": endpoint,
                "token_prefix": token,
                "group": group,
                "channel": channel,
                "model": model,
                "stream": stream,
                "status": status,
                "status_code": status_code,
                "attempts": attempts,
                "input_tokens": usage.input_tokens,
                "cached_tokens": usage.cached_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "output_tokens": usage.output_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "cost": amount,
                "latency_ms": latency_ms,
                "ttft_ms": ttft_ms,
            }
        },
    )
    try:
        child(REQUESTS, endpoint, group, model, channel, status).inc()
        child(REQUEST_DURATION, channel, "true" if stream else "false").observe(latency_ms / 1000)
        if ttft_ms is not None:
            child(TIME_TO_FIRST_TOKEN, channel).observe(ttft_ms / 1000)
        counts = (
            usage.input_tokens,
            usage.cached_tokens,
            usage.cache_write_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
        )
        for kind, count in zip(TOKEN_KINDS, counts, strict=True):
            if count:
                child(TOKENS, group, kind).inc(count)
        if cost > 0:
            child(COST, group).inc(float(cost))
    except Exception:
        logger.exception("relay %s: metrics not updated", request_id)


def attempt_finished(channel: str, outcome: str) -> None:
    """One upstream attempt ended with this transports outcome."""
    try:
        child(UPSTREAM_ATTEMPTS, channel, outcome).inc()
    except Exception:
        logger.exception("metrics not updated (attempt on %s)", channel)


def rate_limited(scope: str) -> None:
    """A rate limit refused a request. `scope` names the limit (e.g. "token", "user",
    "group"): a handful of fixed words, never a name or an id."""
    try:
        RATE_LIMITED.labels(scope).inc()
    except Exception:
        logger.exception("metrics not updated (rate limit %s)", scope)


class BreakerCollector:
    """airouter_channel_breaker_open{channel}, read when scraped: channels_app.breaker's
    snapshot (every channel of the routing table), named from the routing table."""

    NAME = "airouter_channel_breaker_open"
    HELP = "1 while the channel's circuit breaker is open (half-open and closed: 0)."

    def describe(self):
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["channel"])]

    def collect(self):
        try:
            from channels_app import breaker

            states = breaker.snapshot()  # {channel id: "closed" | "open" | "half-open"}
            names = channel_names()
        except ImportError:
            return  # a build without circuit breakers: no series
        except Exception:
            logger.exception("metrics: could not read the circuit breakers")
            return
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["channel"])
        for channel_id, state in states.items():
            family.add_metric(
                [names.get(channel_id, str(channel_id))], 1.0 if state == breaker.OPEN else 0.0
            )
        yield family


def channel_names() -> dict:
    """{channel id: name} from the routing table."""
    from channels_app.routing_table import get_table

    table = get_table()
    return {
        entry.id: entry.name for entries in table.channels_by_group.values() for entry in entries
    }


BREAKERS = BreakerCollector()


_registry_lock = threading.Lock()
_registry: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    """What /metrics serves. Under gunicorn (PROMETHEUS_MULTIPROC_DIR set, before
    prometheus_client was imported) every worker writes its own files there, and a scrape
    answered by any worker sums them all; elsewhere (runserver, tests, commands) the process's
    default registry. The breaker gauge is what the answering process sees (shared through
    Redis when REDIS_URL is set)."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                    reg = CollectorRegistry()
                    multiprocess.MultiProcessCollector(reg)
                else:
                    reg = REGISTRY
                reg.register(BREAKERS)
                _registry = reg
    return _registry
