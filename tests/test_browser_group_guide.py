"""The README's group guide, walked in the admin in Chromium at 1400 px against the demo that
`make run` seeds (issue 10): create a group, tag the demo `mock` channel with it, create a token
routed by it, preview the token's route, send a request through the mock channel with the
openai SDK, find that request on the dashboard and in the usage list, and count the API users
apart from the staff. No provider key.
Screenshots: test-results/browser/<test>/."""

import re

import openai
import pytest
from playwright.sync_api import expect

from billing.models import UsageRecord
from channels_app import demo
from groups.models import User
from tests.factories import make_user
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_group_guide_through_the_mock_channel(page, shots, live_server):
    root = User.objects.create_superuser("root", password="pw-root-1")
    assert demo.seed("root") is not None  # what `make run` seeds on a fresh database

    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#airouter-dashboard")).to_be_visible()

    # 1. A group, selectable so the admin's own token may use it.
    page.goto("/admin/groups/group/add/")
    page.fill("#id_name", "team")
    page.fill("#id_description", "The team's lane.")
    page.fill("#id_multiplier", "2")
    page.check("#id_user_selectable")
    shots(page, "group-add")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist .success")).to_contain_text("team")

    # 2. Tag the demo channel with it (the groups picker on the channel's page).
    page.goto("/admin/channels_app/channel/")
    page.get_by_role("link", name="demo", exact=True).click()
    page.select_option("#id_groups_from", label="team")
    page.click("#id_groups_add")
    shots(page, "channel-tagged")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist .success")).to_contain_text("demo")
    listed = page.locator("#result_list tbody tr", has=page.get_by_role("link", name="demo"))
    expect(listed.locator("td.field-group_names")).to_contain_text("team")

    # The group's page lists the channel read-only, with its state.
    page.goto("/admin/groups/group/")
    page.get_by_role("link", name="team", exact=True).click()
    inline = page.locator("#Channel_groups-group")
    expect(inline.get_by_role("link", name="demo")).to_be_visible()
    expect(inline).to_contain_text("mock-1")
    shots(page, "group-page")

    # 3. A token of root's routed by the group; its key is shown once.
    page.goto(f"/admin/tokens/token/add/?owner={root.pk}")
    page.fill("#id_name", "team-key")
    page.select_option("#id_route", "team")
    page.get_by_role("button", name="Save", exact=True).click()
    key = page.locator("#new-key").inner_text().strip()
    assert key.startswith("sk-"), key
    shots(page, "token-created")

    # 4. Its route, previewed from the token's page.
    token = Token.objects.get(owner=root, name="team-key")
    page.goto(f"/admin/tokens/token/{token.pk}/change/")
    page.get_by_role("link", name="Preview where this token's requests go").click()
    report = page.locator(".airouter-route-report")
    expect(report).to_contain_text("routed by team")
    page.fill("input[name=model]", "mock-1")
    page.get_by_role("button", name="Preview", exact=True).click()
    expect(report).to_contain_text(re.compile(r"1\s+team\s+demo\s+mock"))
    shots(page, "route-preview")

    # 5. A request with the openai SDK, served by the mock channel and billed at team's x2.
    client = openai.OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="mock-1", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert raw.headers["x-airouter-channel"] == "demo"
    answer = raw.parse()
    assert answer.choices[0].message.content
    record = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (record.group_name, record.channel_name, record.status) == ("team", "demo", "success")
    assert record.cost > 0 and record.multiplier == 2

    # 6. On the dashboard (the last 24 hours, by group) ...
    page.goto("/admin/")
    expect(page.locator('#dash-day [data-figure="requests"]')).to_have_text("1")
    expect(page.locator("#dash-day-group")).to_contain_text("team")
    expect(page.locator("#dash-day-channel")).to_contain_text("demo")
    shots(page, "dashboard")

    # ... and in the usage list, its key columns inside the 1400 px viewport.
    page.goto("/admin/billing/usagerecord/")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("mock-1")
    expect(rows.first).to_contain_text("team")
    expect(rows.first).to_contain_text("demo")
    width = page.viewport_size["width"]
    for column in ("cost_display", "status_badge", "group_label", "channel_label", "tokens"):
        box = rows.first.locator(f"td.field-{column}").bounding_box()
        assert box["x"] + box["width"] <= width, (column, box)
    shots(page, "usage-list")

    # The Users list counts the API users apart from the staff.
    make_user("carol")
    page.goto("/admin/groups/user/")
    expect(page.locator(".airouter-user-counts")).to_have_text(
        re.compile(r"1 API user\s+· 1 staff")
    )
    page.get_by_role("link", name="1 API user").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list")).to_contain_text("carol")
    shots(page, "users-api")
