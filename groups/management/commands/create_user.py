"""Create an API user, or update one's default group, balance or email.

API users get no password: they call /v1 with tokens. An operator can set a password in the
admin if they should sign in to the key page.
"""

from django.core.management.base import BaseCommand

from airouter.arguments import decimal_or_none, validation_as_command_error
from groups.provisioning import save_user


class Command(BaseCommand):
    help = "Create or update an API user (default group, balance, email)."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--group", help="Default group name (new users: 'default').")
        parser.add_argument("--balance", help="Set the balance to this amount.")
        parser.add_argument("--email")

    def handle(self, *args, **options):
        with validation_as_command_error():
            saved = save_user(
                options["username"],
                group_name=options["group"],
                balance=decimal_or_none(options["balance"], "--balance"),
                email=options["email"],
            )
        user = saved.obj
        if saved.created:
            summary = (
                f"Created user '{user.username}' in group '{user.group.name}', "
                f"balance {user.balance}."
            )
        elif saved.changed:
            summary = f"Updated user '{user.username}': {', '.join(saved.changed)}."
        else:
            summary = f"User '{user.username}' already exists with these settings."
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(summary))
