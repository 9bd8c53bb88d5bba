"""The self-service pages: /login/, /logout/, /keys/ (create, show once, revoke) and /usage/."""

import html
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from billing.models import UsageRecord
from channels_app import breaker
from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_token, make_user
from tokens.models import Token, hash_key

KEY_RE = re.compile(r"sk-[A-Za-z0-9]{48}")


@pytest.fixture
def groups(db, pro_group):
    """pro: selectable; vip: not selectable; old: selectable but inactive."""
    vip = make_group("vip", user_selectable=False)
    old = make_group("old", user_selectable=True, is_active=False)
    return {"pro": pro_group, "vip": vip, "old": old}


@pytest.fixture
def channels(groups):
    default = make_group("default", user_selectable=False)
    return {
        "pro": make_channel("ch-pro", groups=[groups["pro"]], model_names="gpt-4o, gpt-4o-mini"),
        "vip": make_channel("ch-vip", groups=[groups["vip"]], model_names="o3-secret"),
        "default": make_channel("ch-default", groups=[default], model_names="small-model"),
    }


@pytest.fixture
def alice_client(alice):
    client = Client()
    client.force_login(alice)
    return client


def create(client, **fields):
    """Open the key page (which hands out a one-time form value), then post the form."""
    page = client.get("/keys/")
    once = re.search(r'name="form_once" value="([^"]+)"', page.content.decode()).group(1)
    data = {"name": "", "group": "", "spend_limit": "", "expires_at": "", "allowed_models": ""}
    data.update(fields, form_once=once)
    return client.post("/keys/", data), data


def group_options(response) -> list[str]:
    select = re.search(r'<select name="group".*?</select>', response.content.decode(), re.S)
    return re.findall(r'<option value="([^"]*)"', select.group(0))


def selected_group(response) -> str:
    select = re.search(r'<select name="group".*?</select>', response.content.decode(), re.S)
    return re.search(r'<option value="([^"]*)" selected>', select.group(0)).group(1)


# --- sign in and out ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/keys/", "/usage/", "/keys/1/revoke/", "/"])
def test_it_sends_anonymous_visitors_to_sign_in(client, db, path):
    response = client.get(path, follow=True)
    assert response.redirect_chain[-1][0].startswith("/login/")
    assert b"Sign in" in response.content


def test_it_signs_in_and_lands_on_the_keys_page(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "pw-alice-1"}, follow=True)
    assert response.redirect_chain[-1][0] == "/keys/"
    assert b"<h1>API keys</h1>" in response.content


