"""The key page in a real browser: Debian's Chromium driven by Playwright, against live_server.

Sign in, create a key in group `pro`, copy it, call the API with it through the openai SDK and
see the `pro` channel answer; create an `auto` key; revoke a key and see the next call refused.
Screenshots of every page land in test-results/browser/<test>/ (ignored by git).

Chromium is never downloaded: `make test` installs Debian's package. Without it these tests
fail (never skip), so a CI box without a browser cannot pass silently.
"""

import re
from decimal import Decimal

import openai
import pytest
from playwright.sync_api import expect

from tests.factories import make_channel, make_group, make_user
from tokens.models import Token, hash_key


def sign_in(page, shots):
    page.goto("/keys/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/keys/$"))
    shots(page, "login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()


def create_key(page, name, group):
    page.goto("/keys/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Group").select_option(group)
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Key created")).to_be_visible()


def copy_key(page) -> str:
    """Press the copy button; return what landed on the clipboard."""
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    return page.evaluate("navigator.clipboard.readText()")


@pytest.fixture
def routes(fake_upstream_factory):
    """Two upstreams: `pro` behind ch-pro, the default group behind ch-default.

    Each answers with its own words, so a reply tells which channel served it.
    """
    pro_upstream = fake_upstream_factory(models=["gpt-4o", "gpt-4o-mini"])
    pro_upstream.configure(chunks=["Answer from", " the pro channel."])
    default_upstream = fake_upstream_factory(models=["gpt-4o-mini", "small-model"])
    default_upstream.configure(chunks=["Answer from", " the default channel."])
    pro = make_group("pro", user_selectable=True, auto_priority=10, pricing_confirmed=True)
    default = make_group("default", user_selectable=False, auto_priority=20)
    make_channel(
        "ch-pro",
        groups=[pro],
        base_url=pro_upstream.url,
        key="sk-upstream-pro",
        model_names="gpt-4o, gpt-4o-mini",
        input_price=Decimal("1"),
        output_price=Decimal("2"),
    )
    make_channel(
        "ch-default",
        groups=[default],
        base_url=default_upstream.url,
        key="sk-upstream-default",
        model_names="gpt-4o-mini, small-model",
    )
    return {"pro": pro_upstream, "default": default_upstream}


def sdk(live_server, key):
    return openai.OpenAI(api_key=key, base_url=f"{live_server.url}/v1", max_retries=0, timeout=10)


def ask(live_server, key, model="gpt-4o-mini"):
    """One chat completion through the relay with the official SDK: (channel header, answer)."""
    with sdk(live_server, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "Say hello"}]
        )
    return raw.headers.get("x-airouter-channel"), raw.parse().choices[0].message.content


def models_of(live_server, key) -> list[str]:
    with sdk(live_server, key) as client:
        return sorted(model.id for model in client.models.list())


@pytest.mark.django_db(transaction=True)
def test_a_user_creates_copies_uses_and_revokes_keys(page, shots, live_server, routes):
    make_user("alice", balance=Decimal("10"))

    sign_in(page, shots)
    expect(page.get_by_text("You have no keys yet.")).to_be_visible()
    group_options = page.get_by_label("Group").locator("option").all_inner_texts()
    assert sorted(group_options) == ["auto", "default", "pro"]
    expect(page.get_by_label("Group")).to_have_value("default")
    shots(page, "keys-empty")

    # A key in group pro: shown once, copied with the button.
    create_key(page, "laptop", "pro")
    shots(page, "key-created")
    key = copy_key(page)
    assert re.fullmatch(r"sk-[A-Za-z0-9]{48}", key)
    assert page.locator("#new-key").input_value() == key
    assert page.locator("#base-url").inner_text() == f"{live_server.url}/v1"
    curl = page.locator("#curl").inner_text()
    assert curl.startswith(f"curl {live_server.url}/v1/chat/completions")
    assert f"Bearer {key}" in curl
    token = Token.objects.get(key_hash=hash_key(key))
    assert (token.name, token.group.name, token.owner.username) == ("laptop", "pro", "alice")
    shown_models = page.locator("#model-list li").all_inner_texts()
    assert shown_models == ["gpt-4o", "gpt-4o-mini"]

    # The copied key works, through the pro channel, and reaches what the page listed.
    assert ask(live_server, key) == ("ch-pro", "Answer from the pro channel.")
    assert [r.headers["authorization"] for r in routes["pro"].requests] == [
        "Bearer sk-upstream-pro"
    ]
    assert routes["default"].requests == []
    assert models_of(live_server, key) == shown_models

    # Reloading (which re-posts the form) neither shows the key again nor makes another one.
    page.reload()
    expect(page.get_by_text("A key is only shown once.")).to_be_visible()
    assert key not in page.content()
    assert Token.objects.count() == 1

    # An auto key: pro first (priority 10), so pro answers; default is its fallback.
    create_key(page, "failover", "auto")
    auto_key = copy_key(page)
    assert page.locator("#model-list li").all_inner_texts() == [
        "gpt-4o",
        "gpt-4o-mini",
        "small-model",
    ]
    assert ask(live_server, auto_key) == ("ch-pro", "Answer from the pro channel.")
    assert ask(live_server, auto_key, model="small-model") == (
        "ch-default",
        "Answer from the default channel.",
    )
    page.get_by_role("link", name="Back to your keys").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="failover")).to_contain_text("auto")
    expect(rows.filter(has_text="laptop")).to_contain_text("pro")
    last_used = rows.filter(has_text="laptop").locator("td").nth(5)
    expect(last_used).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$"))
    shots(page, "keys-two")

    # Revoke the pro key, confirming first; the next call with it is refused.
    page.get_by_role("link", name="Revoke laptop").click()
    expect(page.get_by_role("heading", name="Revoke this key?")).to_be_visible()
    shots(page, "revoke-confirm")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("Revoked “laptop”.")).to_be_visible()
    expect(page.locator("tbody tr").filter(has_text="laptop")).to_contain_text("revoked")
    shots(page, "keys-revoked")
    served = len(routes["pro"].requests)
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(live_server, key)
    assert refused.value.status_code == 401
    assert len(routes["pro"].requests) == served
    assert ask(live_server, auto_key)[0] == "ch-pro"  # the other key still works

    # Usage lists the calls just made, per day and one by one.
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage", level=1)).to_be_visible()
    expect(page.locator("#records tbody tr")).to_have_count(4)
    expect(page.locator("#daily tbody tr")).to_have_count(1)
    # 3 requests via ch-pro at (12 x 1 + 5 x 2) / 1M each, 1 via ch-default at no price.
    expect(page.locator("#daily tbody tr td")).to_have_text(["4", "48", "20", "0.000066"])
    assert "ch-pro" not in page.locator("#records").inner_text()
    shots(page, "usage")

    page.get_by_role("button", name=re.compile("Sign out")).click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto("/keys/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/keys/$"))
