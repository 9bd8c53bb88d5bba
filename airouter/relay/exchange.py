"""One relayed request's bookkeeping: what was held, which attempt served, and the settle.

`Exchange.settle()` runs exactly once per request that got past the hold (the views call it in
`finally`, streams in their generator's `finally`), and turns the request's pending
UsageRecord into its outcome, which replaces the hold by the cost (billing.ledger.settle).
"""

import json
import logging
import time

from billing import ledger, pricing
from billing.models import UsageRecord

logger = logging.getLogger("airouter.relay")

SERVED = (
    UsageRecord.Status.SUCCESS,
    UsageRecord.Status.CLIENT_DISCONNECTED,
    UsageRecord.Status.STREAM_ERROR,
)


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

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def settle(
        self,
        status: str,
        status_code: int | None,
        *,
        usage: dict | None = None,
        completion_text: str = "",
        error: str = "",
    ) -> None:
        """Settle the pending usage record; tokens come from usage, or are estimated."""
        if self.settled:
            return
        self.settled = True
        attempt = self.attempt
        served = status in SERVED and attempt is not None
        estimated = False
        prompt = completion = 0
        if served:
            prompt, completion = _tokens(usage)
            if prompt is None:
                estimated = True
                prompt = pricing.estimate_tokens(prompt_chars(self.body))
                completion = pricing.estimate_tokens(len(completion_text)) if completion_text else 0
        cost = ledger.ZERO
        if served:
            cost = pricing.cost(
                prompt, completion, attempt.input_rate, attempt.output_rate, attempt.multiplier
            )
            if cost > self.hold.amount:
                # The hold is the most this request may take from the balance.
                error = error or f"charge capped at the hold ({self.hold.amount}; cost {cost})"
                logger.warning("relay %s: %s", self.request_id, error)
                cost = self.hold.amount
        latency_ms = self.elapsed_ms()
        try:
            settled = ledger.settle(
                self.hold,
                group_id=attempt.group.id if attempt else None,
                channel_id=attempt.channel.id if attempt else None,
                upstream_model=attempt.channel.upstream_model(self.model) if attempt else "",
                prompt_tokens=prompt,
                completion_tokens=completion,
                input_rate=attempt.input_rate if attempt else 0,
                output_rate=attempt.output_rate if attempt else 0,
                multiplier=attempt.multiplier if attempt else 1,
                cost=cost,
                estimated=estimated,
                status=status,
                status_code=status_code,
                error=error[:2000],
                attempts=self.attempts,
                latency_ms=latency_ms,
                ttft_ms=self.ttft_ms,
            )
        except Exception:
            # The client already has (or is getting) its answer: failing it now would only make
            # it retry and pay the upstream twice. The record stays pending for release_holds;
            # this line is what billing reconciles it with.
            logger.exception(
                "relay %s: could not settle (record %s stays pending): status=%s cost=%s",
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
        logger.info(
            "relay %s %s token=%s group=%s channel=%s model=%s status=%s code=%s "
            "tokens=%d+%d cost=%s attempts=%d %dms",
            self.request_id,
            self.endpoint,
            self.token.key_prefix,
            attempt.group.name if attempt else "-",
            attempt.channel.name if attempt else "-",
            self.model,
            status,
            status_code,
            prompt,
            completion,
            cost,
            self.attempts,
            latency_ms,
        )


def _tokens(usage) -> tuple[int | None, int]:
    if not isinstance(usage, dict):
        return None, 0
    prompt = usage.get("prompt_tokens")
    if not isinstance(prompt, int):
        return None, 0
    completion = usage.get("completion_tokens")
    return prompt, completion if isinstance(completion, int) else 0


MEDIA_PART_TOKENS = 2000  # held for one image or audio part, whatever its size in bytes


def prompt_bound(raw_length: int, body: dict) -> int:
    """An upper bound of the prompt's tokens, for the hold.

    Text never takes more than one token per two bytes of JSON (CJK included); an image or an
    audio part is held at a fixed MEDIA_PART_TOKENS instead of its (base64) size.
    """
    media_parts = media_bytes = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type", "text") != "text":
                media_parts += 1
                media_bytes += _strings_length(part)
    return max(0, raw_length - media_bytes) // 2 + media_parts * MEDIA_PART_TOKENS + 1


def _strings_length(value, depth=0) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict) and depth < 3:
        return sum(_strings_length(v, depth + 1) for v in value.values())
    return 0


def prompt_chars(body: dict) -> int:
    """Characters of text in a request (messages, prompt or input), for estimating tokens."""
    total = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        total += _text_length(content)
    total += _text_length(body.get("prompt")) + _text_length(body.get("input"))
    return total


def _text_length(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(
            _text_length(v.get("text")) if isinstance(v, dict) else _text_length(v) for v in value
        )
    return 0


def completion_text(data: bytes) -> str:
    """The generated text of a non-stream answer (only needed when usage is missing)."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    if not isinstance(choices, list):
        return ""  # not an answer we know (a list, a string...): no text to count
    return "".join(_choice_text(choice) for choice in choices)


def _choice_text(choice) -> str:
    if not isinstance(choice, dict):
        return ""
    for part in (choice.get("message"), choice.get("delta")):
        if isinstance(part, dict) and isinstance(part.get("content"), str):
            return part["content"]
    text = choice.get("text")
    return text if isinstance(text, str) else ""