def test_it_refuses_a_wrong_password(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert "_auth_user_id" not in client.session


def test_it_refuses_an_inactive_user(client, db):
    make_user("carol", is_active=False, password="pw-carol-1")
    client.post("/login/", {"username": "carol", "password": "pw-carol-1"})
    assert "_auth_user_id" not in client.session


def test_staff_may_use_the_page_and_see_a_link_to_the_admin(client, db):
    make_user("ops", is_staff=True, password="pw-ops-1")
    response = client.post("/login/", {"username": "ops", "password": "pw-ops-1"}, follow=True)
    assert response.redirect_chain[-1][0] == "/keys/"
    assert b'href="/admin/"' in response.content


def test_it_signs_out_with_a_post_only(alice_client):
    assert alice_client.get("/logout/").status_code == 405
    response = alice_client.post("/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert alice_client.get("/keys/").status_code == 302


# --- the keys page ----------------------------------------------------------------------


def test_it_shows_balance_default_group_and_only_own_tokens(alice_client, alice, bob, groups):
    alice.balance = Decimal("12.5")
    alice.save()
    make_token(alice, "pro", name="alice-pro", spend_limit=Decimal("3"))
    make_token(alice, "auto", name="alice-auto")
    bobs, _ = make_token(bob, name="bob-secret")

    response = alice_client.get("/keys/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "<dd>12.5</dd>" in body
    assert "<dd>default</dd>" in body
    assert "alice-pro" in body and "alice-auto" in body
    assert "bob-secret" not in body and bobs.key_prefix not in body
    assert "0 / 3" in body
    assert "no limit" in body


def test_the_keys_page_query_count_stays_flat(alice_client, alice, groups):
    make_token(alice, "pro")
    alice_client.get("/keys/")
    with CaptureQueriesContext(connection) as one_token:
        alice_client.get("/keys/")
    for name in ["pro", "auto", "", "pro"]:
        make_token(alice, name)
    with CaptureQueriesContext(connection) as five_tokens:
        response = alice_client.get("/keys/")
    assert response.content.decode().count("<tr>") == 6  # header + 5 tokens
    assert len(five_tokens.captured_queries) == len(one_token.captured_queries)


def test_the_group_select_offers_exactly_the_usable_groups_and_auto(alice_client, channels):
    response = alice_client.get("/keys/")
    assert sorted(group_options(response)) == ["auto", "default", "pro"]
    assert selected_group(response) == "default"


def test_the_group_select_defaults_to_the_users_own_group(client, groups, channels):
    vip_user = make_user("vera", group=groups["vip"])
    client.force_login(vip_user)
    response = client.get("/keys/")
    # vip is not selectable, but it is vera's own group: she may use it and starts on it.
    assert sorted(group_options(response)) == ["auto", "pro", "vip"]
    assert selected_group(response) == "vip"


def test_it_creates_a_key_in_a_group_and_shows_it_once(alice_client, alice, channels):
    response, _ = create(alice_client, name="laptop", group="pro")
    body = response.content.decode()

    assert response.status_code == 200
    keys = set(KEY_RE.findall(body))
    assert len(keys) == 1
    key = keys.pop()
    token = Token.objects.get(owner=alice)
    assert token.key_hash == hash_key(key)
    assert (token.name, token.group.name, token.auto) == ("laptop", "pro", False)
    assert "no-store" in response["Cache-Control"]
    # Base URL and a ready-to-paste curl built from the request's host.
    assert "http://testserver/v1" in body
    assert "curl http://testserver/v1/chat/completions" in body
    assert f"Authorization: Bearer {key}" in body
    assert '-d \'{"model": "gpt-4o", "messages": [' in html.unescape(body)
    # The models this key reaches: pro's channel, never another group's.
    models = re.findall(r"<li><code>([^<]+)</code></li>", body)
    assert models == ["gpt-4o", "gpt-4o-mini"]
    assert "o3-secret" not in body and "small-model" not in body

    # Never again: the keys page lists the token by its prefix only.
    later = alice_client.get("/keys/").content.decode()
    assert key not in later
    assert token.key_prefix in later


def test_a_reloaded_create_post_makes_no_second_key_and_shows_none(alice_client, alice, channels):
    response, data = create(alice_client, name="once", group="pro")
    key = KEY_RE.search(response.content.decode()).group(0)

    again = alice_client.post("/keys/", data, follow=True)
    body = again.content.decode()
    assert again.redirect_chain == [("/keys/", 302)]
    assert "already submitted" in body
    assert key not in body
    assert not KEY_RE.search(body)
    assert Token.objects.filter(owner=alice).count() == 1


def test_it_creates_an_auto_key(alice_client, alice, channels):
    response, _ = create(alice_client, name="failover", group="auto")
    token = Token.objects.get(owner=alice)
    assert token.auto is True and token.group is None
    assert "group auto" in response.content.decode()


def test_an_auto_key_lists_the_models_of_groups_with_an_auto_priority(
    alice_client, alice, groups, channels
):
    # default (alice's own) and pro are eligible; vip is not hers to use.
    make_group("default", auto_priority=100, user_selectable=False)
    make_group("pro", auto_priority=1)
    make_group("vip", auto_priority=1, user_selectable=False)
    response, _ = create(alice_client, group="auto")
    models = re.findall(r"<li><code>([^<]+)</code></li>", response.content.decode())
    assert models == ["gpt-4o", "gpt-4o-mini", "small-model"]


def test_it_keeps_spend_limit_expiry_and_allowed_models(alice_client, alice, channels):
    expires = (now() + timedelta(days=7)).replace(second=0, microsecond=0)
    response, _ = create(
        alice_client,
        group="pro",
        spend_limit="2.50",
        expires_at=expires.strftime("%Y-%m-%dT%H:%M"),
        allowed_models="gpt-4o-mini,\n other-model",
    )
    token = Token.objects.get(owner=alice)
    assert token.spend_limit == Decimal("2.5")
    assert token.expires_at == expires
    assert token.allowed_models == "gpt-4o-mini, other-model"
    # Only the allowed models the group serves are reachable.
    models = re.findall(r"<li><code>([^<]+)</code></li>", response.content.decode())
    assert models == ["gpt-4o-mini"]


@pytest.mark.parametrize("forged", ["vip", "old", "nonexistent", ""])
def test_it_refuses_a_forged_group_with_a_form_error(alice_client, alice, groups, forged):
    response, _ = create(alice_client, name="sneaky", group=forged)
    body = response.content.decode()
    assert response.status_code == 200
    assert "Select a valid choice" in body or "This field is required" in body
    assert not KEY_RE.search(body)
    assert not Token.objects.filter(owner=alice).exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("spend_limit", "-1", "greater than or equal to 0"),
        ("spend_limit", "lots", "Enter a number"),
        ("expires_at", "2001-01-01T00:00", "The expiry must be in the future"),
        ("expires_at", "soon", "Enter a valid date/time"),
    ],
)
def test_it_refuses_bad_limits_with_a_form_error(
    alice_client, alice, channels, field, value, message
):
    response, _ = create(alice_client, group="pro", **{field: value})
    assert message in response.content.decode()
    assert not Token.objects.filter(owner=alice).exists()


def test_a_form_with_errors_can_be_corrected_and_submitted(alice_client, alice, channels):
    response, data = create(
        alice_client, name="kept", group="pro", spend_limit="-1", expires_at="2099-01-02T03:04"
    )
    body = response.content.decode()
    # What was typed comes back, in the format the browser's inputs accept.
    assert 'value="kept"' in body and 'value="2099-01-02T03:04"' in body
    assert '<option value="pro" selected>' in body
    once = re.search(r'name="form_once" value="([^"]+)"', body).group(1)
    fixed = alice_client.post("/keys/", {**data, "spend_limit": "1", "form_once": once})
    assert KEY_RE.search(fixed.content.decode())
    assert Token.objects.filter(owner=alice).count() == 1


# --- revoking -------------------------------------------------------------------------------


def test_revoking_asks_for_confirmation_first(alice_client, alice, groups):
    token, _ = make_token(alice, "pro", name="old-laptop")
    response = alice_client.get(f"/keys/{token.pk}/revoke/")
    assert response.status_code == 200
    assert b"Revoke this key?" in response.content
    assert b"old-laptop" in response.content
    token.refresh_from_db()
    assert token.status == Token.Status.ACTIVE


def test_it_revokes_a_key_on_post(alice_client, alice, groups):
    token, _ = make_token(alice, "pro", name="old-laptop")
    response = alice_client.post(f"/keys/{token.pk}/revoke/", follow=True)
    assert response.redirect_chain == [("/keys/", 302)]
    assert "Revoked “old-laptop”" in response.content.decode()
    assert b'<span class="badge off">revoked</span>' in response.content
    token.refresh_from_db()
    assert token.status == Token.Status.REVOKED

    again = alice_client.post(f"/keys/{token.pk}/revoke/", follow=True)
    assert b"already revoked" in again.content


@pytest.mark.parametrize("method", ["get", "post"])
def test_another_users_token_is_a_404(alice_client, bob, method):
    bobs, _ = make_token(bob, name="bob-key")
    response = getattr(alice_client, method)(f"/keys/{bobs.pk}/revoke/")
    assert response.status_code == 404
    assert b"bob-key" not in response.content
    bobs.refresh_from_db()
    assert bobs.status == Token.Status.ACTIVE


def test_a_missing_token_is_a_404(alice_client):
    assert alice_client.get("/keys/999999/revoke/").status_code == 404


# --- CSRF on every form -----------------------------------------------------------------------


def test_every_form_needs_the_csrf_token(alice, groups):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/login/", {"username": "alice", "password": "pw-alice-1"}).status_code == (
        403
    )
    client.force_login(alice)
    token, _ = make_token(alice, "pro")
    assert client.post("/keys/", {"name": "x", "group": "pro"}).status_code == 403
    assert client.post(f"/keys/{token.pk}/revoke/").status_code == 403
    assert client.post("/logout/").status_code == 403
    assert not Token.objects.filter(owner=alice, name="x").exists()
    token.refresh_from_db()
    assert token.status == Token.Status.ACTIVE


