"""Enable or disable a channel by hand, without the admin.

--disable takes the channel out of routing until someone enables it (check_channels leaves a
channel disabled by hand alone); --enable puts it back, also one disabled automatically.
Re-running with the status the channel already has changes nothing.
"""

from django.core.management.base import BaseCommand, CommandError

from channels_app.models import Channel
from channels_app.provisioning import disable, enable


class Command(BaseCommand):
    help = "Enable or disable the channel NAME (--disable takes an optional --reason)."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("name")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--enable", action="store_true", help="Put it back into routing.")
        action.add_argument("--disable", action="store_true", help="Take it out of routing.")
        parser.add_argument(
            "--reason", help="With --disable: why (shown in the admin and by `route`)."
        )

    def handle(self, *args, name, **options):
        if options["reason"] is not None and not options["disable"]:
            raise CommandError("--reason goes with --disable.")
        channels = Channel.objects.filter(name=name)
        if not channels.exists():
            raise CommandError(f"No channel is named {name!r}.")
        if options["enable"]:
            changed = enable(channels)
            done, state = "Enabled", "enabled"
        else:
            reason = (options["reason"] or "").strip()
            changed = disable(channels, reason) if reason else disable(channels)
            done, state = "Disabled", "disabled"
        if options["verbosity"] < 1:
            return
        if changed:
            self.stdout.write(self.style.SUCCESS(f"{done} channel '{name}'."))
        else:
            self.stdout.write(f"Channel '{name}' is already {state}; nothing changed.")
