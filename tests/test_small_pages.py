"""Small things a person notices: the icon, the token list's state filter."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils.timezone import now

from tests.factories import make_token, make_user
from tokens.issuing import revoke
from tokens.models import Token

pytestmark = pytest.mark.django_db


def test_the_favicon_is_the_routers_icon_not_a_404(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("airouter/favicon.svg")
    assert "max-age=86400" in response["Cache-Control"]


def test_the_token_list_filters_expired_keys(admin_client):
    owner = make_user("fay")
    make_token(owner, name="live-key")
    make_token(owner, name="old-key", expires_at=now() - timedelta(days=1))
    gone, _ = make_token(owner, name="gone-key")
    revoke(Token.objects.filter(pk=gone.pk))
    url = reverse("admin:tokens_token_changelist")
    pages = {
        state: admin_client.get(url, {"state": state}).content.decode()
        for state in ("active", "expired", "revoked")
    }
    assert "live-key" in pages["active"] and "old-key" not in pages["active"]
    assert "old-key" in pages["expired"] and "live-key" not in pages["expired"]
    assert "gone-key" in pages["revoked"] and "gone-key" not in pages["active"]


def test_the_user_list_shows_api_users_apart_from_staff(admin_client):
    make_user("api-person")
    make_user("ops-person", is_staff=True)
    url = reverse("admin:groups_user_changelist")
    api = admin_client.get(url, {"kind": "api"}).content.decode()
    staff = admin_client.get(url, {"kind": "staff"}).content.decode()
    assert "api-person" in api and "ops-person" not in api
    assert "ops-person" in staff and "api-person" not in staff
