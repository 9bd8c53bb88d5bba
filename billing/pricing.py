"""The pricing math: cost = (prompt x input + completion x output) / 1M x multiplier."""

from decimal import ROUND_HALF_UP, Decimal

PER_TOKENS = Decimal(1_000_000)
QUANTUM = Decimal("0.0000000001")  # the ledger's 10 decimal places


def cost(
    prompt_tokens: int,
    completion_tokens: int,
    input_rate: Decimal,
    output_rate: Decimal,
    multiplier: Decimal,
) -> Decimal:
    raw = (prompt_tokens * input_rate + completion_tokens * output_rate) / PER_TOKENS * multiplier
    return raw.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def estimate_tokens(text_length: int) -> int:
    """A cheap upper-leaning estimate: about 4 characters a token, never zero."""
    return max(1, (text_length + 3) // 4)
