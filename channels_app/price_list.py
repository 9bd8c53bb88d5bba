"""What a user can reach and at what price: the one answer behind the key page's group details
and /pricing/.

For each group the user may use (their own and the active selectable ones): its description,
multiplier and whether its pricing is confirmed, and every model its usable channels serve
(enabled, key readable: what routing would try), with the price per 1M input, cached-input and
output tokens after the group's multiplier. A request is billed at the rates of the channel
that serves it (a per-model price overriding the channel's own), so a model's price is the one
of the channels routing tries first: the highest priority tier. When that tier's channels
price the model differently, the price is a range.

Read from the routing table (channels_app.routing_table), as the relay routes and bills; the
groups' own rows add the description and whether the pricing is confirmed (one query).
"""

from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace

from billing.pricing import money
from channels_app.routing import token_groups
from channels_app.routing_table import ChannelEntry, Table, get_table


@dataclass(frozen=True, slots=True)
class Price:
    """A price per 1M tokens, the multiplier applied: one amount, or the range of a tier."""

    low: Decimal
    high: Decimal

    @property
    def ranged(self) -> bool:
        return self.low != self.high

    def __str__(self) -> str:
        if self.ranged:
            return f"{money(self.low)}–{money(self.high)}"
        return money(self.low)


@dataclass(frozen=True, slots=True)
class ModelOffer:
    model: str
    input: Price
    cached_input: Price
    output: Price
    channels: int  # how many channels of the first tier serve it (more than one: failover)


@dataclass(frozen=True, slots=True)
class GroupOffer:
    name: str
    description: str
    multiplier: Decimal
    pricing_confirmed: bool
    own: bool  # the user's default group: routes their keys that name no group
    models: tuple  # ModelOffer, by model name

    @property
    def serves(self) -> bool:
        return bool(self.models)

    @property
    def model_names(self) -> list[str]:
        return [offer.model for offer in self.models]

    @property
    def multiplier_label(self) -> str:
        return f"×{money(self.multiplier)}"

    @property
    def offered(self) -> bool:
        """Whether the key form offers it: a group that serves nothing is left out, unless it
        is the user's own (their keys route there anyway; it is shown as serving nothing)."""
        return self.serves or self.own


def usable_channels(table: Table, group_id: int) -> list[ChannelEntry]:
    """The group's channels routing may try (ChannelEntry.usable)."""
    return [ch for ch in table.channels_by_group.get(group_id, ()) if ch.usable]


def _price(rates: list, field: str, multiplier: Decimal) -> Price:
    amounts = [getattr(r, field) * multiplier for r in rates]
    return Price(min(amounts), max(amounts))


def model_offers(channels: list[ChannelEntry], multiplier: Decimal) -> tuple:
    offers = []
    for model in sorted({m for ch in channels for m in ch.models}):
        serving = [ch for ch in channels if model in ch.models]
        top = max(ch.priority for ch in serving)
        rates = [ch.rates(model) for ch in serving if ch.priority == top]
        offers.append(
            ModelOffer(
                model,
                _price(rates, "input", multiplier),
                _price(rates, "cached_input", multiplier),
                _price(rates, "output", multiplier),
                len(rates),
            )
        )
    return tuple(offers)


def group_offers(user, *, table: Table | None = None) -> list[GroupOffer]:
    """Every group the user may use, their own first, then by name."""
    table = table or get_table()
    offers = []
    for group in user.usable_groups().order_by("name"):
        offers.append(
            GroupOffer(
                name=group.name,
                description=group.description,
                multiplier=group.multiplier,
                pricing_confirmed=group.pricing_confirmed,
                own=group.pk == user.group_id,
                models=model_offers(usable_channels(table, group.pk), group.multiplier),
            )
        )
    offers.sort(key=lambda offer: not offer.own)  # stable: the rest stay by name
    return offers


def auto_route(user, *, table: Table | None = None) -> list[str]:
    """The groups an `auto` key of this user tries, in order (names)."""
    table = table or get_table()
    return [g.name for g in token_groups(SimpleNamespace(owner=user, auto=True), table).entries]
