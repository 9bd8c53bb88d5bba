"""What the admin dashboard shows: the last 24 hours and 30 days of usage, read from the hourly
rollups (billing/rollups.py), and the channels needing attention.

`build(user)` refreshes the recent hours first (so a request just made is counted), then reads
only the rollup table: a handful of aggregate queries over at most 720 hours of rows.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import DatabaseError
from django.db.models import Q, Sum
from django.urls import reverse
from django.utils import timezone

from billing import chart, rollups
from billing.models import UsageRollup
from billing.reports import as_money, money_sum
from channels_app import breaker, channel_state
from channels_app.models import Channel

logger = logging.getLogger(__name__)

TOP = 8  # rows shown per dimension
DIMENSIONS = (
    ("group", "group_name", "Group"),
    ("model", "model", "Model"),
    ("channel", "channel_name", "Channel"),
)
SUMS = ("requests", "errors", "prompt_tokens", "cached_tokens", "completion_tokens")


@dataclass
class Row:
    name: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal("0")
    url: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    # Counts as people read them (12,345): the template's own filters do not group digits.
    @property
    def requests_text(self) -> str:
        return f"{self.requests:,}"

    @property
    def errors_text(self) -> str:
        return f"{self.errors:,}"

    @property
    def tokens_text(self) -> str:
        return f"{self.tokens:,}"

    @property
    def tokens_title(self) -> str:
        return (
            f"{self.prompt_tokens:,} in ({self.cached_tokens:,} cached), "
            f"{self.completion_tokens:,} out"
        )

    def add(self, other: "Row") -> None:
        for name in (*SUMS, "cost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Table:
    key: str
    title: str
    rows: list[Row]
    more: int  # rows past TOP


@dataclass
class Window:
    key: str  # "day" | "month"
    title: str
    totals: Row
    tables: list[Table]
    chart: str  # inline SVG


@dataclass
class Attention:
    channel: Channel
    url: str
    level: str  # badge level
    state: str
    detail: str


@dataclass
class Dashboard:
    money: bool  # whether the viewer may see spend
    windows: list[Window]
    attention: list[Attention] | None  # None: the viewer may not see channels
    notes: list[str] = field(default_factory=list)
    empty: bool = True


def _row(name: str, data: dict) -> Row:
    return Row(
        name=name,
        cost=as_money(data["cost"]),
        **{key: data[key] or 0 for key in SUMS},
    )


def _sums():
    return {name: Sum(name) for name in SUMS} | {
        "cost": money_sum("cost", UsageRollup.objects.all())
    }


def build(user, now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    try:
        done = rollups.refresh(floor=now - rollups.RECENT)
    except DatabaseError:  # a write lock held too long (SQLite under load): show what is summed
        logger.warning("Dashboard: the recent rollups could not be refreshed.", exc_info=True)
        done = None
    money = user.has_perm("billing.view_usagerecord")
    may_see_channels = user.has_perm("channels_app.view_channel")
    notes = _notes(done, now)

    current = rollups.hour_of(now)
    day_start = current - timedelta(hours=23)
    local_today = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = rollups.hour_of(local_today - timedelta(days=29))

    # One query: every hour of the 30 days (at most 720 rows): both charts and both totals.
    hourly = {
        data["hour"]: _row("", data)
        for data in UsageRollup.objects.filter(hour__gte=month_start)
        .values("hour")
        .annotate(**_sums())
        .order_by("hour")
    }
    day_series = [(h, hourly.get(h) or Row("")) for h in _hours(day_start, current)]
    month_series = _days(hourly, local_today)
    windows = []
    for key, title, start, series, labels in (
        ("day", "Last 24 hours", day_start, day_series, "hour"),
        ("month", "Last 30 days", month_start, month_series, "day"),
    ):
        totals = Row("Total")
        for _, row in series:
            totals.add(row)
        windows.append(
            Window(
                key=key,
                title=title,
                totals=totals,
                tables=[
                    _table(start, dim, money)
                    for dim in DIMENSIONS
                    if dim[0] != "channel" or may_see_channels
                ],
                chart=chart.svg(series, labels=labels, money=money, title=title),
            )
        )
    attention = _attention() if may_see_channels else None
    return Dashboard(
        money=money,
        windows=windows,
        attention=attention,
        notes=notes,
        empty=not any(row.requests for row in hourly.values()),
    )


def _hours(start: datetime, last: datetime) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(int((last - start) / rollups.HOUR) + 1)]


def _days(hourly: dict, local_today: datetime) -> list[tuple[datetime, Row]]:
    """The hourly rows summed by local day, the 30 days ending today (empty days included)."""
    days = {local_today - timedelta(days=i): Row("") for i in range(29, -1, -1)}
    for hour, row in hourly.items():
        day = timezone.localtime(hour).replace(hour=0, minute=0, second=0, microsecond=0)
        if day in days:
            days[day].add(row)
    return list(days.items())


def _table(start: datetime, dim: tuple[str, str, str], money: bool) -> Table:
    key, column, title = dim
    found = [
        _row(data[column], data)
        for data in UsageRollup.objects.filter(hour__gte=start)
        .values(column)
        .annotate(**_sums())
        .order_by()
    ]
    found.sort(key=lambda r: ((r.cost if money else 0), r.requests, r.name), reverse=True)
    shown = found[:TOP]
    if key == "channel":
        ids = dict(
            Channel.objects.filter(name__in=[r.name for r in shown]).values_list("name", "pk")
        )
        for row in shown:
            if row.name in ids:
                row.url = reverse("admin:channels_app_channel_change", args=[ids[row.name]])
    return Table(key, title, shown, len(found) - len(shown))


def _notes(done: rollups.Refreshed | None, now: datetime) -> list[str]:
    """What the figures leave out: hours the dashboard does not sum itself (cron's job), or
    every recent hour when this page could not refresh them (done is None)."""
    if done is None:
        return [
            "The last hours could not be brought up to date just now (the database was busy): "
            "the figures are those summed before. Reload in a moment."
        ]
    floor = rollups.hour_of(now - rollups.RECENT)
    if done.watermark is None:
        return [
            "Usage older than 24 hours is not summed yet: run `manage.py rollup_usage` once "
            "(it builds the history), then every few minutes from cron."
        ]
    if done.watermark < floor:
        since = timezone.localtime(done.watermark).strftime("%Y-%m-%d %H:00")
        return [
            f"Usage from {since} until 24 hours ago may be incomplete: a request from then "
            "has not settled, or no refresh ran since. Run `manage.py release_holds` and "
            "`manage.py rollup_usage` from cron."
        ]
    return []


# The channel list's badge says the breaker's whole sentence; here it is the detail beside.
ATTENTION_LABELS = {"cooling": "Cooling down", "half_open": "Trying again (half-open)"}


def _attention() -> list[Attention]:
    """Channels disabled automatically, cooling down (breaker open or half-open) or whose last
    attempt failed: the operator's to-do list."""
    breaker.refresh(wait=True)
    states = breaker.current()
    now = time.time()
    cooling = {cid for cid, state in states.items() if state.status(now) != breaker.CLOSED}
    channels = Channel.objects.filter(
        Q(status=Channel.Status.AUTO_DISABLED)
        | Q(status=Channel.Status.ENABLED, pk__in=cooling)
        | (Q(status=Channel.Status.ENABLED) & ~Q(last_error=""))
    ).order_by("name")
    found = []
    for channel in channels:
        url = reverse("admin:channels_app_channel_change", args=[channel.pk])
        state = channel_state.of(channel, states, now)  # the channel list's words and colours
        label = ATTENTION_LABELS.get(state.key, state.label)
        found.append(Attention(channel, url, state.level, label, state.title))
    return found
