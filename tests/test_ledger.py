from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from billing import ledger
from billing.models import UsageRecord
from tests.factories import make_channel, make_token, make_user
from tokens.models import Token

pytestmark = pytest.mark.django_db

OK = UsageRecord.Status.SUCCESS


def balance(user):
    user.refresh_from_db()
    return user.balance


def reserve(token, amount):
    return ledger.reserve(
        token,
        Decimal(amount),
        request_id="req-1",
        endpoint="chat/completions",
        model="gpt-4o-mini",
        stream=False,
    )


def test_reserve_refuses_more_than_the_balance(alice):
    token, _ = make_token(alice)
    with pytest.raises(ledger.InsufficientQuota) as refused:
        reserve(token, alice.balance + 1)
    assert "may cost up to 101" in refused.value.message
    assert "the balance is 100" in refused.value.message
    assert balance(alice) == Decimal("100")
    assert not UsageRecord.objects.exists()
    reserve(token, "40")
    assert balance(alice) == Decimal("60")


def test_a_hold_is_durable_as_a_pending_usage_record(alice):
    token, _ = make_token(alice)
    hold = reserve(token, "5")
    record = UsageRecord.objects.get(pk=hold.record_id)
    assert record.status == "pending" and record.held == Decimal("5")
    assert record.user == alice and record.token == token


def test_reserve_respects_the_token_spend_limit():
    user = make_user("carol", balance=Decimal("100"))
    token, _ = make_token(user, spend_limit=Decimal("1"))
    reserve(token, "0.6")
    with pytest.raises(ledger.InsufficientQuota) as refused:
        reserve(token, "0.6")
    assert "may cost up to 0.6" in refused.value.message
    assert "has 0.4 of its spend limit left" in refused.value.message
    assert balance(user) == Decimal("99.4")


def test_settle_replaces_the_hold_by_the_cost(alice):
    token, _ = make_token(alice)
    hold = reserve(token, "5")
    assert ledger.settle(hold, status=OK, cost=Decimal("1.25"))
    assert balance(alice) == Decimal("98.75")
    token.refresh_from_db()
    assert token.spent == Decimal("1.25")
    assert token.last_used_at is not None
    assert UsageRecord.objects.get().cost == Decimal("1.25")


def test_a_hold_settles_once_only(alice):
    token, _ = make_token(alice)
    hold = reserve(token, "5")
    assert ledger.settle(hold, status=OK, cost=Decimal("1"))
    assert not ledger.settle(hold, status=OK, cost=Decimal("0"))
    assert balance(alice) == Decimal("99")


def test_settle_on_a_limited_token_moves_its_spend_from_hold_to_cost():
    user = make_user("carol", balance=Decimal("10"))
    token, _ = make_token(user, spend_limit=Decimal("3"))
    hold = reserve(token, "2")
    assert Token.objects.get(pk=token.pk).spent == Decimal("2")
    ledger.settle(hold, status=OK, cost=Decimal("0.5"))
    assert Token.objects.get(pk=token.pk).spent == Decimal("0.5")
    assert balance(user) == Decimal("9.5")


def test_a_failed_request_gives_the_whole_hold_back(alice):
    token, _ = make_token(alice)
    hold = reserve(token, "5")
    ledger.settle(hold, status=UsageRecord.Status.UPSTREAM_ERROR, cost=Decimal("0"))
    assert balance(alice) == Decimal("100")
    token.refresh_from_db()
    assert token.spent == Decimal("0")


def test_tenths_add_up_exactly_on_every_database():
    user = make_user("carol", balance=Decimal("0.3"))
    token, _ = make_token(user)
    for _ in range(3):  # binary floating point would refuse the third
        ledger.settle(reserve(token, "0.1"), status=OK, cost=Decimal("0.1"))
    assert balance(user) == Decimal("0")
    with pytest.raises(ledger.InsufficientQuota):
        reserve(token, "0.0000000001")


def test_writing_a_record_outside_the_ledger_moves_no_money(alice):
    token, _ = make_token(alice)
    UsageRecord.objects.create(
        request_id="import", user=alice, token=token, requested_model="m", cost=Decimal("3")
    )
    assert balance(alice) == Decimal("100")


def test_release_holds_refunds_requests_that_never_settled(alice):
    token, _ = make_token(alice)
    stale = reserve(token, "5")
    UsageRecord.objects.filter(pk=stale.record_id).update(
        created=UsageRecord.objects.get(pk=stale.record_id).created - timedelta(hours=2)
    )
    reserve(token, "7")  # in flight right now: left alone
    out = StringIO()
    call_command("release_holds", "--dry-run", stdout=out)
    assert "Would release 1 hold" in out.getvalue()
    assert balance(alice) == Decimal("88")
    call_command("release_holds", stdout=out)
    assert "Released 1 stale hold" in out.getvalue()
    assert balance(alice) == Decimal("93")
    assert UsageRecord.objects.get(pk=stale.record_id).status == "abandoned"
    assert not ledger.settle(stale, status=OK, cost=Decimal("1"))  # too late: no double refund
    call_command("release_holds", stdout=out)
    assert "Nothing to do" in out.getvalue()


def test_top_up_adds_to_the_balance(alice):
    ledger.top_up(alice.pk, Decimal("2.5"))
    assert balance(alice) == Decimal("102.5")
    with pytest.raises(ValueError):
        ledger.top_up(alice.pk, Decimal("-1"))


def test_a_channel_deleted_while_its_request_ran_still_settles(alice):
    token, _ = make_token(alice)
    hold = reserve(token, "5")
    channel = make_channel("going-away")
    gone = channel.pk
    channel.delete()
    assert ledger.settle(hold, status=OK, cost=Decimal("1"), channel_id=gone)
    assert balance(alice) == Decimal("99")
    assert UsageRecord.objects.get().channel_id is None
