"""The usage records list in Chromium at 1400 px (issue 10): the key columns (time, model, user,
group, channel, tokens, cost, status) lie inside the viewport with the filter sidebar shown, and
the totals and the CSV link sit above the list. Screenshot: test-results/browser/<test>/."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import UsageRecord
from groups.models import User
from tests.factories import make_channel, make_group, make_token, make_user

# The header of each (the model column says "requested model").
KEY_COLUMNS = ("time", "requested model", "user", "group", "channel", "tokens", "cost", "status")
STATUSES = ["success", "success", "success", "upstream_error", "client_disconnected"]


@pytest.fixture
def records(db):
    """20 records with long-ish names, as a busy router writes them."""
    group = make_group("enterprise-eu-west")
    channel = make_channel("openai-production-primary", groups=[group])
    user = make_user("integration-service-account", group=group)
    token, _ = make_token(user, group_name=group.name)
    now = timezone.now()
    return UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"req-{i:04d}",
            user=user,
            token=token,
            group=group,
            channel=channel,
            username=user.username,
            group_name=group.name,
            channel_name=channel.name,
            endpoint="chat/completions",
            requested_model="claude-3-7-sonnet-20250219-thinking-extended",
            upstream_model="claude-3-7-sonnet-20250219",
            prompt_tokens=123_456 + i,
            cached_tokens=100_000,
            cache_write_tokens=2_000,
            completion_tokens=45_678,
            reasoning_tokens=12_000,
            multiplier=Decimal("1.25"),
            cost=Decimal("12.3456789012"),
            status=STATUSES[i % len(STATUSES)],
            status_code=200,
            latency_ms=12_345,
            stream=True,
            created=now - timedelta(minutes=i),
        )
        for i in range(20)
    )


def right_edge(locator) -> float:
    box = locator.bounding_box()
    return box["x"] + box["width"]


def test_the_usage_list_key_columns_fit_in_1400_px(page, shots, records):
    User.objects.create_superuser("root", password="pw-root-1")
    page.goto("/admin/login/?next=/admin/billing/usagerecord/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(20)
    expect(page.locator("#changelist-filter")).to_be_visible()
    expect(page.locator("#nav-sidebar")).to_be_visible()
    shots(page, "usage-list")

    headers = {
        page.locator("#result_list thead th").nth(i).inner_text().strip().lower(): i
        for i in range(page.locator("#result_list thead th").count())
    }
    # Inside the viewport, and inside the visible part of the list (which scrolls sideways
    # when the table is wider than its room: a column past it is hidden).
    right = min(page.viewport_size["width"], right_edge(page.locator("#changelist-form .results")))
    first_row = page.locator("#result_list tbody tr").first
    for column in KEY_COLUMNS:
        header = page.locator("#result_list thead th").nth(headers[column])
        cell = first_row.locator("td, th").nth(headers[column])  # a long model name is cut
        for box in (header.bounding_box(), cell.bounding_box()):
            assert box["x"] >= 0 and box["x"] + box["width"] <= right, (column, box, right)

    expect(page.locator(".usage-totals")).to_contain_text("20 records")
    expect(page.get_by_role("link", name="Export CSV")).to_be_visible()
