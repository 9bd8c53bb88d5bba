"""Give back the holds of requests that never settled.

A request's hold is written as a pending usage record before anything is forwarded, and
settled when the request ends, however it ends. Only a request that never settled leaves one
pending: its process died (killed, out of memory, a restart that outlived the graceful timeout)
or the database failed as it settled (logged at ERROR with the cost). Run this from cron: it
refunds holds older than --older-than minutes, which must exceed the longest request.
"""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from billing.ledger import release_stale_holds


class Command(BaseCommand):
    help = "Refund the holds of requests that never settled (their process died)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            default=60,
            metavar="MINUTES",
            help="Only holds taken at least this long ago (default 60; longer than any request).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count, change nothing.")

    def handle(self, *args, **options):
        minutes = options["older_than"]
        if minutes < 1:
            raise CommandError("--older-than must be at least 1 minute.")
        count = release_stale_holds(timedelta(minutes=minutes), dry_run=options["dry_run"])
        if options["verbosity"] < 1:
            return
        if not count:
            self.stdout.write(f"Nothing to do: no hold older than {minutes} minutes.")
        elif options["dry_run"]:
            self.stdout.write(f"Would release {count} hold(s) older than {minutes} minutes.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Done! Released {count} stale hold(s)."))
