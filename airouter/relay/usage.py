"""Usage as each API format reports it, read into `billing.pricing.Usage` and written back.

Readers never fail. `None` means the object reported no input count at all, so the relay
estimates instead. A count that is there but cannot be right (negative, fractional, a string,
above MAX_TOKENS; an integral float such as `12.0` is a number) makes the whole report
untrustworthy: the reader returns `Usage(corrected=True)`, and the relay estimates and says so
on the record.

The formats disagree on what "input" means: OpenAI's `prompt_tokens` (chat) and
`input_tokens` (Responses) include the cached tokens; Anthropic's `input_tokens` excludes both
the tokens read from the cache and those written to it. `Usage.input_tokens` includes both.
"""

from billing.pricing import Usage

MAX_TOKENS = 10**9  # more than any context window: a count above this is nonsense


def count(value) -> int | None:
    """A token count, or None when the value is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def _nonsense(usage: dict, fields: tuple, details: dict) -> bool:
    """Whether a count the upstream did report is not a count."""
    for name in fields:
        value = usage.get(name)
        if value is not None and count(value) is None:
            return True
    for name, inner in details.items():
        detail = usage.get(name)
        if isinstance(detail, dict):
            for field in inner:
                value = detail.get(field)
                if value is not None and count(value) is None:
                    return True
    return False


MESSAGES_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def _detail(usage: dict, name: str, field: str) -> int:
    details = usage.get(name)
    return (count(details.get(field)) or 0) if isinstance(details, dict) else 0


def _from_openai(usage, input_name: str, output_name: str) -> Usage | None:
    """OpenAI's two usage shapes (chat's prompt/completion, Responses' input/output): the
    input count includes the cached tokens and, from proxies of prompt-caching models, the
    cache writes; the details sit under `<name>_details`."""
    if not isinstance(usage, dict):
        return None
    input_details, output_details = f"{input_name}_details", f"{output_name}_details"
    details = {
        input_details: ("cached_tokens", "cache_write_tokens"),
        output_details: ("reasoning_tokens",),
    }
    if _nonsense(usage, (input_name, output_name), details):
        return Usage(corrected=True)
    prompt = count(usage.get(input_name))
    if prompt is None:
        return None
    cached = min(prompt, _detail(usage, input_details, "cached_tokens"))
    return Usage(
        input_tokens=prompt,
        output_tokens=count(usage.get(output_name)) or 0,
        cached_tokens=cached,
        cache_write_tokens=min(
            prompt - cached, _detail(usage, input_details, "cache_write_tokens")
        ),
        reasoning_tokens=_detail(usage, output_details, "reasoning_tokens"),
    )


def from_chat(usage) -> Usage | None:
    """OpenAI chat/completions/embeddings `usage`."""
    return _from_openai(usage, "prompt_tokens", "completion_tokens")


def to_chat(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def from_responses(usage) -> Usage | None:
    """OpenAI Responses `usage`."""
    return _from_openai(usage, "input_tokens", "output_tokens")


def to_responses(usage: Usage) -> dict:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def from_messages(usage) -> Usage | None:
    """Anthropic Messages `usage` (a whole answer's, or one stream event's)."""
    if not isinstance(usage, dict):
        return None
    if _nonsense(usage, MESSAGES_FIELDS, {}):
        return Usage(corrected=True)
    uncached = count(usage.get("input_tokens"))
    if uncached is None:
        return None
    cached = count(usage.get("cache_read_input_tokens")) or 0
    written = count(usage.get("cache_creation_input_tokens")) or 0
    return Usage(
        input_tokens=uncached + cached + written,
        output_tokens=count(usage.get("output_tokens")) or 0,
        cached_tokens=cached,
        cache_write_tokens=written,
    )


def merge_messages_event(total: dict, usage) -> dict:
    """Fold one Anthropic stream event's `usage` into the running one: `message_start` has
    the input counts, `message_delta` the output count so far (and, from some upstreams, the
    input counts again). The later value of a field wins."""
    if isinstance(usage, dict):
        for name, value in usage.items():
            if value is not None:  # (a nonsense count stays, for the reader to see)
                total[name] = value
    return total


def to_messages(usage: Usage) -> dict:
    return {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }
