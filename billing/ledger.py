"""The ledger: hold an upper bound before forwarding, replace it by the real cost after.

Every write is one conditional or F() UPDATE, so concurrent requests cannot overdraw: the
database decides, never a value read earlier in Python. A hold is durable from the moment it
is taken: `reserve` writes a pending usage record beside it, `settle` turns that record into
the request's outcome, and the database trigger on that transition (migration billing 0002)
gives the balance back `held - cost` and moves the token's spend from its hold to the cost.
A process that dies mid-request leaves a pending record, which `release_holds` refunds.
"""

import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F
from django.db.models.functions import Round
from django.utils.timezone import now

from billing.models import UsageRecord
from billing.pricing import money
from tokens.models import Token

ZERO = Decimal("0")
PENDING = UsageRecord.Status.PENDING


class InsufficientQuota(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Hold:
    record_id: int  # the pending usage record that carries the hold
    amount: Decimal
    on_token: bool  # whether the token's spend limit holds it too


def top_up(user_id: int, amount: Decimal) -> None:
    if amount <= 0:
        raise ValueError("A top-up must be a positive amount.")
    get_user_model().objects.filter(pk=user_id).update(balance=Round(F("balance") + amount, 10))


# SQLite has one writer at a time, and a thread that finds the database locked sleeps in
# SQLite's busy handler (1, 2, 5 ... up to 100 ms a nap) even when the lock is released a
# microsecond later: the tail latency of concurrent requests. Inside one process the ledger's
# writers queue on a lock of ours instead, woken the moment it is free; the busy handler only
# waits for other processes.
_sqlite_writer = threading.Lock()


def _writing():
    return _sqlite_writer if connection.vendor == "sqlite" else nullcontext()


def _update(sql: str, params: list) -> int:
    with _writing(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


@cache
def _reserve_sql() -> tuple[str, str, str, str]:
    """The UPDATEs of a hold and of its undoing, written once: they run on every request and
    the ORM would spend ~0.2 ms of CPU compiling each of them."""
    qn = connection.ops.quote_name
    user, token = get_user_model()._meta, Token._meta
    balance, spent, limit = (
        qn(user.get_field("balance").column),
        qn(token.get_field("spent").column),
        qn(token.get_field("spend_limit").column),
    )
    amount = "CAST(%s AS NUMERIC)"
    on_token = (
        f"UPDATE {qn(token.db_table)} SET {spent} = ROUND({spent} + {amount}, 10) "  # noqa: S608
        f"WHERE {qn(token.pk.column)} = %s "
        f"AND ({limit} IS NULL OR {limit} >= ROUND({spent} + {amount}, 10))"
    )
    on_user = (
        f"UPDATE {qn(user.db_table)} SET {balance} = ROUND({balance} - {amount}, 10) "  # noqa: S608
        f"WHERE {qn(user.pk.column)} = %s AND ROUND({balance}, 10) >= {amount} "
        f"AND {balance} > 0"
    )
    release_token = (
        f"UPDATE {qn(token.db_table)} SET {spent} = ROUND({spent} - {amount}, 10) "  # noqa: S608
        f"WHERE {qn(token.pk.column)} = %s"
    )
    release_user = (
        f"UPDATE {qn(user.db_table)} SET {balance} = ROUND({balance} + {amount}, 10) "  # noqa: S608
        f"WHERE {qn(user.pk.column)} = %s"
    )
    return on_token, on_user, release_token, release_user


def reserve(
    token: Token, amount: Decimal, *, request_id: str, endpoint: str, model: str, stream: bool
) -> Hold:
    """Hold amount on the owner's balance (and on the token's spend limit, if it has one),
    and write the pending usage record that makes the hold durable."""
    on_token_sql, on_user_sql, release_token_sql, release_user_sql = _reserve_sql()
    on_token = token.spend_limit is not None
    if on_token and not _update(on_token_sql, [amount, token.pk, amount]):
        limit, spent = Token.objects.values_list("spend_limit", "spent").get(pk=token.pk)
        raise InsufficientQuota(
            f"This request may cost up to {money(amount)} (its prompt and max_tokens at the "
            f"channel's rate), but this token has {money(max(limit - spent, ZERO))} of its "
            "spend limit left. Lower max_tokens, raise the limit or use another token."
        )
    record = UsageRecord(
        request_id=request_id,
        user_id=token.owner_id,
        username=token.owner.username,  # loaded with the token (tokens.authentication)
        token_id=token.pk,
        endpoint=endpoint,
        requested_model=model,
        stream=stream,
        status=PENDING,
        held=amount,
        token_held=amount if on_token else ZERO,
    )
    user_hold = [amount, token.owner_id, amount]
    user_held = False  # held by a statement of its own that the record's INSERT did not join
    try:
        if connection.vendor == "postgresql":
            # One statement: the balance UPDATE and the record INSERT commit together.
            record_id = _fetch_id(_hold_and_insert_sql(), [*user_hold, *_insert_params(record)])
        elif user_held := bool(_update(on_user_sql, user_hold)):
            record_id = _fetch_id(_insert_sql()[0], _insert_params(record))
        else:
            record_id = None
    except BaseException:
        if user_held:  # give back only what was really taken
            _update(release_user_sql, [amount, token.owner_id])
        if on_token:
            _update(release_token_sql, [amount, token.pk])
        raise
    if record_id is None:
        if on_token:
            _update(release_token_sql, [amount, token.pk])
        balance = get_user_model().objects.values_list("balance", flat=True).get(pk=token.owner_id)
        raise InsufficientQuota(
            f"This request may cost up to {money(amount)} (its prompt and max_tokens at the "
            f"channel's rate), but the balance is {money(balance)}. Lower max_tokens or top "
            "up the account."
        )
    return Hold(record_id, amount, on_token)


def settle(hold: Hold, **outcome) -> bool:
    """Write the request's outcome (status, tokens, rates, cost...) onto its pending record.

    The trigger on that UPDATE replaces the hold by `outcome["cost"]`. Only a pending record
    settles, so a late settle and `release_holds` can never both give the money back.
    """
    return settle_record(hold.record_id, outcome)


def settle_record(record_id: int, outcome: dict) -> bool:
    """settle() by the record's id (billing.spool replays kept settles with it)."""
    names = tuple(outcome)
    sql, fields = _settle_sql(names)
    params = [
        f.get_db_prep_save(outcome[n], connection) for n, f in zip(names, fields, strict=True)
    ]
    return bool(_update(sql, [*params, record_id, PENDING]))


# The usage record's INSERT and settling UPDATE run on every request: written once per process
# as SQL (the ORM spends ~0.25 ms of CPU compiling each), with the ORM's own value conversion.


@cache
def _insert_sql() -> tuple[str, list]:
    qn = connection.ops.quote_name
    meta = UsageRecord._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    columns = ", ".join(qn(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({marks}) "  # noqa: S608
        f"RETURNING {qn(meta.pk.column)}"
    )
    return sql, fields


def _insert_params(record: UsageRecord) -> list:
    return [f.get_db_prep_save(f.pre_save(record, True), connection) for f in _insert_sql()[1]]


def _fetch_id(sql: str, params: list) -> int | None:
    with _writing(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


@cache
def _hold_and_insert_sql() -> str:
    """PostgreSQL: the balance hold and the pending record's INSERT as one statement (no
    record without its hold, nor the other way round, even if the process dies between)."""
    qn = connection.ops.quote_name
    meta = UsageRecord._meta
    _, fields = _insert_sql()
    on_user = _reserve_sql()[1]
    user_pk = qn(get_user_model()._meta.pk.column)
    columns = ", ".join(qn(f.column) for f in fields)
    values = ", ".join(f"CAST(%s AS {f.db_type(connection)})" for f in fields)
    return (
        f"WITH held AS ({on_user} RETURNING {user_pk}) "  # noqa: S608
        f"INSERT INTO {qn(meta.db_table)} ({columns}) SELECT {values} FROM held "
        f"RETURNING {qn(meta.pk.column)}"
    )


@cache
def _settle_sql(names: tuple[str, ...]) -> tuple[str, list]:
    qn = connection.ops.quote_name
    meta = UsageRecord._meta
    fields = [meta.get_field(name) for name in names]

    def value(field) -> str:
        if not field.is_relation:
            return "%s"
        # The group or channel that served may have been deleted while the request ran: the
        # record keeps NULL (and its money moves) rather than failing on the foreign key.
        related = field.related_model._meta
        return (
            f"(SELECT {qn(related.pk.column)} FROM {qn(related.db_table)} "  # noqa: S608
            f"WHERE {qn(related.pk.column)} = %s)"
        )

    assignments = ", ".join(f"{qn(f.column)} = {value(f)}" for f in fields)
    sql = (
        f"UPDATE {qn(meta.db_table)} SET {assignments} "  # noqa: S608
        f"WHERE {qn(meta.pk.column)} = %s AND {qn(meta.get_field('status').column)} = %s"
    )
    return sql, fields


def longest_request() -> float:
    """Seconds the longest request may run: every attempt to its channel's total timeout, or a
    stream to RELAY_MAX_STREAM_SECONDS (after its attempts' first bytes)."""
    from channels_app.models import Channel

    slowest = max(
        (
            c + t
            for c, t in Channel.objects.values_list("connect_timeout", "total_timeout").iterator()
        ),
        default=0.0,
    )
    # A stream's attempts before its first byte, then the stream itself; and a margin.
    return settings.RELAY_MAX_ATTEMPTS * slowest + settings.RELAY_MAX_STREAM_SECONDS + 60


def release_stale_holds(older_than: timedelta, dry_run: bool = False) -> int:
    """Refund the holds of requests that never settled (their process died): cost 0."""
    stale = UsageRecord.objects.filter(status=PENDING, created__lt=now() - older_than)
    if dry_run:
        return stale.count()
    return stale.update(
        status=UsageRecord.Status.ABANDONED,
        error="The request never settled (its process stopped); the hold was given back.",
    )
