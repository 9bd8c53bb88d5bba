"""The operator's routing view of the admin: the routing preview (the plan `route` prints),
channels that look as they behave ("Test now", Failing, the latency filter, the last error),
a group's page (read-only channel rows, the tokens it routes) and the users list's counts."""

import contextlib
import html
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from channels_app import breaker
from channels_app.admin import TEST_NOW_MAX
from channels_app.models import Channel
from channels_app.provisioning import MOCK_BASE_URL
from tests.factories import make_channel, make_group, make_token, make_user

pytestmark = pytest.mark.django_db

PREVIEW = "admin:channels_app_channel_route"
CHANNELS = "admin:channels_app_channel_changelist"
FAILURE = Channel.Outcome.FAILURE


@pytest.fixture(autouse=True)
def no_breakers():
    breaker.reset()
    yield
    breaker.reset()


def route_output(**kw) -> str:
    """What `manage.py route` prints (an empty plan too)."""
    out = StringIO()
    with contextlib.suppress(CommandError):
        call_command("route", stdout=out, **kw)
    return out.getvalue()


def report_of(page: str) -> str:
    """The plan's text as the preview shows it."""
    pre = re.search(r'<pre class="airouter-route-report">(.*?)</pre>', page, re.S).group(1)
    return html.unescape(re.sub(r"<[^>]+>", "", pre))


def rows_of(page: str) -> dict[str, str]:
    """The preview's channel table: channel name -> its row's text (badge titles included)."""
    table = re.search(r'<table class="airouter-route-channels">(.*?)</table>', page, re.S).group(1)
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]:
        name = re.search(r"<a [^>]*>([^<]+)</a>", row).group(1)
        rows[name] = html.unescape(re.sub(r"\s+", " ", row))
    return rows


def preview(client, **query):
    response = client.get(reverse(PREVIEW), query)
    assert response.status_code == 200
    return response.content.decode()


# --- the routing preview -------------------------------------------------------------------


def test_preview_of_a_token_shows_the_route_commands_plan_and_each_channels_state(
    admin_client, settings
):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    pro = make_group("pro")
    make_channel("primary", groups=[pro], priority=10, model_names="gpt-4o-mini, gpt-4o")
    make_channel("backup", groups=[pro], priority=5)
    cooling = make_channel("cooling", groups=[pro], priority=1)
    make_channel(
        "refused",
        groups=[pro],
        status=Channel.Status.AUTO_DISABLED,
        status_reason="The upstream refused the channel's key: HTTP 401",
    )
    make_channel("other-model", groups=[pro], model_names="gpt-4o")
    for _ in range(3):
        breaker.record(cooling.pk, FAILURE, "HTTP 500: boom")
    token, _ = make_token(make_user("nia", group=pro))

    page = preview(admin_client, token=token.key_prefix, model="gpt-4o-mini")
    shown = report_of(page)
    assert shown.strip() == route_output(token=token.key_prefix, model="gpt-4o-mini").strip()
    assert "primary" in shown and "Left out:" in shown
    assert "channel refused is not usable: disabled automatically" in shown

    rows = rows_of(page)
    assert set(rows) == {"primary", "backup", "cooling", "refused", "other-model"}
    assert "#1" in rows["primary"] and "Enabled" in rows["primary"]
    assert "#2" in rows["backup"]
    assert "left out" in rows["cooling"] and "cooling down until" in rows["cooling"]
    assert "Disabled automatically" in rows["refused"] and "HTTP 401" in rows["refused"]
    assert "left out" in rows["other-model"] and "<td>no</td>" in rows["other-model"]


def test_preview_of_a_group_routes_as_a_token_of_its_users(admin_client):
    pro = make_group("pro")
    make_channel("pro-up", groups=[pro])
    make_channel("elsewhere", groups=[make_group("free")])
    page = preview(admin_client, group=pro.pk, model="gpt-4o-mini")
    shown = report_of(page)
    assert "A token of group pro" in shown
    assert re.search(r"^1\s+pro\s+pro-up\s+openai", shown, re.M)
    assert "elsewhere" not in shown
    assert set(rows_of(page)) == {"pro-up"}


