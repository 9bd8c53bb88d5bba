"""The data model's rules beyond tests/test_models.py: clean() messages and the DB constraints."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.timezone import now

from channels_app.models import Channel, ModelPrice
from groups.models import Group
from tests.factories import make_channel, make_group, make_token, make_user, table_entry
from tokens.models import Token

pytestmark = pytest.mark.django_db


def refused_by_the_database(obj):
    with pytest.raises(IntegrityError), transaction.atomic():
        obj.save()


def messages(exc_info) -> dict:
    return exc_info.value.message_dict


def test_auto_is_not_a_group_name():
    group = Group(name="auto")
    with pytest.raises(ValidationError) as exc:
        group.full_clean()
    assert messages(exc)["name"] == ["'auto' is reserved for tokens that fail over."]
    refused_by_the_database(group)


def test_group_names_are_unique():
    make_group("pro")
    refused_by_the_database(Group(name="pro"))


def test_a_user_may_use_their_group_and_active_selectable_groups():
    own = make_group("own", user_selectable=False)
    make_group("open", user_selectable=True)
    make_group("closed", user_selectable=False)
    make_group("retired", user_selectable=True, is_active=False)
    user = make_user("carol", group=own)
    assert sorted(user.usable_groups().values_list("name", flat=True)) == ["open", "own"]


def test_reachable_groups_are_selectable_ones_and_users_default_groups():
    make_group("open", user_selectable=True)
    make_group("nobodys", user_selectable=False)
    make_user("carol", group=make_group("carols", user_selectable=False))
    reachable = set(Group.objects.reachable().values_list("name", flat=True))
    assert reachable == {"open", "carols"}


def test_channel_prices_cannot_be_negative():
    channel = Channel(name="c", base_url="http://127.0.0.1:9/v1", model_names="m")
    channel.input_price = Decimal("-1")
    with pytest.raises(ValidationError) as exc:
        channel.full_clean()
    assert messages(exc)["input_price"] == ["Prices cannot be negative."]
    refused_by_the_database(channel)


def test_channel_needs_a_model_and_a_map_of_names():
    channel = Channel(name="c", base_url="http://127.0.0.1:9/v1", model_names=" , ")
    channel.model_map = {"gpt-4o": 5}
    with pytest.raises(ValidationError) as exc:
        channel.full_clean()
    assert set(messages(exc)) == {"model_names", "model_map"}


def test_channel_timeouts_must_be_positive_and_weight_not_negative():
    refused_by_the_database(
        Channel(name="t", base_url="http://x/v1", model_names="m", read_timeout=0)
    )
    refused_by_the_database(Channel(name="w", base_url="http://x/v1", model_names="m", weight=-1))


def test_channel_maps_model_names_and_prices_per_model():
    channel = make_channel(
        "c",
        groups=[make_group("pro")],
        model_names="gpt-4o\ngpt-4o-mini",
        model_map={"gpt-4o": "gpt-4o-2024-08-06"},
        input_price=Decimal("1"),
        output_price=Decimal("2"),
    )
    ModelPrice.objects.create(channel=channel, model="gpt-4o", input_price=5, output_price=15)
    assert channel.model_list == ["gpt-4o", "gpt-4o-mini"]
    assert channel.upstream_model("gpt-4o") == "gpt-4o-2024-08-06"
    assert channel.upstream_model("gpt-4o-mini") == "gpt-4o-mini"
    entry = table_entry(channel)  # what the relay bills from
    assert _pair(entry.rates("gpt-4o")) == (Decimal("5"), Decimal("15"))
    assert _pair(entry.rates("gpt-4o-mini")) == (Decimal("1"), Decimal("2"))


def test_one_price_per_channel_and_model():
    channel = make_channel("c")
    ModelPrice.objects.create(channel=channel, model="m")
    refused_by_the_database(ModelPrice(channel=channel, model="m"))
    refused_by_the_database(ModelPrice(channel=channel, model="n", output_price=Decimal("-1")))


def test_a_token_routes_by_a_group_or_by_auto_not_both(alice):
    token, _ = make_token(alice)
    token.group, token.auto = make_group("pro"), True
    with pytest.raises(ValidationError) as exc:
        token.full_clean()
    assert "either by one group or by auto" in messages(exc)["group"][0]
    refused_by_the_database(token)


def test_token_spend_limit_cannot_be_negative(alice):
    token, _ = make_token(alice)
    token.spend_limit = Decimal("-0.01")
    with pytest.raises(ValidationError):
        token.full_clean()
    refused_by_the_database(token)


def test_token_ip_and_model_allowlists(alice):
    token, _ = make_token(
        alice, allowed_ips="10.0.0.0/8, 2001:db8::/32,192.0.2.7", allowed_models="a,b"
    )
    assert token.ip_allowed("10.20.30.40") and token.ip_allowed("192.0.2.7")
    assert token.ip_allowed("2001:db8::1")
    assert not token.ip_allowed("192.0.2.8") and not token.ip_allowed("not-an-ip")
    assert token.model_allowed("a") and not token.model_allowed("c")
    anything, _ = make_token(alice)
    assert anything.ip_allowed("203.0.113.1") and anything.model_allowed("whatever")


def test_token_expiry_and_group_label(alice):
    token, _ = make_token(alice, expires_at=now() - timedelta(seconds=1))
    assert token.is_expired
    assert token.group_label == "default (default)"
    assert make_token(alice, group_name="auto")[0].group_label == "auto"
    make_group("pro")
    assert make_token(alice, group_name="pro")[0].group_label == "pro"
    assert not Token.objects.filter(expires_at__isnull=True).first().is_expired


def _pair(rates):
    return rates.input, rates.output
