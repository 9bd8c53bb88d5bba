"""Usage records as CSV, streamed: one line per record, read in chunks from the database, so an
export of a million rows never holds them in memory.

No key and no secret: a token is named by its prefix. Names typed by people or clients (models,
users, groups, channels, request ids) that a spreadsheet would run as a formula (starting with
= + - @, a tab or a carriage return) get a leading apostrophe.
"""

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC

from billing.models import UsageRecord
from billing.pricing import money

COLUMNS = [
    "created",
    "request_id",
    "user",
    "token",
    "group",
    "channel",
    "endpoint",
    "requested_model",
    "upstream_model",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "input_rate",
    "cached_input_rate",
    "cache_write_rate",
    "output_rate",
    "multiplier",
    "cost",
    "status",
    "status_code",
    "latency_ms",
    "stream",
    "estimated",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHUNK = 2_000


def text(value: str) -> str:
    """A text cell a spreadsheet shows as text, never runs."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def name(related, kept_name: str) -> str:
    """The user, group or channel's name; once it is deleted, the name the record kept."""
    return str(related) if related is not None else kept_name


def row(record: UsageRecord) -> list:
    return [
        record.created.astimezone(UTC).isoformat(),
        text(record.request_id),
        text(name(record.user, record.username)),
        f"{record.token.key_prefix}..." if record.token_id else "",
        text(name(record.group, record.group_name)),
        text(name(record.channel, record.channel_name)),
        text(record.endpoint),
        text(record.requested_model),
        text(record.upstream_model),
        record.prompt_tokens,
        record.cached_tokens,
        record.cache_write_tokens,
        record.completion_tokens,
        record.reasoning_tokens,
        money(record.input_rate),
        money(record.cached_input_rate),
        money(record.cache_write_rate),
        money(record.output_rate),
        money(record.multiplier),
        money(record.cost),
        record.status,
        "" if record.status_code is None else record.status_code,
        "" if record.latency_ms is None else record.latency_ms,
        record.stream,
        record.estimated,
    ]


class _Line:
    """csv.writer's file: hands back the line it was given."""

    def write(self, line: str) -> str:
        return line


def csv_lines(records) -> Iterator[str]:
    """The header, then one CSV line per record of the queryset `records`, in its order."""
    writer = csv.writer(_Line())
    yield writer.writerow(COLUMNS)
    rows: Iterable[UsageRecord] = records.select_related(
        "user", "token", "group", "channel"
    ).iterator(chunk_size=CHUNK)
    for record in rows:
        yield writer.writerow(row(record))
