"""Revoke a token by its key or the start of it, without the admin.

Idempotent: a token already revoked is left as it is and said to be ("already revoked").
"""

from django.core.management.base import BaseCommand

from channels_app.management.commands.route import token_by_key_or_prefix
from tokens.issuing import revoke
from tokens.models import Token


class Command(BaseCommand):
    help = "Revoke the token with this key, or whose key starts with this prefix (sk-AbCd1234)."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("key_or_prefix", help="The full key, or its prefix (sk-AbCd1234).")

    def handle(self, *args, key_or_prefix, **options):
        token = token_by_key_or_prefix(key_or_prefix)
        label = f"Token {token.key_prefix}... of {token.owner.username}"
        if token.name:
            label += f" ({token.name})"
        if revoke(Token.objects.filter(pk=token.pk)):
            summary = self.style.SUCCESS(f"Revoked {label}: requests with it now get 401.")
        else:
            summary = f"{label} is already revoked."
        if options["verbosity"] >= 1:
            self.stdout.write(summary)
