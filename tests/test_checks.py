"""`manage.py check` warns about what would make routing or billing wrong: reachable groups
whose pricing is TBD (W001), channel keys that no longer decrypt (W003), free channels (W004)."""

from io import StringIO

import pytest
from django.core.management import call_command

from channels_app.models import Channel, ModelPrice
from tests.factories import make_channel, make_group, make_user

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


def test_check_warns_for_a_channel_serving_for_free():
    pro = make_group("pro", pricing_confirmed=True)
    make_channel("free-one", groups=[pro])
    make_channel("priced", groups=[pro], input_price=1, output_price=2)
    per_model = make_channel("per-model", groups=[pro])
    ModelPrice.objects.create(channel=per_model, model="gpt-4o-mini", input_price=1)
    output = check_output()
    assert "airouter.W004" in output and "Channel 'free-one' has no price" in output
    assert "'priced'" not in output and "'per-model'" not in output


def test_check_warns_for_a_channel_key_that_no_longer_decrypts(settings):
    from cryptography.fernet import Fernet

    make_channel("readable")
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    make_channel("other-key")  # saved under the new key only
    Channel.objects.filter(name="readable").update(input_price=1, output_price=1)
    output = check_output()
    assert "airouter.W003" in output
    assert "Channel 'readable': its saved upstream key cannot be decrypted" in output
    assert "'other-key': its saved" not in output
