"""Build and refresh the hourly usage rollups the admin dashboard reads (billing/rollups.py).

Run it from cron every few minutes, beside `release_holds`: each run recomputes the hours from
the watermark (the oldest hour still open or holding a request in flight) up to now, so a run is
cheap and running it twice is harmless. On an existing database (records from before the
rollups) the first run builds the whole history from the oldest record; `--since` rebuilds the
hours from a date on (after an upgrade, or to redo history).
"""

from datetime import datetime, time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from billing import rollups


def moment(text: str) -> datetime:
    """`2025-01-31` (local midnight) or `2025-01-31T14:00` (local time unless it says)."""
    value = parse_datetime(text)
    if value is None:
        day = parse_date(text)
        if day is None:
            raise ValueError(text)
        value = datetime.combine(day, time())
    return timezone.make_aware(value) if timezone.is_naive(value) else value


class Command(BaseCommand):
    help = (
        "Refresh the hourly usage rollups the admin dashboard reads, from the watermark up to "
        "now. The first run on a database with usage builds them from the oldest record; "
        "--since DATE rebuilds from DATE. Safe to re-run; run it from cron every few minutes."
    )
    requires_system_checks = []  # run from cron: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument(
            "--since",
            metavar="DATE",
            help="Recompute every hour from DATE (YYYY-MM-DD or an ISO date and time, local "
            "time) on, even hours already final.",
        )

    def handle(self, *args, **options):
        since = None
        if options["since"]:
            try:
                since = moment(options["since"])
            except ValueError:
                raise CommandError(
                    f"--since {options['since']!r}: give a date (2025-01-31) or a date and "
                    "time (2025-01-31T14:00)."
                ) from None
        done = rollups.refresh(since=since)
        if options["verbosity"] < 1:
            return
        start = timezone.localtime(done.start).strftime("%Y-%m-%d %H:00")
        mark = (
            timezone.localtime(done.watermark).strftime("%Y-%m-%d %H:00")
            if done.watermark
            else "not set (older records are not summed: run without --since)"
        )
        self.stdout.write(
            f"Rolled up {done.hours} hour(s) from {start}: {done.rows} row(s). Final before {mark}."
        )
