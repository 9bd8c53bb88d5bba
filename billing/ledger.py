"""The ledger: hold an upper bound before forwarding, replace it by the real cost after.

Every write is one conditional or F() UPDATE, so concurrent requests cannot overdraw:
the database decides, never a value read earlier in Python.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db.models import F, Q

from billing.models import UsageRecord
from tokens.models import Token

ZERO = Decimal("0")


class InsufficientQuota(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Hold:
    user_id: int
    token_id: int
    amount: Decimal
    on_token: bool  # whether the token's spend limit holds it too


def top_up(user_id: int, amount: Decimal) -> None:
    if amount <= 0:
        raise ValueError("A top-up must be a positive amount.")
    get_user_model().objects.filter(pk=user_id).update(balance=F("balance") + amount)


def reserve(token: Token, amount: Decimal) -> Hold:
    """Hold amount on the owner's balance (and on the token's spend limit, if it has one)."""
    on_token = token.spend_limit is not None
    if on_token:
        held = (
            Token.objects.filter(pk=token.pk)
            .filter(Q(spend_limit__isnull=True) | Q(spend_limit__gte=F("spent") + amount))
            .update(spent=F("spent") + amount)
        )
        if not held:
            raise InsufficientQuota(
                "This token has reached its spend limit. Raise the limit or use another token."
            )
    held = (
        get_user_model()
        .objects.filter(pk=token.owner_id, balance__gte=amount)
        .update(balance=F("balance") - amount)
    )
    if not held:
        if on_token:
            Token.objects.filter(pk=token.pk).update(spent=F("spent") - amount)
        raise InsufficientQuota(
            "Your balance is too low for this request. Top up the account and try again."
        )
    return Hold(token.owner_id, token.pk, amount, on_token)


def settle(hold: Hold | None, record: UsageRecord) -> UsageRecord:
    """Insert the usage record; the insert itself replaces the hold by the record's cost.

    A trigger on billing_usagerecord (migration billing 0002) gives the balance back
    `held - cost` and moves the token's spend from `token_held` to `cost`, inside the INSERT
    statement: one round trip, and never a record without its money or money without a record.
    """
    if hold is not None:
        record.held = hold.amount
        record.token_held = hold.amount if hold.on_token else ZERO
    record.save(force_insert=True)
    return record
