"""Creating, updating, enabling and disabling channels, and rotating their keys at rest.

The ops commands and the admin call these; each validates before it writes and writes in
one transaction. Status changes save each channel (not a bulk UPDATE) so whatever listens to
channel saves, such as the routing cache, hears about them.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from channels_app import keystore
from channels_app.models import Channel
from groups.models import Group

# What a mock channel (built in: it calls nothing) keeps as its base URL: the field is
# required, and the .invalid domain never resolves.
MOCK_BASE_URL = "http://mock.invalid/v1"


@dataclass
class SavedChannel:
    channel: Channel
    created: bool
    changed: list[str] = field(default_factory=list)


def parse_model_map(text: str) -> dict[str, str]:
    """'public=upstream,other=up2,old=' -> {'public': 'upstream', 'other': 'up2', 'old': ''}.

    An empty upstream ('old=') asks save_channel to remove that entry."""
    mapping = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        public, sep, upstream = (part.strip() for part in pair.partition("="))
        if not sep or not public:
            raise ValidationError(
                f"Model map entries look like public=upstream (or public= to remove one), "
                f"not '{pair}'."
            )
        mapping[public] = upstream
    return mapping


def merge_model_map(current: dict, changes: dict[str, str], models: list[str]) -> dict[str, str]:
    """The channel's map with `changes` merged in: an entry with an empty upstream is removed,
    the others added or replaced. Refuses a mapping for a model the channel does not list."""
    unlisted = sorted(
        public for public, upstream in changes.items() if upstream and public not in models
    )
    if unlisted:
        raise ValidationError(
            f"--model-map: the channel does not list {', '.join(repr(m) for m in unlisted)} "
            f"(its models: {', '.join(models) or 'none'}); add it with --models first."
        )
    merged = dict(current) if isinstance(current, dict) else {}
    for public, upstream in changes.items():
        if upstream:
            merged[public] = upstream
        else:
            merged.pop(public, None)
    return merged


def groups_named(names: list[str]) -> list[Group]:
    groups = list(Group.objects.filter(name__in=names))
    missing = sorted(set(names) - {g.name for g in groups})
    if missing:
        raise ValidationError(f"No group named {', '.join(repr(n) for n in missing)}.")
    return groups


def save_channel(
    name: str,
    *,
    base_url: str | None = None,
    key: str | None = None,
    models: list[str] | None = None,
    group_names: list[str] | None = None,
    priority: int | None = None,
    weight: int | None = None,
    input_price: Decimal | None = None,
    output_price: Decimal | None = None,
    cached_input_price: Decimal | None = None,
    cache_write_price: Decimal | None = None,
    model_map: dict[str, str] | None = None,
    kind: str | None = None,
    responses_api: bool | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    total_timeout: float | None = None,
    mock_delay_ms: int | None = None,
) -> SavedChannel:
    """Create the channel (base URL, key and models required; a mock channel needs only
    models) or update the given options. `model_map` is merged into the channel's map (see
    merge_model_map), not a replacement of it."""
    groups = groups_named(group_names) if group_names is not None else None
    with transaction.atomic():
        channel = Channel.objects.select_for_update().filter(name=name).first()
        created = channel is None
        if created:
            if kind == Channel.Kind.MOCK:
                base_url = base_url or MOCK_BASE_URL
                needed = (("models", models),)
            else:
                needed = (("base URL", base_url), ("key", key), ("models", models))
            missing = [flag for flag, value in needed if not value]
            if missing:
                raise ValidationError(f"A new channel needs: {', '.join(missing)}.")
            channel = Channel(name=name)
        changed = []
        values = {
            "kind": kind,
            "responses_api": responses_api,
            "base_url": base_url,
            "model_names": ",".join(models) if models is not None else None,
            "priority": priority,
            "weight": weight,
            "input_price": input_price,
            "output_price": output_price,
            "cached_input_price": cached_input_price,
            "cache_write_price": cache_write_price,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "total_timeout": total_timeout,
            "mock_delay_ms": mock_delay_ms,
        }
        for attr, value in values.items():
            if value is not None and getattr(channel, attr) != value:
                setattr(channel, attr, value)
                changed.append(attr)
        if model_map is not None:
            merged = merge_model_map(channel.model_map, model_map, channel.model_list)
            if merged != channel.model_map:
                channel.model_map = merged
                changed.append("model_map")
        if channel.mock_delay_ms and channel.kind != Channel.Kind.MOCK:
            raise ValidationError(
                "Only a mock channel has a mock delay (--mock-delay-ms 0 takes it off)."
            )
        if key and (created or channel.get_key() != key):
            channel.set_key(key)
            changed.append("key")
        if created or changed:
            channel.full_clean()
            channel.save()
        if groups is not None and {g.pk for g in groups} != set(
            channel.groups.values_list("pk", flat=True)
        ):
            channel.groups.set(groups)
            changed.append("groups")
    return SavedChannel(channel, created, [] if created else changed)


def set_status(channels, status: str, reason: str = "") -> int:
    """Put every channel of the queryset that is not already there into `status`."""
    changed = 0
    with transaction.atomic():
        locked = Channel.objects.select_for_update().filter(pk__in=channels.values("pk"))
        for channel in locked.exclude(status=status):
            channel.status = status
            channel.status_reason = reason
            channel.save(update_fields=["status", "status_reason", "updated"])
            changed += 1
    return changed


def enable(channels) -> int:
    return set_status(channels, Channel.Status.ENABLED)


def disable(channels, reason: str = "Disabled by an operator.") -> int:
    return set_status(channels, Channel.Status.DISABLED, reason)


def rotate_keys(*, dry_run: bool = False) -> int:
    """Re-encrypt every channel key with the newest CHANNEL_KEY_ENCRYPTION_KEYS entry.

    Raises KeyStoreError naming the channels whose key no configured entry decrypts; then
    nothing is written.
    """
    rotated = 0
    failed = []
    with transaction.atomic():
        channels = Channel.objects.select_for_update().exclude(key_encrypted="").order_by("pk")
        for channel in channels.only("pk", "name", "key_encrypted"):
            try:
                ciphertext = keystore.rotate(channel.key_encrypted)
            except keystore.KeyStoreError:
                failed.append(channel.name)
                continue
            rotated += 1
            if not dry_run:
                Channel.objects.filter(pk=channel.pk).update(key_encrypted=ciphertext)
        if failed:
            raise keystore.KeyStoreError(
                f"No CHANNEL_KEY_ENCRYPTION_KEYS entry decrypts the key of {', '.join(failed)}; "
                "nothing was re-encrypted. Put the old encryption key back in the list."
            )
    return rotated