def test_preview_of_an_empty_plan_says_why_in_the_commands_words(admin_client):
    pro = make_group("pro")
    make_channel("off", groups=[pro], status=Channel.Status.DISABLED, status_reason="billing")
    token, _ = make_token(make_user("ed", group=pro))
    page = preview(admin_client, token=token.key_prefix, model="gpt-4o-mini")
    shown = report_of(page)
    assert shown.strip() == route_output(token=token.key_prefix, model="gpt-4o-mini").strip()
    assert "No attempt: nothing can serve gpt-4o-mini" in shown
    assert "channel off is not usable: disabled by hand (billing)" in shown
    assert 'class="airouter-line-error"' in page
    assert "Disabled by hand" in rows_of(page)["off"]


def test_preview_form_refuses_a_whole_key_an_unknown_prefix_and_neither_choice(admin_client):
    pro = make_group("pro")
    make_channel("primary", groups=[pro])
    _, key = make_token(make_user("ann", group=pro))
    page = preview(admin_client, token=key, model="gpt-4o-mini")
    assert "Give only the key&#x27;s prefix" in page and key not in page
    assert "airouter-route-report" not in page
    page = preview(admin_client, token="sk-nothing", model="gpt-4o-mini")
    assert "No token key starts with" in page
    page = preview(admin_client, model="gpt-4o-mini")
    assert "Pick a token or a group" in page
    page = preview(admin_client, token="sk-", group=pro.pk, model="gpt-4o-mini")
    assert "Pick a token or a group" in page
    assert "airouter-route-report" not in preview(admin_client)  # the empty form: no plan


def test_preview_is_for_staff_who_may_view_channels(client, admin_client):
    staff = make_user("clerk", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse(PREVIEW)).status_code == 403
    api_user = make_user("api")
    client.force_login(api_user)
    response = client.get(reverse(PREVIEW))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_token_and_group_pages_link_to_a_prefilled_preview(admin_client):
    pro = make_group("pro")
    make_channel("primary", groups=[pro], model_names="gpt-4o-mini, gpt-4o")
    token, _ = make_token(make_user("lia", group=pro))
    for url in (
        reverse("admin:tokens_token_change", args=[token.pk]),
        reverse("admin:groups_group_change", args=[pro.pk]),
    ):
        page = admin_client.get(url).content.decode()
        link = re.search(r'href="([^"]*/channels_app/channel/route/\?[^"]*)"', page).group(1)
        shown = report_of(admin_client.get(html.unescape(link)).content.decode())
        assert "model gpt-4o;" in shown  # the first model it reaches, prefilled
        assert re.search(r"^1\s+pro\s+primary", shown, re.M)
    channels = admin_client.get(reverse(CHANNELS)).content.decode()
    assert reverse(PREVIEW) in channels


# --- channels: Test now, Failing, latency, the last error ----------------------------------


def test_test_now_probes_a_mock_channel_and_says_ok_in_ms(admin_client):
    mock = make_channel("demo", kind=Channel.Kind.MOCK, base_url=MOCK_BASE_URL, key="")
    response = admin_client.post(
        reverse(CHANNELS), {"action": "test_now", "_selected_action": [mock.pk]}, follow=True
    )
    page = response.content.decode()
    assert re.search(r"Channel demo: ok in \d+ ms\.", page)
    mock.refresh_from_db()
    assert mock.last_checked is not None and mock.last_error == ""


def test_test_now_refuses_more_channels_than_it_probes_at_once(admin_client):
    mocks = [
        make_channel(f"m{i:02d}", kind=Channel.Kind.MOCK, base_url=MOCK_BASE_URL, key="")
        for i in range(TEST_NOW_MAX + 1)
    ]
    response = admin_client.post(
        reverse(CHANNELS),
        {"action": "test_now", "_selected_action": [m.pk for m in mocks]},
        follow=True,
    )
    assert f"Test now probes at most {TEST_NOW_MAX} channels" in response.content.decode()
    assert not Channel.objects.filter(last_checked__isnull=False).exists()  # none probed


