"""Settle what the database refused, then give back the holds of requests that never settled.

A request's hold is written as a pending usage record before anything is forwarded, and
settled when the request ends, however it ends. A settle the database refused is kept
(billing.spool) and replayed first, so it is billed, not refunded. Only a request whose process
died (killed, out of memory, a restart that outlived the graceful timeout) still leaves a hold
pending: this refunds those older than --older-than minutes, and never one younger than the
longest a request may run (its attempts' total timeouts, or a stream's maximum duration), since
that request may still be running. Run it from cron.
"""

import math
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from billing import spool
from billing.ledger import longest_request, release_stale_holds


class Command(BaseCommand):
    help = "Replay kept settles, then refund the holds of requests that never settled."
    requires_system_checks = []  # run from cron: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            metavar="MINUTES",
            help="Only holds taken at least this long ago (default and minimum: the longest a "
            "request may run, rounded up to a minute).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count, change nothing.")

    def handle(self, *args, **options):
        floor = math.ceil(longest_request() / 60)  # whole minutes
        minutes = options["older_than"] if options["older_than"] is not None else floor
        verbose = options["verbosity"] >= 1
        if minutes < floor:  # (a cron line written for an older default keeps working)
            if verbose:
                self.stderr.write(
                    self.style.WARNING(
                        f"--older-than {minutes}: a request may still be running after "
                        f"{floor} minutes (RELAY_MAX_STREAM_SECONDS, the channels' total "
                        f"timeouts): releasing only holds older than {floor} minutes."
                    )
                )
            minutes = floor
        if not options["dry_run"]:
            settled, remaining = spool.replay()
            if verbose and (settled or remaining):
                self.stdout.write(f"Settled {settled} kept settle(s); {remaining} still kept.")
            if remaining:
                raise CommandError(
                    f"{remaining} kept settle(s) could not be written (is the database up?): "
                    "nothing was released."
                )
        count = release_stale_holds(timedelta(minutes=minutes), dry_run=options["dry_run"])
        if not verbose:
            return
        if not count:
            self.stdout.write(f"Nothing to do: no hold older than {minutes} minutes.")
        elif options["dry_run"]:
            self.stdout.write(f"Would release {count} hold(s) older than {minutes} minutes.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Done! Released {count} stale hold(s)."))
