"""Creating and revoking tokens: the one path the admin, the commands and the key page share."""

from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from groups.models import AUTO, Group
from tokens.models import Token


def resolve_group(owner, group_name: str | None) -> tuple[Group | None, bool]:
    """Turn a group name ('', a name, or 'auto') into (group, auto) for this owner.

    Raises ValidationError when the owner may not use that group.
    """
    if not group_name:
        return None, False
    if group_name == AUTO:
        return None, True
    group = owner.usable_groups().filter(name=group_name).first()
    if group is None:
        raise ValidationError(
            f"User '{owner.username}' may not use group '{group_name}': "
            "it is neither their group nor an active selectable group."
        )
    return group, False


def create_token(
    owner,
    *,
    name: str = "",
    group_name: str | None = None,
    spend_limit: Decimal | None = None,
    allowed_models: str = "",
    allowed_ips: str = "",
    expires_at: datetime | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrency: int | None = None,
) -> tuple[Token, str]:
    """Create a token for owner; return it with the full key, which is never stored. The rate
    limits (None: none on the key) apply on top of the owner's."""
    group, auto = resolve_group(owner, group_name)
    token = Token(
        owner=owner,
        name=name,
        group=group,
        auto=auto,
        spend_limit=spend_limit,
        allowed_models=allowed_models,
        allowed_ips=allowed_ips,
        expires_at=expires_at,
        rpm=rpm,
        tpm=tpm,
        max_concurrency=max_concurrency,
    )
    key = token.set_new_key()
    token.full_clean(exclude=["key_hash", "key_prefix"])
    with transaction.atomic():
        token.save()
    return token, key


def revoke(tokens) -> int:
    """Revoke a queryset of tokens; return how many were active."""
    return tokens.filter(status=Token.Status.ACTIVE).update(status=Token.Status.REVOKED)
