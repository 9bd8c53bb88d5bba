"""/pricing/ (what the user can reach and at what price) and /usage/'s spend chart and amounts."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from billing.models import UsageRecord
from channels_app.models import ModelPrice
from tests.factories import make_channel, make_group, make_token, make_user


@pytest.fixture
def alice_client(alice):
    client = Client()
    client.force_login(alice)
    return client


def section(body: str, group: str) -> str:
    found = re.search(
        rf'<section aria-labelledby="group-{group}" class="price-group".*?</section>', body, re.S
    )
    return found.group(0) if found else ""


def price_rows(html: str) -> dict[str, list[str]]:
    """{model: [input, cached input, output]} of a group's table, as shown."""
    rows = {}
    for row in re.findall(r"<tr>\s*<th scope=\"row\">.*?</tr>", html, re.S):
        model = re.search(r"<code>([^<]+)</code>", row).group(1)
        rows[model] = [cell.strip() for cell in re.findall(r"<td[^>]*>([^<]+)</td>", row)]
    return rows


def test_pricing_needs_a_sign_in(client, db):
    response = client.get("/pricing/", follow=True)
    assert response.redirect_chain[-1][0] == "/login/?next=/pricing/"


def test_pricing_lists_each_usable_group_with_prices_after_the_multiplier(alice_client, alice):
    pro = make_group("pro", multiplier="1.5", pricing_confirmed=True, description="Fast lane.")
    ch = make_channel(
        "ch-pro",
        groups=[pro],
        model_names="gpt-4o, gpt-4o-mini, tiny",
        input_price=Decimal("2"),
        output_price=Decimal("8"),
        cached_input_price=Decimal("0.5"),
    )
    # A per-model price overrides the channel's rates; blank cached input: the model's input.
    ModelPrice.objects.create(channel=ch, model="gpt-4o", input_price=5, output_price=20)
    ModelPrice.objects.create(
        channel=ch, model="tiny", input_price=Decimal("0.000001"), output_price=Decimal("0.01")
    )
    make_channel("ch-off", groups=[pro], model_names="retired-model", status="disabled")
    vip = make_group("vip", user_selectable=False, pricing_confirmed=True)
    make_channel("ch-vip", groups=[vip], model_names="o3-secret")

    response = alice_client.get("/pricing/")
    body = response.content.decode()
    assert response.status_code == 200
    assert '<a href="/pricing/" aria-current="page">Pricing</a>' in body
    pro_section = section(body, "pro")
    assert "×1.5" in pro_section and "Fast lane." in pro_section
    assert price_rows(pro_section) == {
        "gpt-4o": ["7.5", "7.5", "30"],
        "gpt-4o-mini": ["3", "0.75", "12"],
        "tiny": ["0.0000015", "0.0000015", "0.015"],  # never rounded to 0
    }
    assert "retired-model" not in body  # only a disabled channel serves it
    assert not section(body, "vip") and "o3-secret" not in body  # not alice's to use


def test_several_first_tier_channels_show_a_range_and_lower_tiers_do_not_count(alice_client, alice):
    pro = make_group("pro", multiplier="2", pricing_confirmed=True)
    make_channel("ch-a", groups=[pro], priority=5, input_price=1, output_price=4)
    make_channel("ch-b", groups=[pro], priority=5, input_price=Decimal("1.5"), output_price=4)
    make_channel("ch-fallback", groups=[pro], priority=0, input_price=100, output_price=100)
    rows = price_rows(section(alice_client.get("/pricing/").content.decode(), "pro"))
    assert rows == {"gpt-4o-mini": ["2–3", "2–3", "8"]}


def test_unconfirmed_pricing_reads_tbd_instead_of_numbers(alice_client, alice):
    default = make_group("default", pricing_confirmed=False, user_selectable=False)
    make_channel(
        "demo", groups=[default], kind="mock", model_names="mock-1", input_price=1, output_price=2
    )
    default = section(alice_client.get("/pricing/").content.decode(), "default")
    assert "your default" in default
    assert "Pricing TBD" in default
    assert price_rows(default) == {"mock-1": ["pricing TBD"]}


def test_a_group_serving_nothing_says_so(alice_client, alice):
    make_group("empty", user_selectable=True, pricing_confirmed=True)
    empty = section(alice_client.get("/pricing/").content.decode(), "empty")
    assert "Serves no model yet." in empty
    assert "<table" not in empty


# --- /usage/: amounts in full, and the chart ------------------------------------------------


