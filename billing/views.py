from decimal import Decimal

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.usage_pages import DAYS, daily_totals, recent_usage, spend_chart
from channels_app.price_list import group_offers


@login_required
@require_GET
def usage(request):
    days = daily_totals(request.user)
    records = list(recent_usage(request.user))
    context = {
        "records": records,
        "any_estimated": any(record.estimated for record in records),
        "days": days,
        "chart": spend_chart(days),
        "window_days": DAYS,
        "total_cost": sum((day["cost"] for day in days), Decimal("0")),
        "total_requests": sum(day["requests"] for day in days),
        "show_channel": settings.USAGE_SHOW_CHANNEL,
    }
    return render(request, "pages/usage.html", context)


@login_required
@require_GET
def pricing(request):
    """The models the user can reach, per usable group, at the price they would pay."""
    return render(request, "pages/pricing.html", {"offers": group_offers(request.user)})
