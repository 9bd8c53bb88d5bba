"""The admin dashboard in Chromium at 1400 px: figures, the two charts, the tables by group,
model and channel and the channels needing attention, with the app list still below."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from billing import rollups
from billing.models import UsageRecord
from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def seed():
    """A month of traffic on two groups and three channels, an error now and then."""
    pro, default = make_group("pro"), make_group("default")
    channels = [
        make_channel("openai-main", groups=[pro], model_names="gpt-4o,gpt-4o-mini"),
        make_channel("anthropic", groups=[pro, default], model_names="claude-sonnet"),
        make_channel(
            "backup",
            groups=[default],
            status=Channel.Status.AUTO_DISABLED,
            status_reason="The upstream refused the channel's key: HTTP 401 invalid api key",
        ),
    ]
    now = timezone.now()
    rows = []
    for i in range(400):
        channel = channels[i % 3]
        group = pro if i % 2 else default
        model = channel.model_list[i % len(channel.model_list)]
        hours = (i * 7) % (24 * 29) if i % 4 else i % 24  # a busier last day
        rows.append(
            UsageRecord(
                request_id=f"req-{i}",
                group=group,
                group_name=group.name,
                channel=channel,
                channel_name=channel.name,
                requested_model=model,
                prompt_tokens=200 + i,
                completion_tokens=50 + i % 30,
                cost=Decimal("0.0004") * (1 + i % 5),
                status="upstream_error" if i % 11 == 0 else "success",
                created=now - timedelta(hours=hours, minutes=i % 60),
            )
        )
    UsageRecord.objects.bulk_create(rows)
    call_command("rollup_usage", verbosity=0)  # cron's run: the month's history


def test_the_dashboard_at_1400px(page, shots):
    make_user("root", is_staff=True, is_superuser=True, password="pw-root-1")
    seed()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root-1")
    page.get_by_role("button", name="Log in").click()

    day = page.locator("#dash-day")
    expect(day.get_by_role("heading", name="Last 24 hours")).to_be_visible()
    expect(page.locator("#dash-month").get_by_role("heading", name="Last 30 days")).to_be_visible()
    shots(page, "dashboard")
    # The 24 hours are the current hour and the 23 before it (an hour may turn meanwhile).
    current = rollups.hour_of(timezone.now())
    expected = {
        UsageRecord.objects.filter(created__gte=hour - timedelta(hours=23)).count()
        for hour in (current - rollups.HOUR, current)
    }
    expect(day.locator('[data-figure="requests"]')).to_be_visible()
    assert int(day.locator('[data-figure="requests"]').inner_text()) in expected
    expect(page.locator('#dash-month [data-figure="requests"]')).to_have_text("400")  # all of them
    expect(page.locator('#dash-month [data-figure="spend"]')).to_be_visible()
    for window in ("day", "month"):
        chart = page.locator(f"#dash-{window} svg.airouter-chart")
        expect(chart).to_be_visible()
        box = chart.bounding_box()
        assert box["width"] > 400 and box["height"] > 100  # a chart, not a speck
        assert box["x"] + box["width"] <= 1400  # inside the viewport
        expect(chart.locator("polyline.spend-line")).to_have_count(1)
    expect(page.locator("#dash-month-channel")).to_contain_text("openai-main")
    expect(page.locator("#dash-month-model")).to_contain_text("claude-sonnet")
    expect(page.locator("#dash-month-group")).to_contain_text("default")
    attention = page.locator("#dash-attention")
    expect(attention.get_by_role("link", name="backup")).to_be_visible()
    expect(attention).to_contain_text("Disabled automatically")
    expect(page.get_by_role("link", name="Usage records")).to_be_visible()  # the app list

    attention.get_by_role("link", name="backup").click()
    expect(page.get_by_role("heading", name="Change channel")).to_be_visible()
