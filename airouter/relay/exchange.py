"""One relayed request's bookkeeping: what was held, which attempt served, and the settle.

`Exchange.settle()` runs exactly once per request that got past the hold (the relay calls it
when an answer or a failure is final, streams in their generator's `finally`), and turns the
request's pending UsageRecord into its outcome: the cost from the served attempt's rates and
the usage (billing.pricing), which replaces the hold (billing.ledger.settle).
"""

import logging
import time

from airouter import observability
from airouter.relay.formats import text_chars
from airouter.text import storable
from billing import ledger, pricing, spool
from billing.models import UsageRecord
from billing.pricing import Usage

logger = logging.getLogger("airouter.relay")

SERVED = (
    UsageRecord.Status.SUCCESS,
    UsageRecord.Status.CLIENT_DISCONNECTED,
    UsageRecord.Status.STREAM_ERROR,
)


def needs_estimate(usage: Usage | None) -> bool:
    """Whether the tokens must be estimated: no usage came, or it made no sense."""
    return usage is None or usage.corrected


class Exchange:
    __slots__ = (
        "request_id",
        "token",
        "endpoint",
        "model",
        "body",
        "stream",
        "hold",
        "started",
        "attempts",
        "attempt",
        "ttft_ms",
        "settled",
        "on_settle",
    )

    def __init__(self, request_id, token, endpoint, model, body, stream, hold):
        self.request_id = request_id
        self.token = token
        self.endpoint = endpoint
        self.model = model
        self.body = body  # the parsed request, for estimating tokens when usage is missing
        self.stream = stream
        self.hold = hold
        self.started = time.monotonic()
        self.attempts = 0
        self.attempt = None  # the Attempt that served (or the last one tried)
        self.ttft_ms = None
        self.settled = False
        self.on_settle = None  # called with the usage billed (the rate limits correct to it)

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def settle(
        self,
        status: str,
        status_code: int | None,
        *,
        usage: Usage | None = None,
        output_chars: int = 0,
        error: str = "",
    ) -> None:
        """Settle the pending usage record; tokens come from usage, or are estimated (the
        request's text, and `output_chars` characters generated)."""
        if self.settled:
            return
        self.settled = True
        attempt = self.attempt
        served = status in SERVED and attempt is not None
        estimated = corrected = False
        if not served:
            usage = Usage()
        elif needs_estimate(usage):
            # No usage, or usage that made no sense (negative, fractional, absurd): estimate.
            estimated, corrected = True, usage is not None
            usage = Usage(
                input_tokens=pricing.estimate_tokens(text_chars(self.body)),
                output_tokens=pricing.estimate_tokens(output_chars) if output_chars else 0,
            )
        if self.on_settle is not None:
            try:
                self.on_settle(usage)
            except Exception:
                logger.exception("relay %s: the settle hook failed", self.request_id)
        rates = attempt.rates if attempt else None
        cost = overrun = ledger.ZERO
        if served:
            # The real cost, even beyond the hold (an upstream that ignored max_tokens, a
            # request without one): the balance may fall below zero by this overrun, and a
            # balance at or below zero refuses the next request.
            cost = pricing.usage_cost(usage, rates, attempt.multiplier)
            overrun = max(ledger.ZERO, cost - self.hold.amount)
            if overrun:
                logger.warning(
                    "relay %s: cost %s overran the hold %s", self.request_id, cost, self.hold.amount
                )
        latency_ms = self.elapsed_ms()
        outcome = {
            "group_id": attempt.group.id if attempt else None,
            "channel_id": attempt.channel.id if attempt else None,
            # The names stay on the record if the group or channel is deleted later.
            "group_name": attempt.group.name if attempt else "",
            "channel_name": attempt.channel.name if attempt else "",
            "upstream_model": attempt.channel.upstream_model(self.model) if attempt else "",
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "input_rate": rates.input if rates else 0,
            "output_rate": rates.output if rates else 0,
            "cached_input_rate": rates.cached_input if rates else 0,
            "cache_write_rate": rates.cache_write if rates else 0,
            "multiplier": attempt.multiplier if attempt else 1,
            "cost": cost,
            "overrun": overrun,
            "estimated": estimated,
            "usage_corrected": corrected,
            "status": status,
            "status_code": status_code,
            "error": storable(error[:2000]),
            "attempts": self.attempts,
            "latency_ms": latency_ms,
            "ttft_ms": self.ttft_ms,
        }
        try:
            settled = ledger.settle(self.hold, **outcome)
        except Exception:
            # The client already has (or is getting) its answer: failing it now would only make
            # it retry and pay the upstream twice. The outcome is kept and settled as soon as
            # the database takes it (billing.spool; release_holds replays it too).
            logger.exception(
                "relay %s: could not settle record %s (cost %s): kept for retry",
                self.request_id,
                self.hold.record_id,
                cost,
            )
            try:
                spool.keep(self.hold.record_id, outcome)
            except Exception:
                logger.exception(
                    "relay %s: could not keep the settle either: record %s stays pending "
                    "(status=%s cost=%s)",
                    self.request_id,
                    self.hold.record_id,
                    status,
                    cost,
                )
            return
        if not settled:
            logger.error(
                "relay %s: settled too late, release_holds had given the hold back: "
                "status=%s cost=%s was not charged",
                self.request_id,
                status,
                cost,
            )
        observability.request_finished(
            request_id=self.request_id,
            endpoint=self.endpoint,
            token=self.token.key_prefix,
            group=attempt.group.name if attempt else "",
            channel=attempt.channel.name if attempt else "",
            model=self.model,
            stream=self.stream,
            status=status,
            status_code=status_code,
            attempts=self.attempts,
            usage=usage,
            cost=cost,
            latency_ms=latency_ms,
            ttft_ms=self.ttft_ms,
        )