def record(user, days_ago=0, **kw):
    return UsageRecord.objects.create(
        request_id=f"req-{UsageRecord.objects.count()}",
        user=user,
        requested_model="gpt-4o",
        prompt_tokens=3,
        completion_tokens=7,
        created=now() - timedelta(days=days_ago),
        **kw,
    )


def test_usage_never_shows_a_real_cost_as_zero(alice_client, alice):
    record(alice, cost=Decimal("0.0000003"))
    record(alice, cost=Decimal("0.001"))
    body = alice_client.get("/usage/").content.decode()
    assert "0.000000<" not in body
    daily = re.search(r'<table id="daily">.*?</table>', body, re.S).group(0)
    assert re.findall(r'<td class="num">([^<]+)</td>', daily)[-1] == "0.0010003"  # exact
    records = re.search(r'<table id="records">.*?</table>', body, re.S).group(0)
    assert sorted(re.findall(r'<td class="num">(0\.[0-9]+)</td>', records)) == [
        "0.0000003",
        "0.001",
    ]
    assert "<dd>0.0010003</dd>" in body  # the 30 days' total


def bars(body: str) -> list[tuple[str, str, float]]:
    """(day, cost, bar height) of every bar of the chart, oldest first."""
    return [
        (day, cost, float(height))
        for day, cost, height in re.findall(
            r'<g class="day[^"]*" data-day="([^"]+)" data-cost="([^"]+)">.*?height="([^"]+)"',
            body,
            re.S,
        )
    ]


def test_usage_charts_the_daily_spend_of_the_last_30_days(alice_client, alice, bob):
    record(alice, cost=Decimal("0.004"))
    record(alice, days_ago=3, cost=Decimal("0.002"))
    record(alice, days_ago=10, cost=Decimal("0.00000001"))  # tiny, but visible
    record(alice, days_ago=45, cost=Decimal("9"))  # outside the window
    record(bob, cost=Decimal("5"))  # someone else's

    body = alice_client.get("/usage/").content.decode()
    assert '<svg id="spend-chart"' in body
    chart = bars(body)
    assert len(chart) == 30
    today = now().date()
    assert chart[-1][0] == today.isoformat() and chart[0][0] == (today - timedelta(29)).isoformat()
    by_day = {day: (cost, height) for day, cost, height in chart}
    top = by_day[today.isoformat()]
    half = by_day[(today - timedelta(3)).isoformat()]
    tiny = by_day[(today - timedelta(10)).isoformat()]
    assert top[0] == "0.004" and half[0] == "0.002" and tiny[0] == "0.00000001"
    assert top[1] == pytest.approx(2 * half[1])
    assert 0 < tiny[1] < half[1]
    assert sum(1 for _, cost, height in chart if height > 0) == 3  # the other days: no bar
    assert "the dearest day cost 0.004" in body


def test_usage_without_spend_draws_no_chart(alice_client):
    body = alice_client.get("/usage/").content.decode()
    assert "spend-chart" not in body


def test_usage_keeps_the_group_name_of_a_deleted_group(alice_client, alice):
    gone = make_group("gone")
    rec = record(alice, group=gone, group_name="gone", cost=Decimal("0.01"))
    rec.group = None
    rec.save(update_fields=["group"])
    records = re.search(
        r'<table id="records">.*?</table>', alice_client.get("/usage/").content.decode(), re.S
    )
    assert "<td>gone</td>" in records.group(0)


def test_every_page_answers_for_a_user_with_a_token_and_no_channel(db):
    user = make_user("dora")
    make_token(user, name="k")
    client = Client()
    client.force_login(user)
    for path in ("/keys/", "/pricing/", "/usage/"):
        assert client.get(path).status_code == 200, path


def test_pricing_and_keys_pages_query_count_stays_flat(alice_client, alice):
    def counts():
        alice_client.get("/pricing/")  # the routing table loads once, then stays in memory
        alice_client.get("/keys/")
        with CaptureQueriesContext(connection) as pricing:
            alice_client.get("/pricing/")
        with CaptureQueriesContext(connection) as keys:
            alice_client.get("/keys/")
        return len(pricing.captured_queries), len(keys.captured_queries)

    make_channel("ch-0", groups=[make_group("g0")], model_names="m0")
    few = counts()
    for i in range(1, 8):
        group = make_group(f"g{i}", pricing_confirmed=True)
        ch = make_channel(f"ch-{i}", groups=[group], model_names="a, b, c, d")
        ModelPrice.objects.create(channel=ch, model="a", input_price=1, output_price=1)
    assert counts() == few
