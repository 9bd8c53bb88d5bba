"""CORS for browser clients of /v1 (issue 10): off unless CORS_ALLOWED_ORIGINS lists the page's
origin; a preflight needs no key; the headers the SDKs send are allowed and the relay's own
headers (x-request-id, x-ratelimit-*, x-airouter-*) readable by the page."""

import pytest
import requests
from django.conf import settings as django_settings

from tests.relay_setup import chat, post, routed, sdk

ORIGIN = "https://app.example.com"


@pytest.fixture
def browser_origin(settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    return ORIGIN


def preflight(live_server, path="/v1/chat/completions", origin=ORIGIN, headers="authorization"):
    return requests.options(
        f"{live_server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
        timeout=10,
    )


def test_cors_is_off_by_default(live_server, fake_upstream):
    assert django_settings.CORS_ALLOWED_ORIGINS == []
    response = preflight(live_server)
    assert response.status_code < 300
    assert not [name for name in response.headers if name.lower().startswith("access-control")]
    _, key, _ = routed(fake_upstream)
    answered = post(live_server, "/v1/models", key, headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in answered.headers


def test_a_preflight_without_a_key_is_answered(live_server, db, browser_origin):
    asked = "authorization, x-api-key, anthropic-version, anthropic-beta, content-type"
    response = preflight(live_server, headers=asked)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = response.headers["access-control-allow-headers"].lower()
    for name in asked.split(", "):
        assert name in allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers
    anthropic = preflight(live_server, "/v1/messages", headers="x-api-key, anthropic-version")
    assert anthropic.headers["access-control-allow-origin"] == ORIGIN


def test_the_relay_headers_are_exposed_to_the_page(live_server, fake_upstream, browser_origin):
    _, key, _ = routed(fake_upstream)
    raw = sdk(live_server, key, default_headers={"Connection": "close", "Origin": ORIGIN})
    response = raw.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    headers = response.headers
    assert headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip() for h in headers["access-control-expose-headers"].lower().split(",")}
    assert {"x-request-id", "x-airouter-group", "x-airouter-channel"} <= exposed
    assert {"x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens"} <= exposed
    assert headers["x-request-id"] and headers["x-airouter-channel"] == "ch-a"
    assert response.parse().choices[0].message.content


def test_errors_carry_cors_headers_too(live_server, db, browser_origin):
    # A refused key: the page can read why.
    response = post(
        live_server, "/v1/chat/completions", "sk-wrong", json={}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN


def test_other_origins_and_paths_get_no_cors(live_server, fake_upstream, browser_origin):
    other = preflight(live_server, origin="https://evil.example.com")
    assert "access-control-allow-origin" not in other.headers
    admin = preflight(live_server, "/admin/login/")
    assert "access-control-allow-origin" not in admin.headers
    _, key, _ = routed(fake_upstream)
    assert chat(sdk(live_server, key)).choices[0].message.content  # the SDK still works
