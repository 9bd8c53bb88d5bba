"""Create an API user, or update one's default group, balance, email or rate limits.

API users get no password: they call /v1 with tokens. An operator can set a password in the
admin if they should sign in to the key page.
"""

from django.core.management.base import BaseCommand

from airouter.arguments import decimal_or_none, validation_as_command_error
from billing.pricing import money
from groups.models import limits_label
from groups.provisioning import add_limit_arguments, limit_options, save_user


class Command(BaseCommand):
    help = "Create or update an API user (default group, balance, email, rate limits)."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--group", help="Default group name (new users: 'default').")
        parser.add_argument("--balance", help="Set the balance to this amount.")
        parser.add_argument("--email")
        add_limit_arguments(parser, "for the user, over their group's default")

    def handle(self, *args, **options):
        with validation_as_command_error():
            saved = save_user(
                options["username"],
                group_name=options["group"],
                balance=decimal_or_none(options["balance"], "--balance"),
                email=options["email"],
                **limit_options(options),
            )
        user = saved.obj
        if saved.created:
            summary = (
                f"Created user '{user.username}' in group '{user.group.name}', "
                f"balance {money(user.balance)}."
            )
            if limits_label(user):
                summary += f" Limits: {limits_label(user)}."
        elif saved.changed:
            summary = f"Updated user '{user.username}': {', '.join(saved.changed)}."
        else:
            summary = f"User '{user.username}' already exists with these settings."
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(summary))
