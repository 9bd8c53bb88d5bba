"""DRF authentication for /v1: `Authorization: Bearer sk-...` or `x-api-key: sk-...`.

One indexed query (the token with its owner and the owner's group, for the rate limits)
per request; `Token.refusal()` decides. A refused key
raises `KeyRefused`, which the relay renders as its error envelope: 401 invalid_api_key (the key
shown masked), 401 token_expired, 403 ip_not_allowed. The client IP is REMOTE_ADDR, or behind
RELAY_TRUSTED_PROXIES the right-most X-Forwarded-For address that is not a trusted proxy.
"""

import ipaddress
from datetime import UTC
from decimal import Decimal
from functools import cache, lru_cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException

from groups.models import LIMIT_FIELDS, Group
from tokens.models import Token, hash_key, mask_key, parse_ip

CHALLENGE = "Bearer"


def presented_key(request) -> str:
    meta = request.META
    header = meta.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() == "bearer":
            return key.strip()
        return ""
    return meta.get("HTTP_X_API_KEY", "").strip()


# The lookup is on every request: one indexed SELECT of just the columns the relay reads,
# written once here instead of compiled by the ORM each time (that costs ~0.4 ms of CPU).
TOKEN_FIELDS = {
    "id",
    "owner_id",
    "name",
    "group_id",
    "auto",
    "key_prefix",
    "status",
    "expires_at",
    "spend_limit",
    "allowed_models",
    "allowed_ips",
    *LIMIT_FIELDS,
}
OWNER_FIELDS = {"id", "username", "is_active", "group_id", *LIMIT_FIELDS}
# The owner's group only for its rate limits (the defaults of its users): the routing table
# has the rest. Any other field of `token.owner.group` is loaded on first use, as before.
GROUP_FIELDS = {"id", *LIMIT_FIELDS}


def _in_model_order(model, names) -> list:
    """Model.from_db wants the loaded fields in the model's own field order."""
    return [f for f in model._meta.concrete_fields if f.attname in names]


@cache
def _lookup() -> tuple[str, list, list, list]:
    user_model = get_user_model()
    token_fields = _in_model_order(Token, TOKEN_FIELDS)
    owner_fields = _in_model_order(user_model, OWNER_FIELDS)
    group_fields = _in_model_order(Group, GROUP_FIELDS)
    qn = connection.ops.quote_name
    columns = [f"t.{qn(f.column)}" for f in token_fields]
    columns += [f"u.{qn(f.column)}" for f in owner_fields]
    columns += [f"g.{qn(f.column)}" for f in group_fields]
    token_meta, user_meta, group_meta = Token._meta, user_model._meta, Group._meta
    # Identifiers come from the models' metadata; the key hash is a parameter.
    sql = (
        f"SELECT {', '.join(columns)} FROM {qn(token_meta.db_table)} t "  # noqa: S608
        f"INNER JOIN {qn(user_meta.db_table)} u ON u.{qn(user_meta.pk.column)} = t."
        f"{qn(token_meta.get_field('owner').column)} "
        f"INNER JOIN {qn(group_meta.db_table)} g ON g.{qn(group_meta.pk.column)} = u."
        f"{qn(user_meta.get_field('group').column)} "
        f"WHERE t.{qn(token_meta.get_field('key_hash').column)} = %s"
    )
    return sql, token_fields, owner_fields, group_fields


def _python_value(field, value):
    """What the ORM's converters would give, for the few field kinds loaded here."""
    if value is None:
        return None
    kind = field.get_internal_type()
    if kind == "BooleanField":
        return bool(value)  # SQLite answers 0/1
    if kind == "DateTimeField":
        if isinstance(value, str):  # SQLite stores naive UTC text
            value = parse_datetime(value)
        return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value
    if kind == "DecimalField" and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def token_for_hash(key_hash: str) -> Token | None:
    """The token with this key hash, its owner and the owner's group (only the fields above
    loaded), or None."""
    sql, token_fields, owner_fields, group_fields = _lookup()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    fields = token_fields + owner_fields + group_fields
    values = [_python_value(f, v) for f, v in zip(fields, row, strict=True)]
    n, m = len(token_fields), len(token_fields) + len(owner_fields)
    token = Token.from_db(connection.alias, [f.attname for f in token_fields], values[:n])
    token.owner = get_user_model().from_db(
        connection.alias, [f.attname for f in owner_fields], values[n:m]
    )
    token.owner.group = Group.from_db(
        connection.alias, [f.attname for f in group_fields], values[m:]
    )
    return token


