"""airouter.W001: `manage.py check` warns about reachable groups whose pricing is TBD."""

from io import StringIO

import pytest
from django.core.management import call_command

from tests.factories import make_group, make_user

pytestmark = pytest.mark.django_db


def check_output() -> str:
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_check_warns_for_a_selectable_group_with_pricing_tbd():
    make_group("pro", user_selectable=True, pricing_confirmed=False)
    output = check_output()
    assert "airouter.W001" in output
    assert "Group 'pro' is reachable by users but its pricing is not confirmed" in output
    assert "create_group pro --pricing-confirmed" in output


def test_check_warns_for_a_users_default_group():
    internal = make_group("internal", user_selectable=False, pricing_confirmed=False)
    assert "'internal'" not in check_output()  # nobody can reach it yet
    make_user("carol", group=internal)
    assert "Group 'internal' is reachable" in check_output()


def test_check_is_quiet_once_pricing_is_confirmed_or_nobody_can_reach_it():
    make_group("pro", user_selectable=True, pricing_confirmed=True)
    make_group("hidden", user_selectable=False, pricing_confirmed=False)
    make_group("gone", user_selectable=True, pricing_confirmed=False, is_active=False)
    output = check_output()
    assert "airouter.W001" not in output
    assert "System check identified no issues" in output