def test_the_forms_carry_the_csrf_token(alice, groups):
    client = Client(enforce_csrf_checks=True)
    assert b"csrfmiddlewaretoken" in client.get("/login/").content
    client.force_login(alice)
    token, _ = make_token(alice, "pro")
    keys_page = client.get("/keys/").content.decode()
    assert keys_page.count("csrfmiddlewaretoken") == 2  # create, sign out
    assert b"csrfmiddlewaretoken" in client.get(f"/keys/{token.pk}/revoke/").content


# --- usage ------------------------------------------------------------------------------------


def record(user, token, group, channel, days_ago=0, **kw):
    kw.setdefault("prompt_tokens", 100)
    kw.setdefault("completion_tokens", 20)
    kw.setdefault("cost", Decimal("0.001"))
    return UsageRecord.objects.create(
        request_id=f"req-{UsageRecord.objects.count()}",
        user=user,
        token=token,
        group=group,
        channel=channel,
        requested_model=kw.pop("model", "gpt-4o"),
        created=now() - timedelta(days=days_ago),
        **kw,
    )


def test_usage_shows_own_records_and_totals_per_day(alice_client, alice, bob, channels, groups):
    token, _ = make_token(alice, "pro", name="laptop")
    bobs, _ = make_token(bob, "pro")
    record(alice, token, groups["pro"], channels["pro"], model="gpt-4o")
    record(alice, token, groups["pro"], channels["pro"], model="gpt-4o-mini", cost=Decimal("0.002"))
    record(alice, token, groups["pro"], channels["pro"], days_ago=3, prompt_tokens=7)
    record(alice, token, groups["pro"], channels["pro"], days_ago=45, model="ancient-model")
    record(bob, bobs, groups["pro"], channels["pro"], model="bobs-model")

    response = alice_client.get("/usage/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "gpt-4o-mini" in body and "laptop" in body
    assert "bobs-model" not in body

    daily = re.search(r'<table id="daily">.*?</table>', body, re.S).group(0)
    rows = re.findall(r"<tr>\s*<th scope=\"row\">.*?</tr>", daily, re.S)
    assert len(rows) == 2  # today and 3 days ago; 45 days ago is outside the window
    today = re.findall(r'<td class="num">([^<]+)</td>', rows[0])
    assert today == ["2", "200", "40", "0.003"]
    earlier = re.findall(r'<td class="num">([^<]+)</td>', rows[1])
    assert earlier == ["1", "7", "20", "0.001"]
    assert (now() - timedelta(days=3)).strftime("%Y-%m-%d") in rows[1]


def test_usage_sums_a_day_exactly(alice_client, alice, channels, groups):
    """50,000 requests at 0.0000170001 cost 0.850005 (SQLite keeps floats: its own sum is
    0.850005000001024)."""
    token, _ = make_token(alice, "pro")
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"bulk-{i}",
            user=alice,
            token=token,
            group=groups["pro"],
            channel=channels["pro"],
            requested_model="gpt-4o",
            cost=Decimal("0.0000170001"),
            created=now(),
        )
        for i in range(50_000)
    )
    body = alice_client.get("/usage/").content.decode()
    daily = re.search(r'<table id="daily">.*?</table>', body, re.S).group(0)
    assert re.findall(r'<td class="num">([^<]+)</td>', daily)[-1] == "0.850005"
    assert "0.850005000" not in body


