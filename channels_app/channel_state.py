"""A channel's state as the admin shows it: one word and a colour, with the reason in full.

Enabled is green only while the channel answers: an enabled channel whose circuit breaker is
open is "cooling down" (amber), and one whose last request or probe failed (its last_error is
set: every recorded success clears it) is "Failing" (red), until a request or a probe
succeeds. Disabled by hand is grey, disabled automatically red.
"""

import time
from dataclasses import dataclass

from django.utils import timezone
from django.utils.formats import date_format

from channels_app import breaker
from channels_app.models import Channel


@dataclass(frozen=True)
class State:
    label: str
    level: str  # a badge level: ok, warn, bad, off
    title: str  # the full reason, for a tooltip
    key: str  # enabled, failing, cooling, half_open, disabled, auto_disabled


def when(moment) -> str:
    return date_format(timezone.localtime(moment), "Y-m-d H:i:s") if moment else ""


def of(channel: Channel, states: dict | None = None, now: float | None = None) -> State:
    """The state of a Channel row (`states`: breaker.current(), read once per page)."""
    if channel.status == Channel.Status.DISABLED:
        return State("Disabled by hand", "off", channel.status_reason, "disabled")
    if channel.status == Channel.Status.AUTO_DISABLED:
        return State("Disabled automatically", "bad", channel.status_reason, "auto_disabled")
    now = time.time() if now is None else now
    state = (breaker.current() if states is None else states).get(channel.pk)
    status = breaker.CLOSED if state is None else state.status(now)
    if status == breaker.OPEN:
        text = breaker.describe(state, now, opened="cooling down")
        return State(text, "warn", text, "cooling")
    if status == breaker.HALF_OPEN:
        text = breaker.describe(state, now)
        return State(text, "warn", text, "half_open")
    if channel.last_error:
        at = when(channel.last_error_at)
        title = f"Last request or probe failed{f' at {at}' if at else ''}: {channel.last_error}"
        return State("Failing", "bad", title, "failing")
    return State("Enabled", "ok", "", "enabled")
