"""The pricing math, and the one shape usage takes once read from any API format.

cost = (uncached input x input rate + cached input x cached rate + cache writes x write rate
        + output x output rate) / 1M x the serving group's multiplier
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

PER_TOKENS = Decimal(1_000_000)
QUANTUM = Decimal("0.0000000001")  # the ledger's 10 decimal places


@dataclass(slots=True)
class Usage:
    """Token counts of one answer, normalised once from whatever format reported them.

    `input_tokens` counts every prompt token: the cached ones and the ones written to the
    cache included (OpenAI's `prompt_tokens` already does; Anthropic's `input_tokens` does not,
    and its reader adds them). `output_tokens` counts every generated token, reasoning
    included (billed as output, as the upstreams bill it).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # input tokens read from the prompt cache
    cache_write_tokens: int = 0  # input tokens written to the prompt cache
    reasoning_tokens: int = 0  # the part of output_tokens spent reasoning
    corrected: bool = False  # the upstream's report made no sense: these counts are estimates

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cached_tokens - self.cache_write_tokens)


@dataclass(frozen=True, slots=True)
class Rates:
    """A channel's prices per 1M tokens for one model (cached and write default to input)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal

    @classmethod
    def of(cls, input_rate, output_rate, cached_input=None, cache_write=None) -> "Rates":
        return cls(
            input_rate,
            output_rate,
            input_rate if cached_input is None else cached_input,
            input_rate if cache_write is None else cache_write,
        )


def usage_cost(usage: Usage, rates: Rates, multiplier: Decimal) -> Decimal:
    raw = (
        usage.uncached_input_tokens * rates.input
        + usage.cached_tokens * rates.cached_input
        + usage.cache_write_tokens * rates.cache_write
        + usage.output_tokens * rates.output
    )
    return (raw / PER_TOKENS * multiplier).quantize(QUANTUM, rounding=ROUND_HALF_UP)


def hold_amount(prompt_limit: int, completion_limit: int, priced) -> Decimal:
    """The most a request may cost: its prompt bound at the dearest input rate (cached or
    cache write included) plus its completion bound, at the dearest of the planned attempts.
    `priced` gives each attempt's (Rates, multiplier)."""
    return max(
        (
            (
                prompt_limit * max(rates.input, rates.cached_input, rates.cache_write)
                + completion_limit * rates.output
            )
            / PER_TOKENS
            * multiplier
        ).quantize(QUANTUM, rounding=ROUND_HALF_UP)
        for rates, multiplier in priced
    )


def money(amount: Decimal) -> str:
    """0.0012500000 -> '0.00125', 1E+3 -> '1000': never scientific notation. The one way
    amounts and rates are written for people."""
    return f"{amount.normalize():f}"


def estimate_tokens(text_length: int) -> int:
    """A cheap upper-leaning estimate: about 4 characters a token, never zero."""
    return max(1, (text_length + 3) // 4)
