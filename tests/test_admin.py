"""The operator admin: the index layout, each model's list/add/change pages, and the secrets."""

import re
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.models import UsageRecord
from channels_app.models import Channel
from groups.models import Group, User
from tests.factories import make_channel, make_group, make_token, make_user, table_entry
from tokens.models import Token, hash_key

pytestmark = pytest.mark.django_db


def make_usage(user, token, group, channel, **kw):
    kw.setdefault("request_id", "req-1")
    kw.setdefault("requested_model", "gpt-4o-mini")
    return UsageRecord.objects.create(user=user, token=token, group=group, channel=channel, **kw)


# --- the index -----------------------------------------------------------------------------


def section_of(html: str, model_label: str) -> str:
    """The section (caption) an index entry sits in."""
    for match in re.finditer(
        r"<caption>\s*<a [^>]*>(.*?)</a>\s*</caption>(.*?)</table>", html, re.S
    ):
        if f">{model_label}</a>" in match.group(2):
            return match.group(1)
    raise AssertionError(f"{model_label} is not on the index")


def test_index_shows_groups_under_system_settings_and_users_under_user_management(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert section_of(html, "Groups") == "System Settings"
    assert section_of(html, "Users") == "User Management"
    assert section_of(html, "Channels") == "Channels"
    assert section_of(html, "Tokens") == "Tokens"
    assert section_of(html, "Usage records") == "Billing"


def breadcrumbs(client, url) -> str:
    html = client.get(url).content.decode()
    return re.search(r'<div class="breadcrumbs">(.*?)</div>', html, re.S).group(1)


def test_user_pages_sit_under_user_management_in_the_breadcrumbs(admin_client, alice):
    urls = [
        reverse("admin:groups_user_changelist"),
        reverse("admin:groups_user_add"),
        reverse("admin:groups_user_change", args=[alice.pk]),
    ]
    for url in urls:
        crumbs = breadcrumbs(admin_client, url)
        assert "User Management" in crumbs and "System Settings" not in crumbs
    assert "System Settings" in breadcrumbs(admin_client, reverse("admin:groups_group_changelist"))


def test_index_has_exactly_one_groups_entry(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert html.count(">Groups</a>") == 1
    assert "/admin/auth/group/" not in html
    assert admin_client.get("/admin/auth/group/").status_code == 404


def test_non_staff_users_cannot_open_the_admin(client, alice):
    client.force_login(alice)
    response = client.get(reverse("admin:groups_group_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "model, has_add",
    [
        ("groups_group", True),
        ("groups_user", True),
        ("channels_app_channel", True),
        ("tokens_token", True),
        ("billing_usagerecord", False),
    ],
)
def test_every_list_and_add_page_opens(admin_client, model, has_add):
    assert admin_client.get(reverse(f"admin:{model}_changelist")).status_code == 200
    assert admin_client.get(reverse(f"admin:{model}_add")).status_code == (200 if has_add else 403)


# --- groups ---------------------------------------------------------------------------------


def test_group_list_shows_the_pricing_tbd_badge_until_confirmed(admin_client):
    make_group("tbd", pricing_confirmed=False)
    make_group("done", pricing_confirmed=True)
    html = admin_client.get(reverse("admin:groups_group_changelist")).content.decode()
    rows = {
        name: row for name, row in re.findall(r"<tr[^>]*>.*?>(tbd|done)</a>(.*?)</tr>", html, re.S)
    }
    assert "pricing TBD" in rows["tbd"] and "airouter-badge-warn" in rows["tbd"]
    assert "pricing TBD" not in rows["done"]
    assert "airouter/admin.css" in html


def test_group_list_counts_users_tokens_and_channels_without_n_plus_1(
    admin_client, django_assert_max_num_queries
):
    pro = make_group("pro")
    other = make_group("other")
    for i in range(3):
        user = make_user(f"u{i}", group=pro, password=None)
        make_token(user)
        make_token(user, group_name="other")
    make_channel("c1", groups=[pro, other])
    make_channel("c2", groups=[pro])
    url = reverse("admin:groups_group_changelist")
    with django_assert_max_num_queries(8):
        html = admin_client.get(url).content.decode()
    for group, users, tokens, channels in (("pro", 3, 0, 2), ("other", 0, 3, 1)):
        row = re.search(rf">{group}</a>(.*?)</tr>", html, re.S).group(1)
        cells = re.findall(r'<td class="field-num_(\w+)">(\d+)</td>', row)
        assert dict(cells) == {
            "users": str(users),
            "tokens": str(tokens),
            "channels": str(channels),
        }
    for i in range(3, 13):  # ten more users with tokens: still the same number of queries
        make_token(make_user(f"u{i}", group=pro, password=None))
    with django_assert_max_num_queries(8):
        admin_client.get(url)


def test_group_add_and_change_pages(admin_client):
    response = admin_client.post(
        reverse("admin:groups_group_add"),
        {
            "name": "internal",
            "description": "",
            "is_active": "on",
            "multiplier": "0.5",
            "auto_priority": "",
            "Channel_groups-TOTAL_FORMS": "0",
            "Channel_groups-INITIAL_FORMS": "0",
            "tokens-TOTAL_FORMS": "0",
            "tokens-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    group = Group.objects.get(name="internal")
    assert group.multiplier == Decimal("0.5")
    assert (
        admin_client.get(reverse("admin:groups_group_change", args=[group.pk])).status_code == 200
    )


def test_group_form_explains_a_non_positive_multiplier(admin_client):
    response = admin_client.post(
        reverse("admin:groups_group_add"),
        {
            "name": "bad",
            "multiplier": "0",
            "is_active": "on",
            "Channel_groups-TOTAL_FORMS": "0",
            "Channel_groups-INITIAL_FORMS": "0",
            "tokens-TOTAL_FORMS": "0",
            "tokens-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "The multiplier must be greater than zero." in response.content.decode()
    assert not Group.objects.filter(name="bad").exists()


def test_group_page_shows_its_channels_and_tokens(admin_client, alice):
    pro = make_group("pro")
    make_channel("pro-upstream", groups=[pro])
    token, key = make_token(alice, group_name="pro", name="alice-pro")
    html = admin_client.get(reverse("admin:groups_group_change", args=[pro.pk])).content.decode()
    assert "pro-upstream" in html
    assert token.key_prefix in html
    assert key not in html


def test_group_page_lists_only_the_newest_tokens_and_links_to_all(
    admin_client, alice, django_assert_max_num_queries
):
    pro = make_group("pro")
    tokens = [make_token(alice, group_name="pro")[0] for _ in range(53)]
    for i in range(10):
        make_channel(f"c{i}", groups=[pro])
    url = reverse("admin:groups_group_change", args=[pro.pk])
    with django_assert_max_num_queries(15):  # not one per token or channel row
        html = admin_client.get(url).content.decode()
    shown = [t for t in tokens if t.key_prefix in html]
    assert len(shown) == 50
    assert "All 53 tokens that name pro" in html
    assert f"?group__id__exact={pro.pk}" in html
    data = {
        "name": "pro",
        "multiplier": "2",
        "is_active": "on",
        "user_selectable": "on",
        "Channel_groups-TOTAL_FORMS": "0",
        "Channel_groups-INITIAL_FORMS": "0",
        "tokens-TOTAL_FORMS": "50",
        "tokens-INITIAL_FORMS": "50",
        **{f"tokens-{i}-id": str(t.pk) for i, t in enumerate(shown)},
        **{f"tokens-{i}-group": str(pro.pk) for i in range(50)},
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    pro.refresh_from_db()
    assert pro.multiplier == Decimal("2")
    assert Token.objects.filter(group=pro).count() == 53


def test_group_page_channel_rows_are_read_only_and_channels_join_from_their_page(admin_client):
    """The group page shows its channels read-only (posting rows changes nothing); a channel
    joins a group from the channel's own page."""
    pro = make_group("pro")
    channel = make_channel("c1")
    prefix = "Channel_groups"  # Channel.groups.through's default inline prefix
    data = {
        "name": "pro",
        "multiplier": "1",
        "is_active": "on",
        "user_selectable": "on",
        f"{prefix}-TOTAL_FORMS": "1",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-0-channel": str(channel.pk),
        f"{prefix}-0-group": str(pro.pk),
    }
    page = admin_client.get(reverse("admin:groups_group_change", args=[pro.pk])).content.decode()
    assert "edit the channel&#x27;s groups on the channel&#x27;s page" in page
    assert f'name="{prefix}-0-channel"' not in page  # no dropdown to pick a channel
    response = admin_client.post(reverse("admin:groups_group_change", args=[pro.pk]), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(channel.groups.all()) == []

    url = reverse("admin:channels_app_channel_change", args=[channel.pk])
    response = admin_client.post(url, channel_form(name="c1", groups=[pro.pk]))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert list(channel.groups.all()) == [pro]


# --- channels -------------------------------------------------------------------------------


def channel_form(**overrides):
    data = {
        "name": "up-1",
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "key": "",
        "model_names": "gpt-4o-mini, gpt-4o",
        "model_map": "{}",
        "priority": "0",
        "weight": "1",
        "status": "enabled",
        "status_reason": "",
        "input_price": "0",
        "output_price": "0",
        "connect_timeout": "5",
        "read_timeout": "60",
        "total_timeout": "600",
        "mock_delay_ms": "0",
        "model_prices-TOTAL_FORMS": "0",
        "model_prices-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_channel_add_requires_a_key_and_stores_it_encrypted(admin_client):
    pro = make_group("pro")
    url = reverse("admin:channels_app_channel_add")
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, channel_form(groups=[pro.pk]))
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not Channel.objects.exists()

    response = admin_client.post(
        url,
        channel_form(
            groups=[pro.pk], key="sk-upstream-typed-in", model_map='{"gpt-4o": "gpt-4o-2024"}'
        ),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    channel = Channel.objects.get(name="up-1")
    assert channel.get_key() == "sk-upstream-typed-in"
    assert "sk-upstream-typed-in" not in channel.key_encrypted
    assert channel.upstream_model("gpt-4o") == "gpt-4o-2024"
    assert list(channel.groups.all()) == [pro]


def test_channel_change_page_never_renders_the_key(admin_client):
    channel = make_channel("up-1", key="sk-upstream-never-shown")
    html = admin_client.get(
        reverse("admin:channels_app_channel_change", args=[channel.pk])
    ).content.decode()
    assert "sk-upstream-never-shown" not in html
    assert channel.key_encrypted not in html
    assert channel.key_encrypted[:20] not in html
    assert "set (encrypted; never shown)" in html


def test_channel_key_is_kept_when_left_blank_and_replaced_when_typed(admin_client):
    channel = make_channel("up-1", key="sk-old")
    url = reverse("admin:channels_app_channel_change", args=[channel.pk])
    response = admin_client.post(url, channel_form(priority="5"))
    assert response.status_code == 302, response.content.decode()[:3000]
    channel.refresh_from_db()
    assert channel.priority == 5 and channel.get_key() == "sk-old"

    admin_client.post(url, channel_form(key="sk-new"))
    channel.refresh_from_db()
    assert channel.get_key() == "sk-new"


def test_channel_form_rejects_a_bad_model_map_without_echoing_the_key(admin_client):
    response = admin_client.post(
        reverse("admin:channels_app_channel_add"),
        channel_form(key="sk-typed-then-rejected", model_map='["not", "a map"]'),
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Give a JSON object of public name -&gt; upstream name." in html
    assert "sk-typed-then-rejected" not in html


def test_channel_per_model_price_inline(admin_client):
    pro = make_group("pro")
    channel = make_channel("up-1", groups=[pro])
    url = reverse("admin:channels_app_channel_change", args=[channel.pk])
    data = channel_form(
        **{
            "model_prices-TOTAL_FORMS": "1",
            "model_prices-0-model": "gpt-4o",
            "model_prices-0-input_price": "2.5",
            "model_prices-0-output_price": "10",
        },
        groups=[pro.pk],
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = table_entry(channel)  # what the relay bills from
    assert _pair(entry.rates("gpt-4o")) == (Decimal("2.5"), Decimal("10"))


def test_channel_list_shows_status_groups_and_last_error(
    admin_client, django_assert_max_num_queries
):
    pro, free = make_group("pro"), make_group("free")
    make_channel("ok-chan", groups=[pro, free])
    make_channel(
        "broken",
        groups=[pro],
        status=Channel.Status.AUTO_DISABLED,
        last_error="HTTP 500 from upstream",
    )
    for i in range(5):
        make_channel(f"more-{i}", groups=[free])
    with django_assert_max_num_queries(8):
        html = admin_client.get(reverse("admin:channels_app_channel_changelist")).content.decode()
    assert "Disabled automatically" in html and "airouter-badge-bad" in html
    assert "HTTP 500 from upstream" in html
    assert "free, pro" in html or "pro, free" in html


def test_channel_enable_and_disable_actions(admin_client):
    a = make_channel("a")
    b = make_channel("b", status=Channel.Status.AUTO_DISABLED, status_reason="5 errors")
    url = reverse("admin:channels_app_channel_changelist")
    response = admin_client.post(
        url, {"action": "disable", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    assert "Disabled 2 channel(s)." in response.content.decode()
    a.refresh_from_db()
    assert a.status == Channel.Status.DISABLED and a.status_reason

    response = admin_client.post(url, {"action": "enable", "_selected_action": [a.pk]}, follow=True)
    assert "Enabled 1 channel(s)." in response.content.decode()
    a.refresh_from_db()
    assert a.status == Channel.Status.ENABLED and a.status_reason == ""


# --- tokens ---------------------------------------------------------------------------------


def token_form(owner, **overrides):
    data = {
        "owner": str(owner.pk),
        "name": "ci",
        "route": "",
        "expires_at_0": "",
        "expires_at_1": "",
        "spend_limit": "",
        "allowed_models": "",
        "allowed_ips": "",
    }
    data.update(overrides)
    return data


def add_token(admin_client, data):
    """Post the add form as a browser would: with the one-time value the form page carries."""
    url = reverse("admin:tokens_token_add")
    page = admin_client.get(url).content.decode()
    once = re.search(r'name="form_once" value="([^"]+)"', page).group(1)
    return admin_client.post(url, {**data, "form_once": once})


def test_token_add_shows_the_full_key_once_and_never_again(admin_client, alice):
    make_group("pro")
    response = add_token(admin_client, token_form(alice, route="pro", spend_limit="5"))
    assert response.status_code == 200, response.content.decode()[:3000]
    html = response.content.decode()
    key = re.search(r'<p id="new-key" class="airouter-secret">(sk-\w+)</p>', html).group(1)
    assert len(key) == 51 and html.count(key) == 1
    token = Token.objects.get(key_hash=hash_key(key))
    assert token.owner == alice and token.group.name == "pro"
    assert token.spend_limit == Decimal("5")

    later_pages = [
        reverse("admin:tokens_token_changelist"),
        reverse("admin:tokens_token_change", args=[token.pk]),
        reverse("admin:groups_group_change", args=[token.group_id]),
        reverse("admin:index"),
    ]
    for url in later_pages:
        page = admin_client.get(url).content.decode()
        assert key not in page and key[-12:] not in page
        assert token.key_prefix in page or url.endswith("/admin/")


def test_reloading_the_new_key_page_makes_no_second_token(admin_client, alice):
    url = reverse("admin:tokens_token_add")
    page = admin_client.get(url).content.decode()
    data = {
        **token_form(alice),
        "form_once": re.search(r'name="form_once" value="([^"]+)"', page).group(1),
    }
    first = admin_client.post(url, data)
    assert 'id="new-key"' in first.content.decode()
    reload = admin_client.post(url, data, follow=True)  # the browser re-sends the form
    html = reload.content.decode()
    assert "no second token was made" in html and 'id="new-key"' not in html
    assert Token.objects.count() == 1
    assert admin_client.post(url, token_form(alice)).status_code == 302  # forged: no value
    assert Token.objects.count() == 1


def test_token_add_refuses_a_group_the_owner_may_not_use(admin_client, alice):
    make_group("internal", user_selectable=False)
    response = add_token(admin_client, token_form(alice, route="internal"))
    assert response.status_code == 200
    assert "may not use group" in response.content.decode()
    assert not Token.objects.exists()


def test_token_add_with_auto_and_a_bad_cidr(admin_client, alice):
    response = add_token(admin_client, token_form(alice, route="auto", allowed_ips="10.0.0.0/33"))
    assert "Not an IP or CIDR" in response.content.decode()
    assert not Token.objects.exists()
    response = add_token(admin_client, token_form(alice, route="auto", allowed_ips="10.0.0.0/8"))
    assert response.status_code == 200
    assert Token.objects.get().auto is True


def test_token_list_shows_prefix_owner_group_spend_and_status(
    admin_client, alice, django_assert_max_num_queries
):
    make_group("pro")
    t1, _ = make_token(alice, group_name="pro", spend_limit=Decimal("10"))
    t2, _ = make_token(alice, group_name="auto")
    t3, _ = make_token(alice)
    for i in range(5):
        make_token(make_user(f"user{i}", password=None))
    with django_assert_max_num_queries(8):
        html = admin_client.get(reverse("admin:tokens_token_changelist")).content.decode()
    assert t1.key_prefix in html and "0 / 10" in html
    assert ">auto<" in html
    assert "default (default)" in html
    assert "alice" in html


def test_token_change_page_edits_limits_and_routing(admin_client, alice):
    make_group("pro")
    token, key = make_token(alice)
    url = reverse("admin:tokens_token_change", args=[token.pk])
    html = admin_client.get(url).content.decode()
    assert token.key_prefix in html and key not in html
    data = token_form(alice, route="pro", spend_limit="3", status="active")
    del data["owner"]
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    token.refresh_from_db()
    assert token.group.name == "pro" and token.spend_limit == Decimal("3")


def test_saving_a_token_keeps_the_spend_requests_added_meanwhile(admin_client, alice):
    token, _ = make_token(alice)
    url = reverse("admin:tokens_token_change", args=[token.pk])
    admin_client.get(url)  # the operator opens the page...
    Token.objects.filter(pk=token.pk).update(spent=F("spent") + Decimal("2.5"))  # ...requests
    data = token_form(alice, route="", spend_limit="9", status="active")
    del data["owner"]
    assert admin_client.post(url, data).status_code == 302
    token.refresh_from_db()
    assert token.spent == Decimal("2.5") and token.spend_limit == Decimal("9")


def test_token_revoke_action(admin_client, alice):
    token, _ = make_token(alice)
    response = admin_client.post(
        reverse("admin:tokens_token_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert "Revoked 1 token(s)." in response.content.decode()
    token.refresh_from_db()
    assert token.status == Token.Status.REVOKED


# --- users ----------------------------------------------------------------------------------


def test_user_list_shows_group_and_balance_in_a_constant_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    pro = make_group("pro")
    for i in range(10):
        make_user(f"user{i}", group=pro, balance=Decimal("7.25"), password=None)
    with django_assert_max_num_queries(7):  # one of them counts API users and staff
        html = admin_client.get(reverse("admin:groups_user_changelist")).content.decode()
    assert html.count('<td class="field-group nowrap">pro</td>') == 10
    assert '<td class="field-balance_display">7.25</td>' in html  # not 7.2500000000


def test_user_pages_list_add_change(admin_client, alice):
    pro = make_group("pro")
    assert "alice" in admin_client.get(reverse("admin:groups_user_changelist")).content.decode()
    add_page = admin_client.get(reverse("admin:groups_user_add")).content.decode()
    default = Group.objects.get(name="default")
    assert f'<option value="{default.pk}" selected>default</option>' in add_page
    response = admin_client.post(
        reverse("admin:groups_user_add"),
        {
            "username": "dave",
            "usable_password": "false",
            "password1": "",
            "password2": "",
            "group": str(pro.pk),
            "balance": "12.5",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    dave = User.objects.get(username="dave")
    assert dave.group == pro and dave.balance == Decimal("12.5")
    html = admin_client.get(reverse("admin:groups_user_change", args=[dave.pk])).content.decode()
    assert 'name="balance"' in html and 'name="group"' in html
    assert 'name="initial-balance"' in html  # what the operator saw, to apply edits as a delta


def user_change_form(user, **overrides):
    data = {
        "username": user.username,
        "group": str(user.group_id),
        "balance": str(user.balance),
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    data.update(overrides)
    return data


def test_editing_a_user_keeps_charges_made_while_the_form_was_open(admin_client, alice):
    """The admin applies the balance edit as a difference, never the value it read."""
    url = reverse("admin:groups_user_change", args=[alice.pk])
    form = user_change_form(alice, balance="150", email="alice@example.com")
    User.objects.filter(pk=alice.pk).update(balance=Decimal("90"))  # a request drew 10 meanwhile
    response = admin_client.post(url, {**form, "initial-balance": "100"})
    assert response.status_code == 302, response.content.decode()[:3000]
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"
    assert alice.balance == Decimal("140")

    User.objects.filter(pk=alice.pk).update(balance=Decimal("130"))
    form = user_change_form(alice, balance="140", email="a@example.com")
    admin_client.post(url, {**form, "initial-balance": "140"})
    alice.refresh_from_db()
    assert alice.balance == Decimal("130")  # the balance was not edited: not written back


def test_top_up_action_asks_the_amount_then_adds_it(admin_client, alice, bob):
    url = reverse("admin:groups_user_changelist")
    selected = {"action": "top_up_balance", "_selected_action": [alice.pk, bob.pk]}
    response = admin_client.post(url, selected)
    assert response.status_code == 200
    assert 'name="amount"' in response.content.decode()
    response = admin_client.post(url, {**selected, "apply": "1", "amount": "-3"})
    assert "Ensure this value is greater than or equal to" in response.content.decode()
    response = admin_client.post(url, {**selected, "apply": "1", "amount": "7.5"}, follow=True)
    assert "Topped up 2 user(s) by 7.5." in response.content.decode()
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.balance == bob.balance == Decimal("107.5")
    history = LogEntry.objects.filter(object_id=str(alice.pk)).get()
    assert history.get_change_message() == "Topped up the balance by 7.5."


def test_view_only_staff_cannot_run_the_actions_that_change_things(client, alice):
    """Top up, revoke, enable, disable and Test now need the change permission: a clerk who
    may only view users, tokens and channels is not offered them, and posting one changes
    nothing."""
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_user", "view_token", "view_channel"])
    )
    client.force_login(clerk)
    token, _ = make_token(alice)
    channel = make_channel("ch-live")
    posts = [
        ("groups_user", {"action": "top_up_balance", "apply": "1", "amount": "1000"}, alice),
        ("tokens_token", {"action": "revoke"}, token),
        ("channels_app_channel", {"action": "disable"}, channel),
        ("channels_app_channel", {"action": "test_now"}, channel),
    ]
    for model, data, obj in posts:
        url = reverse(f"admin:{model}_changelist")
        page = client.get(url).content.decode()
        assert f'value="{data["action"]}"' not in page  # not offered
        response = client.post(url, {**data, "_selected_action": [obj.pk]}, follow=True)
        assert response.status_code == 200  # the list again, nothing run
    alice.refresh_from_db()
    token.refresh_from_db()
    channel.refresh_from_db()
    assert alice.balance == Decimal("100")
    assert token.status == Token.Status.ACTIVE
    assert channel.status == Channel.Status.ENABLED and channel.last_checked is None


# --- usage records --------------------------------------------------------------------------


@pytest.fixture
def usage(alice):
    pro = make_group("pro")
    channel = make_channel("up-1", groups=[pro])
    token, _ = make_token(alice, group_name="pro")
    return [
        make_usage(alice, token, pro, channel, request_id=f"req-{i}", requested_model=model)
        for i, model in enumerate(["gpt-4o", "gpt-4o-mini", "gpt-4o"])
    ]


def test_usage_records_are_read_only(admin_client, usage):
    record = usage[0]
    assert admin_client.get(reverse("admin:billing_usagerecord_add")).status_code == 403
    html = admin_client.get(
        reverse("admin:billing_usagerecord_change", args=[record.pk])
    ).content.decode()
    assert "req-0" in html and 'name="_save"' not in html
    assert (
        admin_client.post(reverse("admin:billing_usagerecord_delete", args=[record.pk])).status_code
        == 403
    )
    changelist = admin_client.get(reverse("admin:billing_usagerecord_changelist")).content.decode()
    assert 'name="action"' not in changelist  # no bulk delete either


def test_usage_list_filters_by_model_user_group_channel_and_date(admin_client, usage, bob):
    url = reverse("admin:billing_usagerecord_changelist")
    make_usage(bob, None, None, None, request_id="req-bob", requested_model="gpt-4o")

    def shown(**params):
        html = admin_client.get(url, params).content.decode()
        found = re.findall(r'<td class="field-requested"><span [^>]*>([\w.-]+)</span></td>', html)
        return set(found), html

    models, _ = shown(model="gpt-4o")
    assert models == {"gpt-4o"}
    _, html = shown(model="gpt-4o", username="bob")
    assert html.count('class="field-requested"') == 1
    _, html = shown(group__id__exact=usage[0].group_id)
    assert html.count('class="field-requested"') == 3
    _, html = shown(channel__id__exact=usage[0].channel_id, model="gpt-4o-mini")
    assert html.count('class="field-requested"') == 1
    _, html = shown(
        created__gte="2000-01-01 00:00:00+00:00", created__lt="2000-01-02 00:00:00+00:00"
    )
    assert html.count('class="field-requested"') == 0
    assert "0 usage records" in html


def test_usage_list_never_counts_the_whole_table(
    admin_client, usage, django_assert_max_num_queries
):
    url = reverse("admin:billing_usagerecord_changelist")
    for params in ({}, {"_facets": "True"}, {"model": "gpt-4o"}):
        with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(10):
            response = admin_client.get(url, params)
        assert response.status_code == 200
        counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
        assert len(counts) == 1, counts  # the paginator's, over a bounded number of rows
        assert "LIMIT" in counts[0].upper(), counts[0]


def _pair(rates):
    return rates.input, rates.output