def test_test_now_reports_a_failure_and_the_list_shows_it_failing(
    admin_client, fake_upstream_factory
):
    bad, good = fake_upstream_factory(), fake_upstream_factory()
    bad.configure(status=500, error_message="the upstream is on fire")
    failing = make_channel("failing", base_url=bad.url)
    fine = make_channel("fine", base_url=good.url)
    response = admin_client.post(
        reverse(CHANNELS),
        {"action": "test_now", "_selected_action": [failing.pk, fine.pk]},
        follow=True,
    )
    page = html.unescape(response.content.decode())
    assert re.search(
        r"Channel failing: failed after \d+ ms \(HTTP 500\): .*the upstream is on fire", page
    )
    assert re.search(r"Channel fine: ok in \d+ ms\.", page)
    assert 'class="error"' in page and 'class="success"' in page  # the messages' levels

    failing.refresh_from_db()
    assert "the upstream is on fire" in failing.last_error and failing.last_checked
    row = re.search(r">failing</a>(.*?)</tr>", page, re.S).group(1)
    assert "Failing" in row and "airouter-badge-bad" in row and "Enabled" not in row
    assert "Enabled" in re.search(r">fine</a>(.*?)</tr>", page, re.S).group(1)

    bad.reset()  # it recovers: the next probe turns it green again
    admin_client.post(reverse(CHANNELS), {"action": "test_now", "_selected_action": [failing.pk]})
    page = admin_client.get(reverse(CHANNELS)).content.decode()
    row = re.search(r">failing</a>(.*?)</tr>", page, re.S).group(1)
    assert "Enabled" in row and "airouter-badge-ok" in row


def test_test_now_enables_again_a_channel_disabled_automatically(admin_client, fake_upstream):
    channel = make_channel(
        "back", base_url=fake_upstream.url, status=Channel.Status.AUTO_DISABLED, last_error="401"
    )
    response = admin_client.post(
        reverse(CHANNELS), {"action": "test_now", "_selected_action": [channel.pk]}, follow=True
    )
    assert re.search(r"Channel back: ok in \d+ ms \(enabled again\)\.", response.content.decode())
    channel.refresh_from_db()
    assert channel.status == Channel.Status.ENABLED


def test_latency_filter_buckets(admin_client):
    make_channel("quick", last_latency_ms=300)
    make_channel("steady", last_latency_ms=2500)
    make_channel("sluggish", last_latency_ms=12000)
    make_channel("new")
    expected = {
        "fast": {"quick"},
        "slow": {"steady"},
        "slowest": {"sluggish"},
        "unknown": {"new"},
    }
    for value, names in expected.items():
        page = admin_client.get(reverse(CHANNELS), {"latency": value}).content.decode()
        listed = set(re.findall(r'<th class="field-name"><a [^>]*>([^<]+)</a>', page))
        assert listed == names, value


def test_the_last_error_is_readable_in_the_list_with_the_whole_text_in_its_title(admin_client):
    long_error = "HTTP 502: " + "upstream gateway said no; " * 40
    make_channel("flaky", last_error=long_error.strip())
    page = admin_client.get(reverse(CHANNELS)).content.decode()
    cell = re.search(r'<span class="airouter-error" title="([^"]*)">(.*?)<span', page, re.S)
    assert html.unescape(cell.group(1)) == long_error.strip()
    assert 100 < len(html.unescape(cell.group(2))) < len(long_error)  # cut, but not to nothing
    assert "channels_app/admin.css" in page  # which wraps it


