"""Channel selection: which (group, channel) attempts a request makes, in which order.

- A token routes through its group (or its owner's default group); an `auto` token walks the
  groups its owner may use that have an auto priority, in that order. The owner may use their
  own group and the selectable ones, active only; a token pinned to a group its owner has lost
  (moved to another group, or the group closed or deactivated) routes nowhere and says why.
- Inside a group: enabled channels that list the model and whose kind can serve the client's
  endpoint (an anthropic channel serves no /v1/completions or /v1/embeddings); highest
  priority tier first, weighted random order inside a tier. A channel is tried at most once
  per request, even when it serves several of the groups.
- A channel whose circuit breaker is open (`channels_app.breaker`: it kept failing) is left
  out, unless every channel of the plan is open: then they are all tried, soonest reopening
  first. A half-open channel (its cooldown over) is tried first in its group by the one
  request that wins its probe, and left out of the others.
- An empty plan says why: `Plan.notes` names every group and channel left out and the reason.
"""

import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

from billing.pricing import Rates
from channels_app import breaker
from channels_app.models import Channel
from channels_app.routing_table import ChannelEntry, GroupEntry, Table, get_table
from channels_app.transports import serves


@dataclass(frozen=True, slots=True)
class Attempt:
    group: GroupEntry
    channel: ChannelEntry
    rates: Rates
    multiplier: Decimal


@dataclass(slots=True)
class Plan:
    model: str
    groups: list  # the GroupEntry list the token routes through, in order
    attempts: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # why groups/channels were left out
    unavailable: int = 0  # channels that serve the model but cannot be used now
    no_group: str = ""  # when the token has no group to route through: why, for the client
    closed: bool = False  # ...because its own group is closed to it (403 group_not_allowed)
    cooling: list = field(default_factory=list)  # ChannelEntries left out: their breaker is open

    @property
    def group_label(self) -> str:
        return ", ".join(g.name for g in self.groups)


@dataclass(frozen=True, slots=True)
class Groups:
    """The groups a token routes through; when there are none, why (and whether its own group
    is closed to it, rather than auto finding nothing)."""

    entries: list
    no_group: str = ""
    closed: bool = False


def token_groups(token, table: Table, notes: list | None = None) -> Groups:
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
        if usable:
            return Groups(usable)
        return Groups(
            [],
            "This API key routes by auto, but no active group with an auto priority is open "
            f"to user {owner.username}. Edit the token to pick a group, or ask an administrator "
            "to open one.",
        )
    group = table.groups.get(token.group_id or owner.group_id)
    if group is None:  # deleted since the table was read (both keys are PROTECTed)
        return Groups([], "This API key's group no longer exists. Edit the token.", True)
    if token.group_id:
        why = ""
        if not group.is_active:
            why = "it is inactive"
        elif group.id != owner.group_id and not group.user_selectable:
            why = f"user {owner.username} is not in it and it is not selectable"
        if why:
            return Groups(
                [],
                f"This API key is pinned to group '{group.name}', which is no longer available "
                f"to its owner ({why}). Edit the token to choose another group.",
                True,
            )
    elif not group.is_active:
        return Groups(
            [],
            f"This API key routes through its owner's group '{group.name}', which is inactive. "
            "Ask an administrator to reactivate it or to move the user to another group.",
            True,
        )
    return Groups([group])


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


def plan(
    token,
    model: str,
    *,
    endpoint: str = "chat/completions",
    table: Table | None = None,
    rng=random,
    explain=False,
    probe=True,
) -> Plan:
    """The ordered attempts for this token, model and client endpoint.

    With explain=True, Plan.notes also names what was left out and why (the `route` command);
    the hot path skips building those strings. Explaining takes no half-open probe's turn.
    """
    table = table or get_table()
    notes = [] if explain else None
    route = token_groups(token, table, notes)
    result = Plan(
        model,
        route.entries,
        notes=notes if notes is not None else [],
        no_group=route.no_group,
        closed=route.closed,
    )
    seen: set[int] = set()
    for group in route.entries:
        candidates = []
        for ch in table.channels_by_group.get(group.id, ()):
            if model not in ch.models:
                if explain:
                    notes.append(f"group {group.name}: channel {ch.name} does not list {model}.")
                continue
            if not serves(ch.kind, endpoint):
                if explain:
                    notes.append(
                        f"group {group.name}: channel {ch.name} is of kind {ch.kind}, which "
                        f"cannot serve /v1/{endpoint}."
                    )
                continue
            if not ch.usable:
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
            result.attempts.append(Attempt(group, ch, ch.rates(model), group.multiplier))
    states = breaker.current()
    if states and result.attempts:
        result.attempts, result.cooling = _breakers(
            result.attempts, states, result.notes if explain else None, probe
        )
    return result


def _breakers(
    attempts: list, states: dict, notes: list | None, probe: bool = True
) -> tuple[list, list]:
    """(the attempts without the channels whose breaker is open, the channels left out); a
    half-open channel goes first in its group if this request wins its probe (a request that
    says `probe=False`, such as a token count, never takes one). When every one is open: all of
    them, soonest reopening first."""
    now = time.time()
    kept, cooling = [], []
    probes_at = {}  # group id -> where its probes go in `kept`: before its first attempt
    for attempt in attempts:
        ch = attempt.channel
        group_id = attempt.group.id
        probes_at.setdefault(group_id, len(kept))
        state = states.get(ch.id)
        status = breaker.CLOSED if state is None else state.status(now)
        if status == breaker.CLOSED:
            kept.append(attempt)
            continue
        if status == breaker.HALF_OPEN and (
            notes is not None or (probe and breaker.grant_probe(ch.id))
        ):
            kept.insert(probes_at[group_id], attempt)  # (the plan's groups are contiguous)
            if notes is not None:
                notes.append(
                    f"group {attempt.group.name}: channel {ch.name} is half-open: the next "
                    "request tries it first in its group (a probe)."
                )
            continue
        cooling.append((state.until, attempt))
        if notes is not None:
            notes.append(
                f"group {attempt.group.name}: channel {ch.name} is left out, "
                f"{breaker.describe(state, now, opened='cooling down')}."
            )
    if kept or not cooling:
        return kept, [attempt.channel for _, attempt in cooling]
    if notes is not None:
        notes.append("Every channel is cooling down: all are tried, soonest reopening first.")
    cooling.sort(key=lambda item: item[0])
    return [attempt for _, attempt in cooling], []


def reachable_models(token, *, table: Table | None = None) -> list[str]:
    """Every model this token can be routed to now, narrowed by its allowed models."""
    table = table or get_table()
    models = set()
    for group in token_groups(token, table).entries:
        for ch in table.channels_by_group.get(group.id, ()):
            if ch.usable:
                models.update(ch.models)
    allow = token.model_allowlist
    if allow:
        models.intersection_update(allow)
    return sorted(models)
