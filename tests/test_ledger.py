from decimal import Decimal

import pytest

from billing import ledger
from billing.models import UsageRecord
from tests.factories import make_token, make_user
from tokens.models import Token

pytestmark = pytest.mark.django_db


def balance(user):
    user.refresh_from_db()
    return user.balance


def record(token, cost, **kw):
    return UsageRecord(
        request_id="req-1",
        user_id=token.owner_id,
        token=token,
        requested_model="gpt-4o-mini",
        cost=Decimal(cost),
        **kw,
    )


def test_reserve_refuses_more_than_the_balance(alice):
    token, _ = make_token(alice)
    with pytest.raises(ledger.InsufficientQuota):
        ledger.reserve(token, alice.balance + 1)
    assert balance(alice) == Decimal("100")
    ledger.reserve(token, Decimal("40"))
    assert balance(alice) == Decimal("60")


def test_reserve_respects_the_token_spend_limit():
    user = make_user("carol", balance=Decimal("100"))
    token, _ = make_token(user, spend_limit=Decimal("1"))
    ledger.reserve(token, Decimal("0.6"))
    with pytest.raises(ledger.InsufficientQuota, match="spend limit"):
        ledger.reserve(token, Decimal("0.6"))
    assert balance(user) == Decimal("99.4")


def test_settle_replaces_the_hold_by_the_cost(alice):
    token, _ = make_token(alice)
    hold = ledger.reserve(token, Decimal("5"))
    ledger.settle(hold, record(token, "1.25"))
    assert balance(alice) == Decimal("98.75")
    token.refresh_from_db()
    assert token.spent == Decimal("1.25")
    assert token.last_used_at is not None
    assert UsageRecord.objects.get().held == Decimal("5")


def test_settle_on_a_limited_token_moves_its_spend_from_hold_to_cost():
    user = make_user("carol", balance=Decimal("10"))
    token, _ = make_token(user, spend_limit=Decimal("3"))
    hold = ledger.reserve(token, Decimal("2"))
    assert Token.objects.get(pk=token.pk).spent == Decimal("2")
    ledger.settle(hold, record(token, "0.5"))
    assert Token.objects.get(pk=token.pk).spent == Decimal("0.5")
    assert balance(user) == Decimal("9.5")


def test_a_failed_request_gives_the_whole_hold_back(alice):
    token, _ = make_token(alice)
    hold = ledger.reserve(token, Decimal("5"))
    ledger.settle(hold, record(token, "0", status=UsageRecord.Status.UPSTREAM_ERROR))
    assert balance(alice) == Decimal("100")
    token.refresh_from_db()
    assert token.spent == Decimal("0")


def test_top_up_adds_to_the_balance(alice):
    ledger.top_up(alice.pk, Decimal("2.5"))
    assert balance(alice) == Decimal("102.5")
    with pytest.raises(ValueError):
        ledger.top_up(alice.pk, Decimal("-1"))