def test_channel_list_state_badges(admin_client, settings):
    settings.CHANNEL_COOLDOWN_SECONDS = 30.0
    make_channel("green")
    make_channel("red", last_error="HTTP 500: boom")
    cooling = make_channel("amber", last_error="HTTP 500: boom")
    make_channel("off", status=Channel.Status.DISABLED)
    for _ in range(3):
        breaker.record(cooling.pk, FAILURE, "HTTP 500: boom")
    page = admin_client.get(reverse(CHANNELS)).content.decode()
    badges = dict(
        re.findall(r">(\w+)</a></th>.*?airouter-badge-(\w+)", page, re.S),
    )
    assert badges == {"green": "ok", "red": "bad", "amber": "warn", "off": "off"}


# --- a group's page ------------------------------------------------------------------------


def test_group_page_channel_rows_show_state_models_priority_weight_and_prices(admin_client):
    pro = make_group("pro")
    up = make_channel(
        "pro-up",
        groups=[pro],
        model_names="gpt-4o-mini, gpt-4o",
        priority=7,
        weight=3,
        input_price="0.15",
        output_price="0.6",
        cached_input_price="0.075",
    )
    make_channel("pro-broken", groups=[pro], last_error="HTTP 500: boom")
    page = admin_client.get(reverse("admin:groups_group_change", args=[pro.pk])).content.decode()
    row = re.search(r">pro-up</a>(.*?)</tr>", page, re.S).group(1)
    cells = [
        html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]
    assert cells[:7] == ["Enabled", "gpt-4o-mini, gpt-4o", "7", "3", "0.15", "0.6", "0.075"]
    assert reverse("admin:channels_app_channel_change", args=[up.pk]) in page
    broken = re.search(r">pro-broken</a>(.*?)</tr>", page, re.S).group(1)
    assert "Failing" in broken
    assert "<select" not in re.search(
        r'id="Channel_groups-group"(.*?)</fieldset>', page, re.S
    ).group(1)


def test_group_page_lists_tokens_routed_by_default_group_too(admin_client):
    pro, other = make_group("pro"), make_group("other")
    member = make_user("mo", group=pro)
    naming, _ = make_token(make_user("na", group=other), group_name="pro", name="names-it")
    by_default, _ = make_token(member, name="by-default")
    elsewhere, _ = make_token(member, group_name="other", name="elsewhere")
    auto, _ = make_token(member, group_name="auto", name="auto-one")
    page = admin_client.get(reverse("admin:groups_group_change", args=[pro.pk])).content.decode()
    section = re.search(r'id="routed-tokens-group"(.*?)</fieldset>', page, re.S).group(1)
    assert naming.key_prefix in section and by_default.key_prefix in section
    assert elsewhere.key_prefix not in section and auto.key_prefix not in section
    row = re.search(rf"{by_default.key_prefix}(.*?)</tr>", section, re.S).group(1)
    assert "(by default group)" in row
    assert "1 more route by it as their owner's default group" in page

    tokens = admin_client.get(
        reverse("admin:tokens_token_changelist"), {"routed_by": pro.pk}
    ).content.decode()
    assert naming.key_prefix in tokens and by_default.key_prefix in tokens
    assert elsewhere.key_prefix not in tokens and auto.key_prefix not in tokens

    for junk in ("\u00b2", "9" * 30, "pro"):  # a digit that is not 0-9, an overflow, a name
        response = admin_client.get(reverse("admin:tokens_token_changelist"), {"routed_by": junk})
        assert response.status_code == 302 and response["Location"].endswith("?e=1")


# --- users ---------------------------------------------------------------------------------


def test_users_list_counts_api_users_apart_from_staff(admin_client):
    for i in range(3):
        make_user(f"api{i}")
    make_user("ops", is_staff=True)
    page = admin_client.get(reverse("admin:groups_user_changelist")).content.decode()
    counts = re.search(r'<p class="airouter-user-counts">(.*?)</p>', page, re.S).group(1)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.unescape(counts))).strip()
    assert text == "3 API users · 2 staff"  # the admin of admin_client is staff too
    assert 'href="?kind=api"' in counts and 'href="?kind=staff"' in counts
