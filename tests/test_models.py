from decimal import Decimal
from importlib import import_module

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from billing.pricing import Rates, Usage, hold_amount, usage_cost
from channels_app import keystore
from groups.models import Group
from tests.factories import make_channel, make_group, make_token
from tokens.models import Token, hash_key

pytestmark = pytest.mark.django_db


def test_migrating_creates_the_default_group():
    # conftest puts the group back for every run, so run the data migration itself here.
    Group.objects.filter(name="default").delete()
    import_module("groups.migrations.0002_default_group").create_default_group(apps, None)
    default = Group.objects.get(name="default")
    assert default.auto_priority == 100 and default.multiplier == 1


def test_new_users_land_in_the_default_group(alice):
    assert alice.group.name == "default"


def test_token_key_is_stored_only_as_a_hash(alice):
    token, key = make_token(alice)
    assert key.startswith("sk-") and len(key) == 51
    row = Token.objects.values().get(pk=token.pk)
    assert key not in str(row.values())
    assert row["key_hash"] == hash_key(key)
    assert Token.objects.for_key(key).get() == token


def test_channel_key_is_stored_only_encrypted():
    channel = make_channel(key="sk-upstream-very-secret")
    raw = type(channel).objects.values_list("key_encrypted", flat=True).get(pk=channel.pk)
    assert "sk-upstream-very-secret" not in raw
    assert channel.get_key() == "sk-upstream-very-secret"


def test_old_channel_keys_still_decrypt_after_a_new_encryption_key(settings):
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [old]
    ciphertext = keystore.encrypt("sk-x")
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [new, old]
    assert keystore.decrypt(ciphertext) == "sk-x"
    rotated = keystore.rotate(ciphertext)
    settings.CHANNEL_KEY_ENCRYPTION_KEYS = [new]
    assert keystore.decrypt(rotated) == "sk-x"


def test_multiplier_must_be_positive():
    group = Group(name="bad", multiplier=Decimal("0"))
    with pytest.raises(ValidationError):
        group.full_clean()
    with pytest.raises(IntegrityError):
        group.save()


def test_a_user_cannot_point_a_token_at_a_group_they_may_not_use(alice):
    make_group("internal", user_selectable=False)
    with pytest.raises(ValidationError):
        make_token(alice, group_name="internal")


def test_cost_uses_rates_per_million_and_the_multiplier():
    rates = Rates.of(Decimal("2"), Decimal("8"))
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert usage_cost(usage, rates, Decimal("1.5")) == Decimal("0.009")


def test_cached_and_written_tokens_have_their_own_rates():
    rates = Rates.of(Decimal("3"), Decimal("15"), Decimal("0.3"), Decimal("3.75"))
    usage = Usage(input_tokens=1000, output_tokens=100, cached_tokens=600, cache_write_tokens=300)
    # (100 x 3 + 600 x 0.3 + 300 x 3.75 + 100 x 15) / 1M
    assert usage_cost(usage, rates, Decimal("1")) == Decimal("0.003105")
    assert Rates.of(Decimal("3"), Decimal("15")).cached_input == Decimal("3")  # unset: input


def test_the_hold_takes_the_dearest_input_rate_of_the_dearest_attempt():
    cheap = (Rates.of(Decimal("1"), Decimal("2")), Decimal("1"))
    writes = (Rates.of(Decimal("3"), Decimal("15"), Decimal("0.3"), Decimal("3.75")), Decimal("2"))
    # (1000 x 3.75 + 100 x 15) / 1M x 2
    assert hold_amount(1000, 100, [cheap, writes]) == Decimal("0.0105")
