"""The routing table: a per-process snapshot of groups, channels, their keys, models and prices.

The relay reads it on every request, so it lives in memory: `get_table()` builds it on first
use and again after ROUTING_CACHE_TTL seconds (so every instance sees an admin change within
that bound, or at once through Redis pub/sub when REDIS_URL is set: see routing_sync), and
`invalidate()` drops it at once. Saving or deleting a group, channel or
per-model price, or changing a channel's groups, invalidates it in this process through signals.
Balances are never cached: they live in the database only.
"""

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from billing.pricing import Rates
from channels_app import routing_sync
from channels_app.keystore import KeyStoreError
from channels_app.models import Channel, ModelPrice
from groups.models import Group


@dataclass(frozen=True, slots=True)
class GroupEntry:
    id: int
    name: str
    multiplier: Decimal
    auto_priority: int | None
    user_selectable: bool
    is_active: bool


@dataclass(frozen=True, slots=True, eq=False)
class ChannelEntry:
    id: int
    name: str
    kind: str
    responses_api: bool
    base_url: str
    key: str | None = field(repr=False)  # None: it cannot be decrypted
    models: frozenset
    model_map: dict
    priority: int
    weight: int
    status: str
    status_reason: str
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    default_rates: Rates
    prices: dict  # model -> Rates: the per-model overrides
    group_ids: frozenset
    last_error: str
    mock_delay_ms: int = 0  # a mock channel's wait before it answers

    @property
    def enabled(self) -> bool:
        return self.status == Channel.Status.ENABLED

    @property
    def usable(self) -> bool:
        """What routing may try: enabled, with a key it can read."""
        return self.enabled and self.key is not None

    def rates(self, model: str) -> Rates:
        return self.prices.get(model) or self.default_rates

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)


@dataclass(frozen=True, slots=True)
class Table:
    groups: dict  # id -> GroupEntry
    channels_by_group: dict  # group id -> [ChannelEntry], every channel of the group
    auto_groups: tuple  # active groups with an auto_priority, in that order
    loaded_at: float


_lock = threading.Lock()
_table: Table | None = None
_generation = 0  # bumped by every invalidation


def get_table() -> Table:
    """The current snapshot; re-read when invalidated or older than ROUTING_CACHE_TTL."""
    table = _table
    if table is not None and time.monotonic() - table.loaded_at < settings.ROUTING_CACHE_TTL:
        return table
    routing_sync.ensure_listener(invalidate)
    return _reload()


def invalidate() -> None:
    """Forget the snapshot; the next request reads the database."""
    global _table, _generation
    _generation += 1
    _table = None


def changed(**kwargs) -> None:
    """Routing data changed (a signal, or an UPDATE that sends none): drop the table here, and
    everywhere once committed."""
    # Now, and again once the admin's transaction commits: a reload in between would have
    # read the old rows.
    invalidate()
    transaction.on_commit(_committed)


def _committed() -> None:
    invalidate()
    routing_sync.publish()  # the other instances (with REDIS_URL)


def _reload() -> Table:
    global _table
    with _lock:
        table = _table
        if table is not None and time.monotonic() - table.loaded_at < settings.ROUTING_CACHE_TTL:
            return table  # another thread loaded it while we waited
        generation = _generation
        table = load(loaded_at=time.monotonic())
        if generation == _generation:  # nothing changed while we read: keep it
            _table = table
        return table


def load(loaded_at: float = 0.0) -> Table:
    """Read the table from the database (four queries)."""
    groups = {
        g.id: GroupEntry(
            g.id, g.name, g.multiplier, g.auto_priority, g.user_selectable, g.is_active
        )
        for g in Group.objects.all()
    }
    group_ids: dict[int, set] = {}
    for channel_id, group_id in Channel.groups.through.objects.values_list(
        "channel_id", "group_id"
    ):
        group_ids.setdefault(channel_id, set()).add(group_id)
    prices: dict[int, dict] = {}
    for price in ModelPrice.objects.all():
        prices.setdefault(price.channel_id, {})[price.model] = Rates.of(
            price.input_price, price.output_price, price.cached_input_price, price.cache_write_price
        )
    channels_by_group: dict[int, list] = {gid: [] for gid in groups}
    for ch in Channel.objects.all():
        try:
            key = ch.get_key()
        except KeyStoreError:
            key = None
        entry = ChannelEntry(
            id=ch.id,
            name=ch.name,
            kind=ch.kind,
            responses_api=ch.responses_api,
            base_url=ch.base_url.rstrip("/"),
            key=key,
            models=frozenset(ch.model_list),
            model_map=dict(ch.model_map or {}),
            priority=ch.priority,
            weight=ch.weight,
            status=ch.status,
            status_reason=ch.status_reason,
            connect_timeout=ch.connect_timeout,
            read_timeout=ch.read_timeout,
            total_timeout=ch.total_timeout,
            default_rates=Rates.of(
                ch.input_price, ch.output_price, ch.cached_input_price, ch.cache_write_price
            ),
            prices=prices.get(ch.id, {}),
            group_ids=frozenset(group_ids.get(ch.id, ())),
            last_error=ch.last_error,
            mock_delay_ms=ch.mock_delay_ms,
        )
        for gid in entry.group_ids:
            channels_by_group.setdefault(gid, []).append(entry)
    auto_groups = tuple(
        sorted(
            (g for g in groups.values() if g.is_active and g.auto_priority is not None),
            key=lambda g: (g.auto_priority, g.name),
        )
    )
    return Table(groups, channels_by_group, auto_groups, loaded_at)


_SOURCES = (Group, Channel, ModelPrice)
for _model in _SOURCES:
    post_save.connect(changed, sender=_model, dispatch_uid=f"routing_table_save_{_model.__name__}")
    post_delete.connect(
        changed, sender=_model, dispatch_uid=f"routing_table_delete_{_model.__name__}"
    )
m2m_changed.connect(changed, sender=Channel.groups.through, dispatch_uid="routing_table_m2m")
