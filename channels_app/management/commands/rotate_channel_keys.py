"""Re-encrypt every channel key with the newest CHANNEL_KEY_ENCRYPTION_KEYS entry.

To rotate: put a new Fernet key in front of the list, run this, then drop the old key. If
some key cannot be decrypted with any listed entry nothing is written.
"""

from django.core.management.base import BaseCommand, CommandError

from channels_app.keystore import KeyStoreError
from channels_app.provisioning import rotate_keys


class Command(BaseCommand):
    help = "Re-encrypt all channel keys with the first CHANNEL_KEY_ENCRYPTION_KEYS entry."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Check every key decrypts; write nothing."
        )

    def handle(self, *args, **options):
        try:
            count = rotate_keys(dry_run=options["dry_run"])
        except KeyStoreError as exc:
            raise CommandError(str(exc)) from None
        if options["verbosity"] < 1:
            return
        if not count:
            self.stdout.write("Nothing to do: no channel has a key.")
        elif options["dry_run"]:
            self.stdout.write(f"Dry run: {count} channel key(s) decrypt and would be re-encrypted.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Done! Re-encrypted {count} channel key(s)."))
