"""What a user's /usage/ page shows: their recent usage records, their totals per day and a
chart of the daily spend."""

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils.timezone import now

from billing.models import UsageRecord
from billing.pricing import money
from billing.reports import as_money, money_sum

RECENT_ROWS = 50
DAYS = 30


def recent_usage(user, limit: int = RECENT_ROWS):
    return UsageRecord.objects.filter(user=user).select_related("group", "channel", "token")[:limit]


def daily_totals(user, days: int = DAYS) -> list[dict]:
    """Requests, tokens and cost per UTC day over the last `days` days, newest day first."""
    since = (now() - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    records = UsageRecord.objects.filter(user=user, created__gte=since)
    days = list(
        records.annotate(day=TruncDate("created"))
        .values("day")
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=money_sum("cost", records),
        )
        .order_by("-day")
    )
    for day in days:
        day["cost"] = as_money(day["cost"])
    return days


# The daily spend chart: an SVG drawn on the server (no script, no library). Geometry only is
# float; the amounts stay Decimal and are written in full (billing.pricing.money).
CHART_WIDTH = 960
CHART_HEIGHT = 220
CHART_LEFT = 8  # room before the first bar
CHART_TOP = 24  # room for the top line's label
CHART_BOTTOM = 28  # room for the day labels
MIN_BAR = 2  # a day with any spend shows a bar, however small beside the others
LABEL_EVERY = 5  # days between labels under the bars (the last day is always labelled)


@dataclass(frozen=True, slots=True)
class Bar:
    day: date
    cost: Decimal
    requests: int
    # SVG coordinates, written out here: a template would localise a float's decimal point.
    x: str
    y: str
    width: str
    height: str
    label_x: str  # the middle of the bar
    label: str  # under the bar ("" for most days)

    @property
    def cost_label(self) -> str:
        return money(self.cost)


@dataclass(frozen=True, slots=True)
class SpendChart:
    bars: list
    top: Decimal  # the dearest day: the height of the chart
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    baseline: int = CHART_HEIGHT - CHART_BOTTOM
    top_line: int = CHART_TOP
    left: int = CHART_LEFT
    top_text_y: int = CHART_TOP - 6
    day_text_y: int = CHART_HEIGHT - 8

    @property
    def top_label(self) -> str:
        return money(self.top)

    @property
    def right(self) -> int:
        return self.width - CHART_LEFT


def spend_chart(days_totals: list[dict], days: int = DAYS, today: date | None = None) -> SpendChart:
    """One bar per UTC day of the window, oldest first, days without usage included."""
    today = today or now().date()
    by_day = {row["day"]: row for row in days_totals}
    top = max((row["cost"] or Decimal("0") for row in days_totals), default=Decimal("0"))
    plot = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = (CHART_WIDTH - 2 * CHART_LEFT) / days
    bars = []
    for i in range(days):
        day = today - timedelta(days=days - 1 - i)
        row = by_day.get(day, {})
        cost = row.get("cost") or Decimal("0")
        height = float(cost / top) * plot if top > 0 else 0.0
        if cost > 0:
            height = max(height, MIN_BAR)
        last = i == days - 1
        bars.append(
            Bar(
                day=day,
                cost=cost,
                requests=row.get("requests", 0),
                x=_coord(CHART_LEFT + i * slot + slot * 0.15),
                y=_coord(CHART_HEIGHT - CHART_BOTTOM - height),
                width=_coord(slot * 0.7),
                height=_coord(height),
                label_x=_coord(CHART_LEFT + (i + 0.5) * slot),
                label=day.strftime("%m-%d") if last or (days - 1 - i) % LABEL_EVERY == 0 else "",
            )
        )
    return SpendChart(bars, top)


def _coord(value: float) -> str:
    return f"{value:.2f}"
