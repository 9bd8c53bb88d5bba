"""Probe channels with the smallest request they can answer; record status and latency.

Run it after adding a channel, or from cron: each probe writes last_error, last_latency_ms and
last_checked on the channel, which the admin shows. It exits non-zero when any channel fails.
"""

from django.core.management.base import BaseCommand, CommandError

from channels_app import health
from channels_app.models import Channel


class Command(BaseCommand):
    help = "Send a minimal chat completion to each enabled channel; print status and latency."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("--channel", help="Probe only this channel (even if disabled).")

    def handle(self, *args, channel=None, **options):
        if channel:
            channels = list(Channel.objects.filter(name=channel))
            if not channels:
                raise CommandError(f"No channel is named {channel!r}.")
        else:
            # Channels disabled automatically too: a good probe puts them back into routing.
            channels = list(
                Channel.objects.exclude(status=Channel.Status.DISABLED).order_by("name")
            )
        if not channels:
            self.stdout.write("Nothing to do: every channel is disabled by hand.")
            return
        failing = 0
        for ch in channels:
            result = health.probe(ch)
            status = result.status if result.status is not None else "-"
            line = (
                f"{ch.name}: {'OK' if result.ok else 'FAIL'} status={status} {result.latency_ms} ms"
            )
            if result.ok and ch.status == Channel.Status.AUTO_DISABLED:
                self.stdout.write(self.style.SUCCESS(f"{line} (enabled again)"))
            elif result.ok:
                self.stdout.write(self.style.SUCCESS(line))
            else:
                failing += 1
                self.stdout.write(self.style.ERROR(f"{line} {result.error}"))
        self.stdout.write(
            f"Done! Checked {len(channels)} channel(s): {len(channels) - failing} OK, "
            f"{failing} failing."
        )
        if failing:  # for cron and monitoring: a non-zero exit when any channel fails
            raise CommandError(f"{failing} of {len(channels)} channel(s) failing.")
