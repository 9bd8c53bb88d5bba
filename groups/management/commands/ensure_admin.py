"""Make sure an admin account exists; `make run` calls it on every start.

The username comes from AIROUTER_ADMIN_USER (default "admin") and the password from
AIROUTER_ADMIN_PASSWORD. Without a password, a new admin gets a generated one, printed this
once; an existing admin keeps theirs.
"""

import os

from django.core.management.base import BaseCommand

from groups.provisioning import ensure_admin


class Command(BaseCommand):
    help = "Create the admin superuser from AIROUTER_ADMIN_USER / AIROUTER_ADMIN_PASSWORD."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def handle(self, *args, **options):
        username = os.environ.get("AIROUTER_ADMIN_USER") or "admin"
        result = ensure_admin(username, os.environ.get("AIROUTER_ADMIN_PASSWORD", ""))
        if result.created and result.password:
            # Shown whatever the verbosity: it is the only way to learn it.
            self.stdout.write(
                self.style.SUCCESS(f"Created admin '{username}' with password: {result.password}")
            )
            self.stdout.write("Write it down: it is not shown again.")
        elif options["verbosity"] < 1:
            return
        elif result.created:
            self.stdout.write(self.style.SUCCESS(f"Created admin '{username}'."))
        elif result.updated:
            self.stdout.write(self.style.SUCCESS(f"Updated admin '{username}'."))
        else:
            self.stdout.write(
                f"Admin '{username}' already exists "
                f"(forgot the password? manage.py changepassword {username})."
            )
