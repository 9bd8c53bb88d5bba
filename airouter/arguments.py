"""Parsing ops-command arguments into values, with one-line CommandErrors.

Commands take their options as strings and convert them here, inside handle(), so a bad value
ends in a single "CommandError: ..." line and a non-zero exit rather than an argparse usage
dump.
"""

from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from airouter.lists import split_list


def decimal_or_none(value: str | None, option: str) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"{option}: '{value}' is not a number.") from None
    if not number.is_finite():
        raise CommandError(f"{option}: '{value}' is not a finite number.")
    return number


def seconds_or_none(value: str | None, option: str) -> float | None:
    number = decimal_or_none(value, option)
    if number is None:
        return None
    if number <= 0:
        raise CommandError(f"{option}: '{value}' must be more than 0 seconds.")
    return float(number)


def int_or_none(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise CommandError(f"{option}: '{value}' is not a whole number.") from None


def name_list(value: str | None) -> list[str] | None:
    """'a, b,,c' -> ['a', 'b', 'c']; None stays None (option not given)."""
    return None if value is None else split_list(value)


def moment(value: str | None, option: str, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or date-time; naive values are UTC.

    A bare date means its start, or with end_of_day the start of the next day (so an
    "until" date includes that whole day).
    """
    if value is None:
        return None
    try:
        day = parse_date(value)
        parsed = None if day else parse_datetime(value)
    except ValueError:
        parsed = day = None
    if day is not None:
        parsed = datetime.combine(day + timedelta(days=1) if end_of_day else day, time())
    if parsed is None:
        raise CommandError(
            f"{option}: '{value}' is not an ISO 8601 date or date-time "
            "(e.g. 2026-12-31 or 2026-12-31T23:59:00Z)."
        )
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def one_line(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(
            msg if field == "__all__" else f"{field}: {msg}"
            for field, errors in exc.message_dict.items()
            for msg in errors
        )
    return " ".join(exc.messages)


@contextmanager
def validation_as_command_error():
    """Turn a domain ValidationError into a one-line CommandError."""
    try:
        yield
    except ValidationError as exc:
        raise CommandError(one_line(exc)) from None