def test_usage_hides_the_channel_unless_a_setting_shows_it(
    alice_client, alice, channels, groups, settings
):
    token, _ = make_token(alice, "pro")
    record(alice, token, groups["pro"], channels["pro"])
    assert "ch-pro" not in alice_client.get("/usage/").content.decode()

    settings.USAGE_SHOW_CHANNEL = True
    assert "ch-pro" in alice_client.get("/usage/").content.decode()


def test_usage_marks_estimated_token_counts(alice_client, alice, channels, groups):
    token, _ = make_token(alice, "pro")
    record(alice, token, groups["pro"], channels["pro"])
    assert "* estimated" not in alice_client.get("/usage/").content.decode()

    record(alice, token, groups["pro"], channels["pro"], estimated=True, prompt_tokens=9)
    body = alice_client.get("/usage/").content.decode()
    assert '<td class="num">9*</td>' in body
    assert "* estimated" in body


def test_usage_without_records_says_so(alice_client):
    body = alice_client.get("/usage/").content.decode()
    assert "No usage in the last 30 days." in body
    assert "No requests yet." in body


# --- the group guide beside the picker ------------------------------------------------------


def group_card(body: str, name: str) -> str:
    found = re.search(rf'<li class="group-card" data-group="{name}">.*?</li>', body, re.S)
    return found.group(0) if found else ""


