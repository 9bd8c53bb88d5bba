from decimal import Decimal

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.usage_pages import DAYS, daily_totals, recent_usage


@login_required
@require_GET
def usage(request):
    days = daily_totals(request.user)
    records = list(recent_usage(request.user))
    context = {
        "records": records,
        "any_estimated": any(record.estimated for record in records),
        "days": days,
        "window_days": DAYS,
        "total_cost": sum((day["cost"] for day in days), Decimal("0")),
        "total_requests": sum(day["requests"] for day in days),
        "show_channel": settings.USAGE_SHOW_CHANNEL,
    }
    return render(request, "pages/usage.html", context)
