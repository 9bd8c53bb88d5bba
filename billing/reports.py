"""Usage totals: one aggregate query over the usage records, grouped by one dimension."""

from datetime import datetime

from django.db.models import Count, F, Sum, Value
from django.db.models.functions import Coalesce, NullIf

from billing.models import UsageRecord

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
    return list(
        records.values(key=dimension(by))
        .annotate(
            requests=Count("pk"),
            prompt_tokens=Coalesce(Sum("prompt_tokens"), Value(0)),
            cached_tokens=Coalesce(Sum("cached_tokens"), Value(0)),
            cache_write_tokens=Coalesce(Sum("cache_write_tokens"), Value(0)),
            completion_tokens=Coalesce(Sum("completion_tokens"), Value(0)),
            cost=Sum("cost"),
        )
        .order_by("-cost", "key")
    )
