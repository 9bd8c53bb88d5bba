"""What the router tells operators about its traffic: one log line per proxied request (and,
to come, Prometheus metrics). The relay calls these hooks; they never fail a request."""

import logging

logger = logging.getLogger("airouter.relay")


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
    logger.info(
        "relay %s %s token=%s group=%s channel=%s model=%s status=%s code=%s "
        "tokens=%d+%d cached=%d cost=%s attempts=%d %dms",
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
        cost,
        attempts,
        latency_ms,
    )


def attempt_finished(channel: str, outcome: str) -> None:
    """One upstream attempt ended with this transports outcome."""
