"""Channel selection: which (group, channel) attempts a request makes, in which order.

- A token routes through its group (or its owner's default group); an `auto` token walks the
  groups its owner may use that have an auto priority, in that order.
- Inside a group: enabled channels that list the model; highest priority tier first, weighted
  random order inside a tier. A channel is tried at most once per request, even when it serves
  several of the groups.
- An empty plan says why: `Plan.notes` names every group and channel left out and the reason.
"""

import random
from dataclasses import dataclass, field
from decimal import Decimal

from channels_app.models import Channel
from channels_app.routing_table import ChannelEntry, GroupEntry, Table, get_table


@dataclass(frozen=True, slots=True)
class Attempt:
    group: GroupEntry
    channel: ChannelEntry
    input_rate: Decimal
    output_rate: Decimal
    multiplier: Decimal


@dataclass(slots=True)
class Plan:
    model: str
    groups: list  # the GroupEntry list the token routes through, in order
    attempts: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # why groups/channels were left out
    unavailable: int = 0  # channels that serve the model but cannot be used now

    @property
    def group_label(self) -> str:
        return ", ".join(g.name for g in self.groups) or "(none)"


def token_groups(token, table: Table, notes: list | None = None) -> list[GroupEntry]:
    """The groups a token routes through, in the order they are tried."""
    owner = token.owner
    if token.auto:
        usable = [g for g in table.auto_groups if g.id == owner.group_id or g.user_selectable]
        if notes is not None:
            if not table.auto_groups:
                notes.append("auto: no active group has an auto priority.")
            for g in table.auto_groups:
                if g not in usable:
                    notes.append(
                        f"group {g.name}: skipped, user {owner.username} may not use it "
                        "(not their group and not selectable)."
                    )
        return usable
    group_id = token.group_id or owner.group_id
    group = table.groups.get(group_id)
    if group is None:
        return []
    if not group.is_active:
        if notes is not None:
            notes.append(f"group {group.name}: inactive.")
        return []
    return [group]


def _tier_order(channels: list[ChannelEntry], rng) -> list[ChannelEntry]:
    """Highest priority first; inside a tier, weighted random order without replacement."""
    if len(channels) == 1:
        return channels
    keyed = []
    for ch in channels:
        # Efraimidis-Spirakis: the k-th draw follows the weights of what is left.
        key = rng.random() ** (1.0 / ch.weight) if ch.weight > 0 else -1.0
        keyed.append((-ch.priority, -key, ch))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [ch for _, _, ch in keyed]


def plan(token, model: str, *, table: Table | None = None, rng=random, explain=False) -> Plan:
    """The ordered attempts for this token and model.

    With explain=True, Plan.notes also names what was left out and why (the `route` command);
    the hot path skips building those strings.
    """
    table = table or get_table()
    notes = [] if explain else None
    groups = token_groups(token, table, notes)
    result = Plan(model, groups, notes=notes if notes is not None else [])
    seen: set[int] = set()
    for group in groups:
        candidates = []
        for ch in table.channels_by_group.get(group.id, ()):
            if model not in ch.models:
                if explain:
                    notes.append(f"group {group.name}: channel {ch.name} does not list {model}.")
                continue
            if not ch.enabled or ch.key is None:
                result.unavailable += 1
                if explain:
                    why = (
                        "its key cannot be decrypted"
                        if ch.key is None
                        else Channel.Status(ch.status).label.lower()
                        + (f" ({ch.status_reason})" if ch.status_reason else "")
                    )
                    notes.append(f"group {group.name}: channel {ch.name} is not usable: {why}.")
                continue
            if ch.id in seen:
                if explain:
                    notes.append(f"group {group.name}: channel {ch.name} already planned earlier.")
                continue
            candidates.append(ch)
        if not candidates:
            if explain and not table.channels_by_group.get(group.id):
                notes.append(f"group {group.name}: has no channels.")
            elif explain:
                notes.append(f"group {group.name}: no usable channel serves {model}, skipped.")
            continue
        for ch in _tier_order(candidates, rng):
            seen.add(ch.id)
            input_rate, output_rate = ch.rates(model)
            result.attempts.append(Attempt(group, ch, input_rate, output_rate, group.multiplier))
    return result


def reachable_models(token, *, table: Table | None = None) -> list[str]:
    """Every model this token can be routed to now, narrowed by its allowed models."""
    table = table or get_table()
    models = set()
    for group in token_groups(token, table):
        for ch in table.channels_by_group.get(group.id, ()):
            if ch.enabled and ch.key is not None:
                models.update(ch.models)
    allow = token.model_allowlist
    if allow:
        models.intersection_update(allow)
    return sorted(models)