def test_the_picker_shows_each_groups_description_multiplier_and_models(
    alice_client, alice, groups, channels
):
    make_group("pro", description="Fast models, billed at half again.", multiplier="1.5")
    make_group("default", description="Every user starts here.", user_selectable=False)
    body = alice_client.get("/keys/").content.decode()

    pro = group_card(body, "pro")
    assert "Fast models, billed at half again." in pro
    assert "×1.5" in pro
    assert re.findall(r"<code>([^<]+)</code>", pro) == ["gpt-4o", "gpt-4o-mini"]
    default = group_card(body, "default")
    assert "×1" in default and "your default" in default
    assert re.findall(r"<code>([^<]+)</code>", default) == ["small-model"]
    assert "pricing TBD" in default and "pricing TBD" not in pro  # pro's pricing is confirmed
    # vip is not alice's to use: neither offered nor described.
    assert not group_card(body, "vip") and "o3-secret" not in body
    assert 'href="/pricing/"' in body


def test_a_selectable_group_serving_nothing_is_not_offered(alice_client, alice, groups, channels):
    make_group("empty", user_selectable=True)  # no channel at all
    idle = make_group("idle", user_selectable=True)
    make_channel("ch-off", groups=[idle], model_names="gpt-4o", status="disabled")

    response = alice_client.get("/keys/")
    body = response.content.decode()
    assert sorted(group_options(response)) == ["auto", "default", "pro"]
    assert not group_card(body, "empty") and not group_card(body, "idle")
    assert "Not offered, as they serve no model yet: empty, idle." in body

    refused, _ = create(alice_client, group="idle")
    assert "Select a valid choice" in refused.content.decode()
    assert not Token.objects.filter(owner=alice).exists()


def test_the_users_own_group_stays_offered_and_says_it_serves_nothing(alice_client, groups):
    # alice's own group (default) has no channel here: her keys route there anyway.
    response = alice_client.get("/keys/")
    assert sorted(group_options(response)) == ["auto", "default"]
    assert selected_group(response) == "default"
    assert "Serves no model yet" in group_card(response.content.decode(), "default")


