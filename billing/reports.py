"""Usage totals: one aggregate query over the usage records, grouped by one dimension."""

from datetime import datetime
from decimal import Decimal

from django.db import connections
from django.db.models import BigIntegerField, Count, F, Sum, Value
from django.db.models.functions import Cast, Coalesce, NullIf, Round

from billing.models import UsageRecord
from groups.models import MONEY

# --by value -> the column the rows are grouped by (shown as "key").
DIMENSIONS = {
    "group": "group__name",
    "user": "user__username",
    "token": "token__key_prefix",
    "channel": "channel__name",
    "model": "requested_model",
}
# ...and the name the record kept, for when the group, user or channel is gone.
KEPT_NAMES = {"group": "group_name", "user": "username", "channel": "channel_name"}


def dimension(by: str):
    """The grouping expression: the related row's name, else the name the record kept."""
    if by not in KEPT_NAMES:
        return F(DIMENSIONS[by])
    return Coalesce(F(DIMENSIONS[by]), NullIf(F(KEPT_NAMES[by]), Value("")))


COLUMNS = [
    "key",
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "completion_tokens",
    "cost",
]


PLACES = MONEY["decimal_places"]


def money_sum(field: str, records):
    """SUM of a money column of `records`, exact: PostgreSQL sums numerics exactly, but SQLite
    keeps decimals as floats (10,000 x 0.001 sums to 9.9999999999999), so there the sum is
    over whole units of 10^-PLACES. Read the result with as_money."""
    if connections[records.db].vendor != "sqlite":
        return Sum(field)
    return Sum(Cast(Round(F(field) * Value(10**PLACES)), BigIntegerField()))


def as_money(total) -> Decimal:
    """A money_sum's result as a Decimal (0 for no rows)."""
    if total is None:
        return Decimal("0")
    if isinstance(total, int):
        return Decimal(total).scaleb(-PLACES)
    return total


def usage_totals(
    by: str = "group", since: datetime | None = None, until: datetime | None = None
) -> list[dict]:
    """Requests, prompt tokens (cached, cache writes), completion tokens and cost per `by`
    value, costliest first.

    `since` is inclusive, `until` exclusive. Rows whose group, user or channel was deleted
    are summed under the name the record kept; rows without one (a deleted token, records
    written before names were kept, a request no channel served) under key None.
    """
    records = UsageRecord.objects.all()
    if since is not None:
        records = records.filter(created__gte=since)
    if until is not None:
        records = records.filter(created__lt=until)
    rows = (
        records.values(key=dimension(by))
        .annotate(
            requests=Count("pk"),
            prompt_tokens=Coalesce(Sum("prompt_tokens"), Value(0)),
            cached_tokens=Coalesce(Sum("cached_tokens"), Value(0)),
            cache_write_tokens=Coalesce(Sum("cache_write_tokens"), Value(0)),
            completion_tokens=Coalesce(Sum("completion_tokens"), Value(0)),
            cost=money_sum("cost", records),
        )
        .order_by("-cost", "key")
    )
    return [row | {"cost": as_money(row["cost"])} for row in rows]


def list_totals(records, cap: int) -> dict:
    """Prompt, cached, cache-write and completion tokens and cost summed over the latest `cap`
    of `records` (any filtered queryset of UsageRecord): one aggregate query over a LIMITed
    subquery, so a list of 10 million rows costs what 10,000 rows do.

    Counts nothing: the admin list's paginator has already counted the same capped slice.
    """
    latest = records.order_by("-created", "-pk")[:cap]
    sums = latest.aggregate(
        prompt_tokens=Coalesce(Sum("prompt_tokens"), Value(0)),
        cached_tokens=Coalesce(Sum("cached_tokens"), Value(0)),
        cache_write_tokens=Coalesce(Sum("cache_write_tokens"), Value(0)),
        completion_tokens=Coalesce(Sum("completion_tokens"), Value(0)),
        cost=money_sum("cost", records),
    )
    return sums | {"cost": as_money(sums["cost"])}
