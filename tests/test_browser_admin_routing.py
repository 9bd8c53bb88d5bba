"""The operator's routing pages in Chromium at 1400 px (issue 10): the channel list (a failing
channel shown failing, the last error readable, "Test now"), a group's page (read-only channel
rows, the tokens it routes) and the routing preview reached from it and from a token's page.
Screenshots: test-results/browser/<test>/."""

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from channels_app.models import Channel
from channels_app.provisioning import MOCK_BASE_URL
from groups.models import User
from tests.factories import make_channel, make_group, make_token, make_user


@pytest.fixture
def setup(db):
    pro = make_group("pro", multiplier=Decimal("1.5"))
    make_channel(
        "demo",
        groups=[pro],
        kind=Channel.Kind.MOCK,
        base_url=MOCK_BASE_URL,
        key="",
        model_names="mock-1, gpt-4o-mini",
        priority=10,
        input_price=Decimal("1"),
        output_price=Decimal("2"),
        last_latency_ms=12,
    )
    make_channel(
        "openai-backup",
        groups=[pro],
        last_error="connection failed: [Errno 111] Connection refused while connecting to "
        "http://127.0.0.1:9/v1/chat/completions (the upstream did not answer)",
        last_latency_ms=5012,
    )
    make_channel(
        "refused-key",
        groups=[pro],
        status=Channel.Status.AUTO_DISABLED,
        status_reason="The upstream refused the channel's key: HTTP 401: invalid key",
        last_error="HTTP 401: invalid key",
    )
    member = make_user("mia", group=pro)
    token, _ = make_token(member, name="by-default")
    make_token(make_user("noa"), group_name="pro", name="names-pro")
    User.objects.create_superuser("root", password="pw-root-1")
    return pro, token


def sign_in(page, next_url):
    page.goto(f"/admin/login/?next={next_url}")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-root-1")
    page.get_by_role("button", name="Log in").click()


def row(page, name):
    return page.locator("#result_list tbody tr", has=page.get_by_role("link", name=name))


def test_channels_group_page_and_routing_preview(page, shots, setup):
    pro, token = setup
    sign_in(page, "/admin/channels_app/channel/")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    failing = row(page, "openai-backup")
    expect(failing.locator(".airouter-badge")).to_have_text("Failing")
    expect(row(page, "demo").locator(".airouter-badge")).to_have_text("Enabled")
    error = failing.locator(".airouter-error")
    expect(error).to_contain_text("Connection refused")
    box = error.bounding_box()
    assert box["x"] + box["width"] <= page.viewport_size["width"], box  # wrapped, on screen
    shots(page, "channel-list")

    row(page, "demo").locator("input.action-select").check()
    page.select_option("select[name=action]", "test_now")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist .success")).to_contain_text(
        re.compile(r"Channel demo: ok in \d+ ms\.")
    )
    shots(page, "channel-test-now")

    page.goto(f"/admin/groups/group/{pro.pk}/change/")
    inline = page.locator("#Channel_groups-group")
    expect(inline.locator("select")).to_have_count(0)
    expect(inline.get_by_role("link", name="demo")).to_be_visible()
    expect(inline).to_contain_text("Failing")
    tokens = page.locator("#routed-tokens-group")
    expect(tokens).to_contain_text("(by default group)")
    expect(tokens).to_contain_text(token.key_prefix)
    shots(page, "group-page")

    page.get_by_role("link", name="Preview how a token of pro routes").click()
    report = page.locator(".airouter-route-report")
    expect(report).to_contain_text("A token of group pro")
    expect(report).to_contain_text(re.compile(r"1\s+pro\s+demo\s+mock"))
    expect(page.locator(".airouter-route-channels")).to_contain_text("Disabled automatically")
    shots(page, "route-preview-group")

    page.goto(f"/admin/tokens/token/{token.pk}/change/")
    page.get_by_role("link", name="Preview where this token's requests go").click()
    expect(page.locator(".airouter-route-report")).to_contain_text(
        f"Token {token.key_prefix}... of mia, routed by pro (default)"
    )
    box = page.locator(".airouter-route-report").bounding_box()
    assert box["x"] + box["width"] <= page.viewport_size["width"], box
    shots(page, "route-preview-token")
