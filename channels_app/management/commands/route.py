"""Show where a token's request for a model would go, without sending anything.

The operator's answer to "which channel will this key land on?": the ordered attempts, the
state of each channel's circuit breaker, and why each group and channel was left out. An
empty plan ends in a CommandError (a non-zero exit) after its explanation. The report itself
is channels_app.route_report's, which the admin's routing preview shows too.
"""

from django.core.management.base import BaseCommand, CommandError

from channels_app import route_report
from channels_app.route_report import ENDPOINTS
from tokens.models import Token


def token_by_key_or_prefix(value: str) -> Token:
    """A full key, or the start of one (its display prefix, e.g. sk-AbCd1234)."""
    try:
        return route_report.find_token(value)
    except route_report.TokenNotFound as exc:
        raise CommandError(str(exc)) from None


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
        report = route_report.token_report(token_by_key_or_prefix(token), model, endpoint)
        styles = {route_report.WARNING: self.style.WARNING, route_report.ERROR: self.style.ERROR}
        for text, level in report.lines:
            self.stdout.write(styles[level](text) if level else text)
        if report.error:
            # A non-zero exit, so scripts and CI see that this token cannot reach the model.
            raise CommandError(report.error)
