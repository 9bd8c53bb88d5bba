"""The key page's group guide, the one-time key's quick check, /pricing/ and /usage/'s chart, in
Debian's Chromium at 1400 px (the `page` fixture of tests/browser.py), against live_server.

The `pro` group has a failing channel tried first (its breaker open) serving the alphabetically
first model, and a `mock` channel serving an embedding model and a chat model: the quick check
must name the chat model, and its curl, run as the page shows it, must answer. Screenshots of
every page land in test-results/browser/<test>/ (ignored by git).
"""

import json
import re
import urllib.request
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from channels_app import breaker
from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_user


@pytest.fixture
def groups(settings):
    settings.REDIS_URL = ""
    settings.CHANNEL_FAILURE_THRESHOLD = 1
    breaker.reset()
    default = make_group(
        "default", description="Every user starts here.", user_selectable=False, auto_priority=100
    )
    make_channel(
        "demo", groups=[default], kind="mock", model_names="mock-1", input_price=1, output_price=2
    )
    pro = make_group(
        "pro",
        description="The fast lane.",
        multiplier=Decimal("1.5"),
        pricing_confirmed=True,
        auto_priority=10,
    )
    broken = make_channel("ch-broken", groups=[pro], model_names="aaa-chat", priority=10)
    breaker.record(broken.pk, Channel.Outcome.FAILURE, "HTTP 500")  # failing: left out
    make_channel(
        "ch-mock",
        groups=[pro],
        kind="mock",
        model_names="aaa-embedding, mock-chat",
        priority=1,
        input_price=Decimal("2"),
        output_price=Decimal("4"),
        cached_input_price=Decimal("1"),
    )
    make_group("empty", user_selectable=True)  # no channel: not offered
    yield
    breaker.reset()


def run_curl(curl: str) -> tuple[dict, dict]:
    """Send the request the page's curl shows (URL, headers, body); (answer, its headers)."""
    url = re.match(r"curl (\S+)", curl).group(1)
    headers = dict(re.findall(r'-H "([^:]+): ([^"]+)"', curl))
    body = re.search(r"-d '(.*)'", curl, re.S).group(1)
    request = urllib.request.Request(url, body.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer), dict(answer.headers)


@pytest.mark.django_db(transaction=True)
def test_group_details_quick_check_pricing_and_usage_chart(page, shots, live_server, groups):
    make_user("alice", balance=Decimal("10"))
    page.goto("/keys/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()

    # The picker offers the groups that serve something, and beside it what each one is.
    picker = page.locator("#id_group")
    assert sorted(picker.locator("option").all_inner_texts()) == ["auto", "default", "pro"]
    pro = page.locator('.group-card[data-group="pro"]')
    expect(pro).to_be_visible()
    expect(pro).to_contain_text("×1.5")
    expect(pro).to_contain_text("The fast lane.")
    expect(pro).to_contain_text("Models: aaa-chat, aaa-embedding, mock-chat")
    default = page.locator('.group-card[data-group="default"]')
    expect(default).to_contain_text("your default")
    expect(default).to_contain_text("pricing TBD")
    expect(page.locator('.group-card[data-group="auto"]')).to_contain_text(
        "Tries pro, then default"
    )
    expect(page.locator("#not-offered")).to_have_text(
        "Not offered, as they serve no model yet: empty."
    )
    # The picked group's card is outlined; picking another moves the outline (CSS, no script).
    outline = "el => getComputedStyle(el).boxShadow"
    assert default.evaluate(outline) != "none" and pro.evaluate(outline) == "none"
    picker.select_option("pro")
    assert pro.evaluate(outline) != "none" and default.evaluate(outline) == "none"
    box = pro.bounding_box()
    assert box["x"] + box["width"] <= 1400  # beside the form, inside the viewport
    shots(page, "keys-group-guide")

    # A key in pro: the quick check names the chat model a working channel serves...
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Key created")).to_be_visible()
    expect(page.locator("#check-model")).to_have_text("mock-chat")
    shots(page, "key-created-quick-check")

    # ...and its curl answers, through the mock channel.
    curl = page.locator("#curl").inner_text()
    assert curl.startswith(f"curl {live_server.url}/v1/chat/completions")
    answer, headers = run_curl(curl)
    assert answer["model"] == "mock-chat"
    assert answer["choices"][0]["message"]["content"] == "Mock answer to: Say hello"
    assert answer["usage"]["prompt_tokens"] == 3 and answer["usage"]["completion_tokens"] == 7
    assert headers["x-airouter-channel"] == "ch-mock"

    # Pricing: per group, per model, the multiplier applied; TBD where unconfirmed.
    page.get_by_role("link", name="Pricing").click()
    expect(page.get_by_role("heading", name="Pricing", level=1)).to_be_visible()
    mock_chat = page.locator('section[data-group="pro"] tr', has_text="mock-chat")
    expect(mock_chat.locator("td")).to_have_text(["3", "1.5", "6"])  # 2, 1, 4 x 1.5
    expect(page.locator('section[data-group="default"] tbody td')).to_have_text(["pricing TBD"])
    expect(page.locator('section[data-group="empty"]')).to_contain_text("Serves no model yet.")
    shots(page, "pricing")

    # Usage: the request, its cost in full, and the chart of the daily spend.
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage", level=1)).to_be_visible()
    chart = page.locator("#spend-chart")
    expect(chart).to_be_visible()
    assert chart.bounding_box()["width"] > 600
    spent = page.locator("#spend-chart g.spent")
    expect(spent).to_have_count(1)
    expect(spent).to_have_attribute("data-cost", "0.000051")  # (3 x 2 + 7 x 4) / 1M x 1.5
    assert float(spent.locator("rect").get_attribute("height")) > 100  # the dearest day: tall
    expect(page.locator("#daily tbody tr td")).to_have_text(["1", "3", "7", "0.000051"])
    shots(page, "usage-chart")
