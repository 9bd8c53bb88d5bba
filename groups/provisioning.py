"""Creating and updating groups and users: what the ops commands and the admin share.

Each function validates everything before it writes and writes inside one transaction, so a
bad value leaves nothing half-written. Options left as None keep the current value on update
(and the model default on create); a rate limit given as CLEAR (the commands' "none") is
removed.
"""

import secrets
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from billing.pricing import money
from groups.models import LIMIT_FIELDS, Group, User, name_taken_message, same_name_other_case

CLEAR = 0  # a rate limit given as this is removed (no limit; a user's: the group's default)


@dataclass
class Saved:
    obj: object
    created: bool
    changed: list[str]  # the fields whose value changed; empty on an idempotent re-run


def _apply(obj, values: dict) -> list[str]:
    changed = []
    for field, value in values.items():
        if value is not None and getattr(obj, field) != value:
            setattr(obj, field, value)
            changed.append(field)
    return changed


def limit_option(value: str | None, option: str) -> int | None:
    """A command's rate-limit option: a whole number of at least 1, or "none" (CLEAR); None
    when it was not given."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return CLEAR
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValidationError(f"{option}: '{value}' is not a whole number of at least 1 (or none).")
    return number


def add_limit_arguments(parser, scope: str) -> None:
    """The --rpm, --tpm and --max-concurrency options of the create_* commands."""
    parser.add_argument("--rpm", help=f"Requests per minute {scope} (or none).")
    parser.add_argument("--tpm", help=f"Tokens per minute {scope}, prompt + completion (or none).")
    parser.add_argument("--max-concurrency", help=f"Requests in flight at once {scope} (or none).")


def limit_options(options: dict) -> dict:
    """The parsed --rpm, --tpm and --max-concurrency of a command, as save_* keywords."""
    return {
        "rpm": limit_option(options["rpm"], "--rpm"),
        "tpm": limit_option(options["tpm"], "--tpm"),
        "max_concurrency": limit_option(options["max_concurrency"], "--max-concurrency"),
    }


def _apply_limits(obj, limits: dict) -> list[str]:
    changed = []
    for field in LIMIT_FIELDS:
        value = limits.get(field)
        if value is None:
            continue
        value = None if value == CLEAR else value
        if getattr(obj, field) != value:
            setattr(obj, field, value)
            changed.append(field)
    return changed


def save_group(
    name: str,
    *,
    multiplier: Decimal | None = None,
    auto_priority: int | None = None,
    user_selectable: bool | None = None,
    pricing_confirmed: bool | None = None,
    description: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrency: int | None = None,
) -> Saved:
    """Create the group, or update the given options of an existing one. The rate limits are
    the defaults of each of its users. A name that differs only in case from an existing
    group's is refused (group names are unique ignoring case)."""
    limits = {"rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency}
    with transaction.atomic():
        group = Group.objects.select_for_update().filter(name=name).first()
        created = group is None
        if created:
            other = same_name_other_case(name)
            if other is not None:
                raise ValidationError(name_taken_message(name, other))
            group = Group(name=name)
        changed = _apply(
            group,
            {
                "multiplier": multiplier,
                "auto_priority": auto_priority,
                "user_selectable": user_selectable,
                "pricing_confirmed": pricing_confirmed,
                "description": description,
            },
        )
        changed += _apply_limits(group, limits)
        if created or changed:
            group.full_clean()
            group.save()
    return Saved(group, created, changed)


def get_group(name: str) -> Group:
    group = Group.objects.filter(name=name).first()
    if group is None:
        raise ValidationError(f"No group named '{name}'.")
    return group


def save_user(
    username: str,
    *,
    group_name: str | None = None,
    balance: Decimal | None = None,
    email: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrency: int | None = None,
) -> Saved:
    """Create an API user (no password: they sign in once an operator sets one), or update one.
    The rate limits override the group's defaults.

    On update a given balance replaces the current one with a single UPDATE of that column, so
    the save of the other fields never writes back a balance read earlier.
    """
    if balance is not None and balance < 0:
        raise ValidationError("The balance cannot be negative.")
    group = get_group(group_name) if group_name is not None else None
    limits = {"rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency}
    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        created = user is None
        if created:
            user = User(username=username, group=group or Group.objects.get(name="default"))
            user.set_unusable_password()
            _apply(user, {"email": email, "balance": balance})
            _apply_limits(user, limits)
            user.full_clean()
            user.save()
            return Saved(user, True, [])
        changed = _apply(user, {"group": group, "email": email}) + _apply_limits(user, limits)
        if changed:
            user.full_clean(exclude=["password"])
            user.save(update_fields=[f if f != "group" else "group_id" for f in changed])
        if balance is not None and user.balance != balance:
            User.objects.filter(pk=user.pk).update(balance=balance)
            changed.append(f"balance {money(user.balance)} -> {money(balance)}")
            user.balance = balance
    return Saved(user, False, changed)


def apply_balance_edit(user_id: int, was: Decimal, now: Decimal) -> None:
    """An operator changed a balance in a form from `was` to `now`: apply the difference.

    Requests drawing on the balance meanwhile are kept: the database adds the delta.
    """
    if now != was:
        User.objects.filter(pk=user_id).update(balance=F("balance") + (now - was))


@dataclass
class AdminResult:
    user: User
    created: bool
    password: str | None  # the generated password, when one was made (shown once)
    updated: bool


def ensure_admin(username: str, password: str = "") -> AdminResult:
    """Make sure a superuser `username` exists.

    A new one gets `password`, or a generated one returned to be shown once. An existing one
    is made staff and superuser again if needed and, when `password` is given and differs,
    gets it; otherwise it is left alone.
    """
    generated = None
    with transaction.atomic():
        user = User.objects.select_for_update().filter(username=username).first()
        if user is None:
            if not password:
                password = generated = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username=username, email="", password=password)
            return AdminResult(user, True, generated, False)
        updated = False
        if not (user.is_staff and user.is_superuser and user.is_active):
            user.is_staff = user.is_superuser = user.is_active = True
            updated = True
        if password and not user.check_password(password):
            user.set_password(password)
            updated = True
        if updated:
            user.save()
    return AdminResult(user, False, None, updated)
