"""What a user's /usage/ page shows: their recent usage records and their totals per day."""

from datetime import timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils.timezone import now

from billing.models import UsageRecord

RECENT_ROWS = 50
DAYS = 30


def recent_usage(user, limit: int = RECENT_ROWS):
    return UsageRecord.objects.filter(user=user).select_related("group", "channel", "token")[:limit]


def daily_totals(user, days: int = DAYS) -> list[dict]:
    """Requests, tokens and cost per UTC day over the last `days` days, newest day first."""
    since = (now() - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return list(
        UsageRecord.objects.filter(user=user, created__gte=since)
        .annotate(day=TruncDate("created"))
        .values("day")
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("-day")
    )