def test_the_auto_choice_says_which_groups_it_tries(alice_client, groups, channels):
    make_group("default", auto_priority=None, user_selectable=False)
    body = alice_client.get("/keys/").content.decode()
    assert "No group is open to auto yet" in group_card(body, "auto")

    make_group("default", auto_priority=100, user_selectable=False)
    make_group("pro", auto_priority=1)
    make_group("vip", auto_priority=2, user_selectable=False)  # not alice's to use
    auto = group_card(alice_client.get("/keys/").content.decode(), "auto")
    assert re.sub(r"<[^>]+>", "", auto).split("Tries ")[1].startswith("pro, then default:")


# --- the one-time key's quick check ---------------------------------------------------------


@pytest.fixture
def no_breakers(settings):
    settings.REDIS_URL = ""
    settings.CHANNEL_FAILURE_THRESHOLD = 1
    breaker.reset()
    yield
    breaker.reset()


def curl_body(body: str) -> dict | None:
    """The JSON the quick check's curl posts, as the page shows it."""
    found = re.search(r"-d '(\{.*?\})'</code>", html.unescape(body), re.S)
    return json.loads(found.group(1)) if found else None


def test_the_quick_check_uses_a_chat_model_of_a_working_channel(alice_client, alice, no_breakers):
    """The issue's case: the alphabetically first model was served only by a failing channel,
    or was an embedding model. The check skips both, and answers."""
    pro = make_group("pro", pricing_confirmed=True)
    make_channel(
        "ch-disabled", groups=[pro], model_names="aaa-model", status="disabled", priority=9
    )
    failing = make_channel("ch-failing", groups=[pro], model_names="bbb-model", priority=8)
    breaker.record(failing.pk, Channel.Outcome.FAILURE, "HTTP 500")  # its breaker opens
    make_channel(
        "ch-mock",
        groups=[pro],
        kind="mock",
        model_names="aaa-embedding, text-embed-small, mock-chat",
        priority=1,
    )

    response, _ = create(alice_client, name="check", group="pro")
    page = response.content.decode()
    key = KEY_RE.search(page).group(0)
    body = curl_body(page)
    assert body["model"] == "mock-chat"
    assert '<code id="check-model">mock-chat</code>' in page

    # The curl answers: the same request, posted as the page shows it.
    answer = Client().post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        headers={"authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["choices"][0]["message"]["content"] == "Mock answer to: Say hello"
    assert answer["x-airouter-channel"] == "ch-mock"


def test_the_quick_check_prefers_the_channel_routing_tries_first(alice_client, alice):
    pro = make_group("pro")
    make_channel("ch-low", groups=[pro], kind="mock", model_names="alpha-chat", priority=1)
    make_channel("ch-high", groups=[pro], kind="mock", model_names="zeta-chat", priority=5)
    response, _ = create(alice_client, group="pro")
    assert curl_body(response.content.decode())["model"] == "zeta-chat"


def test_the_quick_check_keeps_to_the_keys_allowed_models(alice_client, alice):
    pro = make_group("pro")
    make_channel("ch-mock", groups=[pro], kind="mock", model_names="alpha-chat, beta-chat")
    response, _ = create(alice_client, group="pro", allowed_models="beta-chat")
    assert curl_body(response.content.decode())["model"] == "beta-chat"


def test_without_a_working_chat_model_the_page_says_so_instead_of_a_curl(alice_client, alice):
    pro = make_group("pro")
    make_channel("ch-embed", groups=[pro], kind="mock", model_names="text-embedding-3-small")
    response, _ = create(alice_client, name="embed-only", group="pro")
    page = response.content.decode()
    assert KEY_RE.search(page)  # the key is made and shown
    assert curl_body(page) is None and 'id="curl"' not in page
    assert "No quick check yet" in page
    assert "<li><code>text-embedding-3-small</code></li>" in page  # still listed as reachable
