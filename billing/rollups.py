"""Hourly usage rollups: the usage records summed by hour, group, model and channel.

The admin dashboard reads these, never the records table, so it costs the same at 10 million
records as at ten. They are built from the records, not on the request path (which keeps its
round trips): `refresh()` recomputes hours from the records of each hour (a range scan on the
indexed `created`) and replaces that hour's rows in one transaction, so running it again is
always safe.

A record is written pending when its request starts and settles later (a stream may run for
RELAY_MAX_STREAM_SECONDS; `release_holds` abandons one whose process died), with the `created`
of its start. So an hour is **final** only once it has ended (and SETTLE_MARGIN more: a record
commits a moment after its `created`) with no record in flight. The watermark is the first hour
that is not final: every hour before it is summed for good, and each refresh starts there. The
dashboard refreshes from the watermark but never further back than RECENT (a request just made
shows at once; the page never reads more of the records); `manage.py rollup_usage`, from cron,
refreshes everything from the watermark, and with `--since` rebuilds older history.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count, F, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.models import RollupWatermark, UsageRecord, UsageRollup
from billing.reports import as_money, dimension, money_sum

HOUR = timedelta(hours=1)
SETTLE_MARGIN = timedelta(minutes=5)
RECENT = timedelta(hours=24)

Status = UsageRecord.Status
NOT_ERRORS = (Status.SUCCESS, Status.PENDING)
TOKENS = ("prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens")


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour `moment` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def watermark() -> datetime | None:
    """The first hour not yet final (None: the rollups were never built)."""
    return RollupWatermark.objects.filter(pk=1).values_list("hour", flat=True).first()


@dataclass
class Refreshed:
    start: datetime
    end: datetime
    hours: int  # hours recomputed (an empty stretch counts as one)
    rows: int  # rollup rows written
    watermark: datetime | None


def refresh(since: datetime | None = None, floor: datetime | None = None) -> Refreshed:
    """Recompute the rollups from the watermark (or `since`) up to the current hour, never
    before `floor` (the dashboard's bound). A first run (no watermark) starts at the oldest
    record. Each hour is replaced in a transaction of its own, holding the watermark row's
    lock, so concurrent refreshes (the dashboard and cron) serialize per hour."""
    mark = watermark()
    if since is not None:
        start = hour_of(since)
    elif mark is not None:
        start = mark
    elif floor is not None:
        start = hour_of(floor)
    else:
        oldest = UsageRecord.objects.order_by("created").values_list("created", flat=True)[:1]
        start = hour_of(oldest[0] if oldest else timezone.now())
    if floor is not None:
        start = max(start, hour_of(floor))
    end = hour_of(timezone.now()) + HOUR
    # Never built, and nothing older than where we start: what we sum is the whole history.
    claim = mark is None and not UsageRecord.objects.filter(created__lt=start).exists()
    done = Refreshed(start, end, 0, 0, mark)
    hour = start
    while hour < end:
        hour, rows, mark = _refresh_hour(hour, end, claim)
        claim = False
        done.hours += 1
        done.rows += rows
    done.watermark = mark
    return done


def _refresh_hour(hour: datetime, end: datetime, claim: bool) -> tuple[datetime, int, datetime]:
    """Replace the rollups of [hour, hour + 1h), or of the empty stretch from `hour` to the
    next record's hour; move the watermark. Returns (where the next step starts, rows written,
    the watermark)."""
    now = timezone.now()  # read before the records: what commits after is not final here
    with transaction.atomic():
        mark, _ = RollupWatermark.objects.select_for_update().get_or_create(pk=1)
        if claim and mark.hour is None:
            mark.hour = hour
        rows = _sums(hour, hour + HOUR)
        stop = hour + HOUR
        if not rows:  # skip to the next record's hour (or the end) in one step
            following = (
                UsageRecord.objects.filter(created__gte=stop, created__lt=end)
                .order_by("created")
                .values_list("created", flat=True)[:1]
            )
            stop = hour_of(following[0]) if following else end
        UsageRollup.objects.filter(hour__gte=hour, hour__lt=stop).delete()
        UsageRollup.objects.bulk_create(rows)
        final = stop + SETTLE_MARGIN <= now and not any(row.pending for row in rows)
        if mark.hour is not None:
            if not final:
                mark.hour = min(mark.hour, hour)
            elif mark.hour >= hour:
                mark.hour = max(mark.hour, stop)
        mark.refreshed = now
        mark.save()
    return stop, len(rows), mark.hour


def _sums(start: datetime, stop: datetime) -> list[UsageRollup]:
    """The records created in [start, stop) summed by group, model and channel, as unsaved
    rollup rows of hour `start`."""
    records = UsageRecord.objects.filter(created__gte=start, created__lt=stop)
    found = (
        records.values(
            group_key=dimension("group"),
            model_key=F("requested_model"),
            channel_key=dimension("channel"),
        )
        .annotate(
            n=Count("pk"),
            n_errors=Count("pk", filter=~Q(status__in=NOT_ERRORS)),
            n_pending=Count("pk", filter=Q(status=Status.PENDING)),
            **{f"sum_{name}": Coalesce(Sum(name), Value(0)) for name in TOKENS},
            sum_cost=money_sum("cost", records),
        )
        .order_by()
    )
    return [
        UsageRollup(
            hour=start,
            group_name=row["group_key"] or "",
            model=row["model_key"] or "",
            channel_name=row["channel_key"] or "",
            requests=row["n"],
            errors=row["n_errors"],
            pending=row["n_pending"],
            cost=as_money(row["sum_cost"]),
            **{name: row[f"sum_{name}"] for name in TOKENS},
        )
        for row in found
    ]
