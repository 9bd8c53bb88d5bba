"""Show where a token's request for a model would go, without sending anything.

The operator's answer to "which channel will this key land on?": the ordered attempts, the
state of each channel's circuit breaker, and why each group and channel was left out. An
empty plan ends in a CommandError (a non-zero exit) after its explanation.
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.pricing import money
from channels_app import breaker, routing
from tokens.models import DISPLAY_PREFIX_LENGTH, Token


def token_by_key_or_prefix(value: str) -> Token:
    """A full key, or the start of one (its display prefix, e.g. sk-AbCd1234)."""
    tokens = Token.objects.select_related("owner", "group")
    if len(value) > DISPLAY_PREFIX_LENGTH:
        token = tokens.for_key(value).first()
        if token is None:
            raise CommandError("No token has this key.")
        return token
    matches = list(tokens.filter(key_prefix__startswith=value)[:5])
    if not matches:
        raise CommandError(f"No token key starts with {value!r}.")
    if len(matches) > 1:
        names = ", ".join(f"{t.key_prefix}... ({t.owner.username})" for t in matches)
        raise CommandError(f"{value!r} matches several tokens: {names}. Give more of the key.")
    return matches[0]


class Command(BaseCommand):
    help = "Print the ordered attempt plan (group, channel, rates) for a token and a model."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("--token", required=True, help="The key, or its prefix (sk-AbCd1234).")
        parser.add_argument("--model", required=True, help="The model name the client asks for.")
        parser.add_argument(
            "--endpoint",
            default="chat/completions",
            choices=ENDPOINTS,
            help="The client endpoint below /v1 (default chat/completions): channel kinds "
            "that cannot serve it are left out.",
        )

    def handle(self, *args, token, model, endpoint, **options):
        token = token_by_key_or_prefix(token)
        out = self.stdout
        out.write(
            f"Token {token.key_prefix}... of {token.owner.username}, routed by "
            f"{token.group_label}; model {model}; /v1/{endpoint}"
        )
        for problem in token_problems(token, model):
            out.write(self.style.WARNING(f"Note: {problem}"))

        breaker.refresh(wait=True)  # the shared breakers as they are now (with REDIS_URL)
        plan = routing.plan(token, model, endpoint=endpoint, explain=True)
        if not plan.attempts:
            out.write(self.style.ERROR(f"No attempt: nothing can serve {model} for this token."))
            if plan.no_group:
                answer = "403 group_not_allowed" if plan.closed else "404 model_not_found"
                out.write(f"  - {plan.no_group} Requests get {answer}.")
            for note in plan.notes or ([] if plan.no_group else ["nothing to try."]):
                out.write(f"  - {note}")
            # A non-zero exit, so scripts and CI see that this token cannot reach the model.
            raise CommandError(f"No attempt: nothing can serve {model} for this token.")

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
            out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        limit = settings.RELAY_MAX_ATTEMPTS
        out.write(
            f"A request makes at most {limit} of these attempts. Inside a priority tier the "
            "order is weighted random: this is one draw."
        )
        self.write_breakers(plan)
        if plan.notes:
            out.write("Left out:")
            for note in plan.notes:
                out.write(f"  - {note}")

    def write_breakers(self, plan):
        """The breaker of each channel listed, and of those left out because it is open."""
        out = self.stdout
        states, now = breaker.current(), time.time()
        where = "shared through Redis" if settings.REDIS_URL else "this process's own"
        out.write(f"Circuit breakers ({where}):")
        channels = [a.channel for a in plan.attempts] + plan.cooling
        width = max(len(ch.name) for ch in channels)
        for ch in channels:
            text = breaker.describe(states.get(ch.id), now)
            if ch in plan.cooling:
                text += ": left out"
            line = f"  {ch.name.ljust(width)}  {text}"
            out.write(line if text == breaker.CLOSED else self.style.WARNING(line))
        if not settings.REDIS_URL:
            out.write(
                "  (without REDIS_URL every server process keeps its own breakers: this "
                "command sees none of them)"
            )


ENDPOINTS = (
    "chat/completions",
    "completions",
    "embeddings",
    "messages",
    "messages/count_tokens",
    "responses",
)


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
