"""Seed the demo into a fresh database and print a curl that works at once; `make run` calls it.

Why: without an upstream (a provider key) nothing can be routed or billed, so a newcomer could
only look at an empty admin. The demo is a built-in `mock` channel in the default group, credit
and an API key for the admin, and the curl (channels_app/demo.py says when it is seeded).
"""

import os

from django.core.management.base import BaseCommand
from django.db import connection

from airouter.arguments import validation_as_command_error
from channels_app import demo


class Command(BaseCommand):
    help = (
        "On a fresh database (no channel, no API key): a mock channel 'demo' in the default "
        "group, credit and a key for the admin, and a ready curl. AIROUTER_DEMO=false: never; "
        "unset: only on SQLite."
    )
    requires_system_checks = []  # like ensure_admin: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument(
            "--user",
            default=os.environ.get("AIROUTER_ADMIN_USER") or "admin",
            help="The account that gets the credit and the key (default: AIROUTER_ADMIN_USER, "
            "or admin).",
        )
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the router serves, for the curl (default http://127.0.0.1:8000).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say what it would do.")

    def handle(self, *args, **options):
        verbose = options["verbosity"] >= 1
        setting = os.environ.get("AIROUTER_DEMO")
        with validation_as_command_error():
            wanted = demo.wanted(setting, connection.vendor)
        if not wanted:
            if verbose and setting:
                self.stdout.write(f"Demo: off (AIROUTER_DEMO={setting}).")
            elif verbose:
                self.stdout.write(
                    f"Demo: off on {connection.vendor} (AIROUTER_DEMO=true seeds a fresh database)."
                )
            return
        if options["dry_run"]:
            fresh = demo.is_fresh()
            if verbose:
                self.stdout.write(
                    f"Would seed the demo for '{options['user']}'."
                    if fresh
                    else "Nothing to do: the database has channels or API keys already."
                )
            return
        with validation_as_command_error():
            seeded = demo.seed(options["user"])
        if seeded is None:
            if verbose:
                self.stdout.write("Demo: nothing to do, the database has channels or API keys.")
            return
        # Shown whatever the verbosity: the key is never shown again.
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo: channel '{demo.CHANNEL}' of kind mock (the router answers itself: no "
                "upstream, no provider key)\n"
                f"serves model {demo.MODEL} in group default at {demo.INPUT_PRICE} / "
                f"{demo.OUTPUT_PRICE} per 1M input / output tokens.\n"
                f"'{seeded.user.username}' has {demo.CREDIT} of credit and this API key, shown "
                "once:"
            )
        )
        self.stdout.write(f"  {seeded.key}")
        self.stdout.write(
            "Try it, then see it on the admin's dashboard (/admin/) and in Billing > Usage records:"
        )
        self.stdout.write(seeded.curl(options["base_url"]))