@lru_cache(maxsize=4)
def _networks(entries: tuple) -> tuple:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_proxy(address: str, proxies: tuple) -> bool:
    ip = parse_ip(address)
    return ip is not None and any(ip in net for net in proxies)


def _normal(address: str) -> str:
    ip = parse_ip(address)
    return str(ip) if ip is not None else address


def client_ip(request) -> str:
    """Who sent the request: REMOTE_ADDR, or behind trusted proxies the first address from the
    right of X-Forwarded-For that is not a trusted proxy (what is left of it, the client may
    have written itself)."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = _networks(tuple(settings.RELAY_TRUSTED_PROXIES))
    if not proxies or not _is_proxy(remote, proxies):
        return _normal(remote)
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not _is_proxy(hop, proxies):
            return _normal(hop)
    return _normal(hops[0] if hops else remote)  # proxies all the way: the first one


class KeyRefused(APIException):
    """A request refused for its API key: what the client is told (status, message, OpenAI
    `code` and `type`) and the headers to send with it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = "invalid_request_error",  # noqa: A002  (OpenAI's field name)
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status
        self.message = message
        self.code = code
        self.type = type
        self.headers = headers or {}


EXPECTED = "Expected `Authorization: Bearer <key>` (or `x-api-key: <key>`)"


def malformed_authorization(header: str) -> str:
    """What is wrong with an Authorization header that carries no Bearer key ("" if it is
    absent or blank): said to the client instead of "you didn't provide an API key"."""
    header = header.strip()
    if not header:
        return ""
    scheme, sep, rest = header.partition(" ")
    if scheme.lower() == "bearer":
        return f"{EXPECTED}, got `Bearer` with no key after it."
    if scheme.lower().startswith("bearer"):
        if scheme[6:7].isspace():  # "Bearer<TAB>key"
            return f"{EXPECTED}, got `Bearer` and the key separated by a tab, not a space."
        return f"{EXPECTED}, got no space between `Bearer` and the key."
    if scheme.isalpha() and sep and rest.strip() and len(scheme) <= 20:
        return f"{EXPECTED}, got a {scheme.capitalize()} credential."
    if scheme.lower().startswith("sk-") or not sep:
        return f"{EXPECTED}, got a value without the `Bearer ` scheme before it."
    return f"{EXPECTED}, got an Authorization header in another form."


def _unauthorized(message: str, code: str) -> KeyRefused:
    return KeyRefused(401, message, code=code, headers={"WWW-Authenticate": CHALLENGE})


class TokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        key = presented_key(request)
        if not key:
            malformed = malformed_authorization(request.META.get("HTTP_AUTHORIZATION", ""))
            if malformed:
                raise _unauthorized(malformed, "invalid_api_key")
            raise _unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer sk-...' "
                "or 'x-api-key: sk-...'.",
                "invalid_api_key",
            )
        token = token_for_hash(hash_key(key))
        if token is None:
            raise _unauthorized(f"Incorrect API key provided: {mask_key(key)}.", "invalid_api_key")
        refusal = token.refusal(client_ip(request) if token.allowed_ips else None)
        if refusal is None:
            return token.owner, token
        if refusal.code == "invalid_api_key":  # revoked looks the same as unknown
            raise _unauthorized(f"Incorrect API key provided: {mask_key(key)}.", refusal.code)
        if refusal.code == "token_expired":
            raise _unauthorized(
                f"The API key {mask_key(key)} has expired. Create a new key.", refusal.code
            )
        raise KeyRefused(refusal.status, refusal.reason, code=refusal.code)

    def authenticate_header(self, request):
        return CHALLENGE
