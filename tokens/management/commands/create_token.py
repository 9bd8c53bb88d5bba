"""Issue an API key for a user and print it, and only it, on stdout.

Made for scripts: KEY=$(manage.py create_token alice --group pro). The key is shown this once;
only its hash is stored. The one-line summary goes to stderr.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.timezone import now

from airouter.arguments import decimal_or_none, moment, name_list, validation_as_command_error
from groups.provisioning import CLEAR, add_limit_arguments, limit_options
from tokens.issuing import create_token


class Command(BaseCommand):
    help = "Create a token for USERNAME and print the new key (only the key) on stdout."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--group", help="A group the user may use, or 'auto'. Default: theirs.")
        parser.add_argument("--name", default="", help="A label for the token.")
        parser.add_argument("--spend-limit", help="Most this token may spend, a decimal.")
        parser.add_argument("--models", help="Comma-separated models it may call (default all).")
        parser.add_argument("--allow-ip", help="Comma-separated client IPs or CIDRs (default any).")
        parser.add_argument("--expires", help="ISO 8601 date or date-time (UTC if no offset).")
        add_limit_arguments(parser, "for this key, on top of its owner's")

    def handle(self, *args, **options):
        username = options["username"]
        owner = get_user_model().objects.select_related("group").filter(username=username).first()
        if owner is None:
            raise CommandError(f"No user named '{username}'.")
        expires_at = moment(options["expires"], "--expires")
        if expires_at is not None and expires_at <= now():
            raise CommandError(f"--expires: {options['expires']} is in the past.")
        with validation_as_command_error():
            limits = {
                field: None if value == CLEAR else value
                for field, value in limit_options(options).items()
            }
            token, key = create_token(
                owner,
                name=options["name"],
                group_name=options["group"],
                spend_limit=decimal_or_none(options["spend_limit"], "--spend-limit"),
                allowed_models=",".join(name_list(options["models"]) or []),
                allowed_ips=",".join(name_list(options["allow_ip"]) or []),
                expires_at=expires_at,
                **limits,
            )
        self.stdout.write(key)
        if options["verbosity"] >= 1:
            self.stderr.write(
                f"Created token {token.key_prefix}... for {owner.username}, "
                f"group {token.group_label}. The key is shown only this once.",
                style_func=self.style.SUCCESS,
            )
