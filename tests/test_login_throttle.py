"""Sign-in throttling on /login/ and /admin/login/ (django-axes, airouter/login.py), and the
posted password kept off the debug page when a sign-in fails inside (the database down)."""

from datetime import timedelta
from unittest import mock

import pytest
from axes.models import AccessAttempt
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client
from django.utils import timezone

from tests.factories import make_user

LIMIT = 5
PASSWORD = "pw-alice-1"  # tests.factories' default
LOCKED = "Too many failed sign-ins"


@pytest.fixture(autouse=True)
def throttle(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def sign_in(client, path, username, password, address="10.0.0.1"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def expire_lockouts():
    """As if the cool-off had passed."""
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))


@pytest.mark.parametrize(
    ("path", "staff"), [("/login/", False), ("/admin/login/", True)], ids=["login", "admin"]
)
def test_wrong_passwords_then_a_refusal_until_the_cooloff_ends(db, client, path, staff):
    make_user("alice", is_staff=staff, is_superuser=staff)
    for _ in range(LIMIT - 1):
        answer = sign_in(client, path, "alice", "wrong")
        assert answer.status_code == 200  # the form again, with its error
        assert LOCKED not in answer.content.decode()
    answer = sign_in(client, path, "alice", "wrong")  # the limit-th failure
    assert answer.status_code == 429
    for _ in range(3):  # every further try, the right password too, is refused
        answer = sign_in(client, path, "alice", "wrong")
        assert answer.status_code == 429
    answer = sign_in(client, path, "alice", PASSWORD)
    assert answer.status_code == 429
    page = answer.content.decode()
    assert LOCKED in page and "15 minutes" in page and "alice" in page
    assert not signed_in(client)

    expire_lockouts()
    answer = sign_in(client, path, "alice", PASSWORD)
    assert answer.status_code == 302
    assert signed_in(client)


def test_the_lockout_holds_per_username_and_per_address(db):
    make_user("alice")
    make_user("bob")
    make_user("carol")
    attacker = Client()
    for _ in range(LIMIT):
        sign_in(attacker, "/login/", "alice", "wrong", address="10.0.0.1")
    # alice is locked from anywhere; anyone is locked from the attacker's address
    assert sign_in(Client(), "/login/", "alice", PASSWORD, address="10.9.9.9").status_code == 429
    assert sign_in(Client(), "/login/", "bob", PASSWORD, address="10.0.0.1").status_code == 429
    # another username from another address is not affected
    other = Client()
    answer = sign_in(other, "/login/", "carol", PASSWORD, address="10.0.0.2")
    assert answer.status_code == 302
    assert signed_in(other)


def test_failures_spread_over_usernames_lock_the_address(db):
    make_user("alice")
    client = Client()
    for n in range(LIMIT):
        sign_in(client, "/login/", f"nobody-{n}", "wrong", address="10.0.0.7")
    assert sign_in(client, "/login/", "alice", PASSWORD, address="10.0.0.7").status_code == 429
    assert sign_in(Client(), "/login/", "alice", PASSWORD, address="10.0.0.8").status_code == 302


def test_a_success_resets_the_failures(db):
    make_user("alice")
    for _ in range(LIMIT - 1):
        sign_in(Client(), "/login/", "alice", "wrong")
    assert sign_in(Client(), "/login/", "alice", PASSWORD).status_code == 302
    for _ in range(LIMIT - 1):  # counted from zero again
        assert sign_in(Client(), "/login/", "alice", "wrong").status_code == 200
    assert sign_in(Client(), "/login/", "alice", PASSWORD).status_code == 302


def test_behind_a_trusted_proxy_the_client_address_counts(db, settings):
    settings.RELAY_TRUSTED_PROXIES = ["10.0.0.0/8"]
    make_user("alice")
    make_user("bob")
    for _ in range(LIMIT):
        Client().post(
            "/login/",
            {"username": f"x{_}", "password": "wrong"},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR="203.0.113.9",
        )
    via_proxy = {"REMOTE_ADDR": "10.0.0.1"}
    locked = Client().post(
        "/login/",
        {"username": "alice", "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="203.0.113.9",
        **via_proxy,
    )
    assert locked.status_code == 429
    other = Client().post(
        "/login/",
        {"username": "bob", "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="198.51.100.4",
        **via_proxy,
    )
    assert other.status_code == 302  # the proxy itself is not locked out


def test_the_test_clients_login_still_works(db):
    make_user("alice")
    assert Client().login(username="alice", password=PASSWORD)


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_the_debug_page_of_a_failed_sign_in_hides_the_password(db, settings, path):
    """DEBUG on and the database down: the debug page shows the error, not the password."""
    settings.DEBUG = True
    secret = "Hunter2-very-secret-pw"
    client = Client(raise_request_exception=False)
    refused = OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
    with mock.patch.object(BaseDatabaseWrapper, "ensure_connection", side_effect=refused):
        answer = client.post(path, {"username": "alice", "password": secret})
    page = answer.content.decode()
    assert answer.status_code == 500
    assert "OperationalError" in page and "Connection refused" in page  # the debug page
    assert secret not in page
