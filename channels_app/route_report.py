"""Where a token's request for a model would go, in words: the report `manage.py route` prints
and the admin's routing preview shows, line for line.

`token_report` for a real token (its own problems first: revoked, expired, a model it may not
ask for), `group_report` for "a token of this group" (a token without a group of its own,
owned by a user of the group). Each returns the lines with their level ("", "warning",
"error") and, for an empty plan, the error the command exits with. Nothing is sent.
"""

import time
from dataclasses import dataclass, field

from django.conf import settings

from billing.pricing import money
from channels_app import breaker, routing
from groups.models import Group, User
from tokens.models import DISPLAY_PREFIX_LENGTH, Token

ENDPOINTS = (
    "chat/completions",
    "completions",
    "embeddings",
    "messages",
    "messages/count_tokens",
    "responses",
)

WARNING, ERROR = "warning", "error"


class TokenNotFound(LookupError):
    """No token, or several, for the key or prefix given; the message says which."""


@dataclass
class Report:
    lines: list = field(default_factory=list)  # (text, level)
    error: str = ""  # an empty plan: why the command exits non-zero
    plan: routing.Plan | None = None

    def add(self, text: str, level: str = "") -> None:
        self.lines.append((text, level))

    @property
    def text(self) -> str:
        return "\n".join(text for text, _ in self.lines)


def find_token(value: str) -> Token:
    """A full key, or the start of one (its display prefix, e.g. sk-AbCd1234)."""
    tokens = Token.objects.select_related("owner__group", "group")
    if len(value) > DISPLAY_PREFIX_LENGTH:
        token = tokens.for_key(value).first()
        if token is None:
            raise TokenNotFound("No token has this key.")
        return token
    matches = list(tokens.filter(key_prefix__startswith=value)[:5])
    if not matches:
        raise TokenNotFound(f"No token key starts with {value!r}.")
    if len(matches) > 1:
        names = ", ".join(f"{t.key_prefix}... ({t.owner.username})" for t in matches)
        raise TokenNotFound(f"{value!r} matches several tokens: {names}. Give more of the key.")
    return matches[0]


def group_token(group: Group) -> Token:
    """An unsaved token of a user of `group`, routed by their default group: how any token of
    the group that names no other group routes."""
    owner = User(username=f"(a user of {group.name})", group=group, is_active=True)
    return Token(owner=owner, group=None, auto=False, key_prefix="")


def kind_label(channel) -> str:
    return channel.kind + ("+responses" if channel.responses_api else "")


def token_problems(token, model: str) -> list[str]:
    """What would stop the request before routing: the relay's own checks, in its order."""
    problems = []
    refusal = token.refusal()
    if refusal is not None:
        reason = refusal.reason.rstrip(".")
        problems.append(f"{reason}: requests get {refusal.status} {refusal.code}.")
    elif token.allowed_ips:
        problems.append(f"requests are accepted only from {token.allowed_ips}.")
    if not token.model_allowed(model):
        problems.append(f"{model} is not in the token's allowed models: requests get 403.")
    return problems


def token_report(token: Token, model: str, endpoint: str = "chat/completions") -> Report:
    report = Report()
    report.add(
        f"Token {token.key_prefix}... of {token.owner.username}, routed by "
        f"{token.group_label}; model {model}; /v1/{endpoint}"
    )
    for problem in token_problems(token, model):
        report.add(f"Note: {problem}", WARNING)
    return _plan(report, token, model, endpoint)


def group_report(group: Group, model: str, endpoint: str = "chat/completions") -> Report:
    report = Report()
    report.add(
        f"A token of group {group.name} (its owner's default group, no group of its own); "
        f"model {model}; /v1/{endpoint}"
    )
    return _plan(report, group_token(group), model, endpoint)


def _plan(report: Report, token, model: str, endpoint: str) -> Report:
    breaker.refresh(wait=True)  # the shared breakers as they are now (with REDIS_URL)
    plan = routing.plan(token, model, endpoint=endpoint, explain=True)
    report.plan = plan
    if not plan.attempts:
        report.add(f"No attempt: nothing can serve {model} for this token.", ERROR)
        if plan.no_group:
            answer = "403 group_not_allowed" if plan.closed else "404 model_not_found"
            report.add(f"  - {plan.no_group} Requests get {answer}.")
        for note in plan.notes or ([] if plan.no_group else ["nothing to try."]):
            report.add(f"  - {note}")
        report.error = f"No attempt: nothing can serve {model} for this token."
        return report

    header = (
        "#",
        "group",
        "channel",
        "kind",
        "priority",
        "weight",
        "input/1M",
        "cached/1M",
        "cache write/1M",
        "output/1M",
        "x",
    )
    rows = [
        (
            str(n),
            a.group.name,
            a.channel.name,
            kind_label(a.channel),
            str(a.channel.priority),
            str(a.channel.weight),
            money(a.rates.input),
            money(a.rates.cached_input),
            money(a.rates.cache_write),
            money(a.rates.output),
            money(a.multiplier),
        )
        for n, a in enumerate(plan.attempts, 1)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        report.add("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    limit = settings.RELAY_MAX_ATTEMPTS
    report.add(
        f"A request makes at most {limit} of these attempts. Inside a priority tier the "
        "order is weighted random: this is one draw."
    )
    _breakers(report, plan)
    if plan.notes:
        report.add("Left out:")
        for note in plan.notes:
            report.add(f"  - {note}")
    return report


def _breakers(report: Report, plan: routing.Plan) -> None:
    """The breaker of each channel listed, and of those left out because it is open."""
    states, now = breaker.current(), time.time()
    where = "shared through Redis" if settings.REDIS_URL else "this process's own"
    report.add(f"Circuit breakers ({where}):")
    channels = [a.channel for a in plan.attempts] + plan.cooling
    width = max(len(ch.name) for ch in channels)
    for ch in channels:
        text = breaker.describe(states.get(ch.id), now)
        if ch in plan.cooling:
            text += ": left out"
        line = f"  {ch.name.ljust(width)}  {text}"
        report.add(line, "" if text == breaker.CLOSED else WARNING)
    if not settings.REDIS_URL:
        report.add(
            "  (without REDIS_URL every server process keeps its own breakers: this "
            "command sees none of them)"
        )
