import hashlib
import ipaddress
import secrets
import string
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.timezone import now

from airouter.lists import split_list
from groups.models import (
    AUTO,
    MONEY,
    Group,
    concurrency_field,
    limits_label,
    rpm_field,
    tpm_field,
)

KEY_ALPHABET = string.ascii_letters + string.digits
KEY_PREFIX = "sk-"
KEY_LENGTH = 48
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8


def hash_key(key: str) -> str:
    """Keys are 48 random characters: a plain SHA-256 is a safe, indexable fingerprint."""
    return hashlib.sha256(key.encode()).hexdigest()


def mask_key(key: str) -> str:
    """'sk-abcd...wxyz': enough to recognise a key, never enough to use it."""
    if len(key) <= 12:
        return key[:3] + "***"
    return f"{key[:7]}...{key[-4:]}"


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def parse_ip(text: str):
    """The address in text (an IPv4-mapped IPv6 address as its IPv4 one), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class Refusal(NamedTuple):
    """Why a token may not be used: what the relay answers, and the reason in words."""

    status: int
    code: str
    reason: str


class TokenQuerySet(models.QuerySet):
    def for_key(self, key: str):
        return self.filter(key_hash=hash_key(key))

    def routed_by(self, group_id: int):
        """Tokens that route by this group: those that name it, and those that name no group
        whose owner's default group it is (an auto token names none but routes by auto)."""
        return self.filter(
            models.Q(group_id=group_id)
            | models.Q(group__isnull=True, auto=False, owner__group_id=group_id)
        )


class Token(models.Model):
    """An API key. Only its hash and a short display prefix are stored."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        REVOKED = "revoked", "Revoked"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    group = models.ForeignKey(
        Group,
        on_delete=models.PROTECT,
        related_name="tokens",
        null=True,
        blank=True,
        help_text="The group that routes this token. Empty: the owner's default group.",
    )
    auto = models.BooleanField(
        default=False, help_text="Walk the owner's groups by auto priority, failing over."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_prefix = models.CharField(max_length=16, editable=False, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True)
    spend_limit = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="Empty: no limit beyond the owner's balance."
    )
    spent = models.DecimalField(**MONEY, default=Decimal("0"))
    allowed_models = models.TextField(
        blank=True, help_text="Comma-separated; empty allows every model of the group."
    )
    allowed_ips = models.TextField(
        "allowed client IPs", blank=True, help_text="IPs or CIDRs, comma-separated; empty: any."
    )
    rpm = rpm_field("none on the key (its owner's limits still apply)")
    tpm = tpm_field("none on the key")
    max_concurrency = concurrency_field("none on the key")
    last_used_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=now, editable=False)

    objects = TokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.CheckConstraint(
                condition=~(Q(auto=True) & Q(group__isnull=False)),
                name="tokens_token_auto_or_group",
            ),
            models.CheckConstraint(
                condition=Q(spend_limit__isnull=True) | Q(spend_limit__gte=0),
                name="tokens_token_spend_limit_not_negative",
            ),
        ]

    def __str__(self):
        return f"{self.name or 'token'} ({self.key_prefix}...)"

    def clean(self):
        errors = {}
        if self.auto and self.group_id:
            errors["group"] = "A token routes either by one group or by auto, not both."
        if self.spend_limit is not None and self.spend_limit < 0:
            errors["spend_limit"] = "The spend limit cannot be negative."
        try:
            self.ip_networks  # noqa: B018  (validates)
        except ValueError as exc:
            errors["allowed_ips"] = f"Not an IP or CIDR: {exc}"
        if errors:
            raise ValidationError(errors)

    def set_new_key(self) -> str:
        """Give the token a fresh key; return it (the only time it is ever visible)."""
        key = generate_key()
        self.key_hash = hash_key(key)
        self.key_prefix = key[:DISPLAY_PREFIX_LENGTH]
        return key

    @property
    def group_label(self) -> str:
        if self.auto:
            return AUTO
        return self.group.name if self.group_id else f"{self.owner.group.name} (default)"

    @property
    def limits_label(self) -> str:
        return limits_label(self)

    @property
    def model_allowlist(self) -> list[str]:
        return split_list(self.allowed_models)

    @property
    def ip_networks(self) -> list:
        return [ipaddress.ip_network(c, strict=False) for c in split_list(self.allowed_ips)]

    def ip_allowed(self, ip: str) -> bool:
        networks = self.ip_networks
        if not networks:
            return True
        address = parse_ip(ip)
        return address is not None and any(address in net for net in networks)

    def model_allowed(self, model: str) -> bool:
        allow = self.model_allowlist
        return not allow or model in allow

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= now()

    def refusal(self, ip: str | None = None) -> Refusal | None:
        """Why a request with this token is refused before routing, or None if it is not.

        The relay's authentication and the `route` command both ask this. Without `ip` (the
        command knows no client) the allowlist is only checked for being readable.
        """
        if self.status != self.Status.ACTIVE:
            return Refusal(401, "invalid_api_key", "the token is revoked")
        if not self.owner.is_active:
            return Refusal(401, "invalid_api_key", f"user {self.owner.username} is inactive")
        if self.is_expired:
            return Refusal(401, "token_expired", "the token has expired")
        if self.allowed_ips:
            try:
                self.ip_networks  # noqa: B018  (a row written around clean() may not parse)
            except ValueError as exc:
                return Refusal(
                    403,
                    "ip_not_allowed",
                    f"The IP allowlist of this API key cannot be read ({exc}); fix the token.",
                )
            if ip is not None and not self.ip_allowed(ip):
                return Refusal(
                    403, "ip_not_allowed", f"Requests from {ip} are not allowed for this API key."
                )
        return None
