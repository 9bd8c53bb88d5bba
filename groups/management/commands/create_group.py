"""Create a routing group, or update one: scripts re-run it safely to converge on a config.

Options not given keep their current value on update; --no-selectable and
--no-pricing-confirmed switch those flags off, and a rate limit given as "none" is removed.
"""

import argparse

from django.core.management.base import BaseCommand

from airouter.arguments import decimal_or_none, int_or_none, validation_as_command_error
from groups.models import limits_label
from groups.provisioning import add_limit_arguments, limit_options, save_group


class Command(BaseCommand):
    help = (
        "Create or update a group (multiplier, auto priority, selectable, pricing confirmed, "
        "the default rate limits of its users)."
    )
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--multiplier", help="Billing multiplier, a decimal > 0 (default 1).")
        parser.add_argument(
            "--auto-priority", help="Order in which auto tokens try this group (lower first)."
        )
        parser.add_argument(
            "--selectable",
            action=argparse.BooleanOptionalAction,
            help="Users may point their tokens at this group.",
        )
        parser.add_argument(
            "--pricing-confirmed",
            action=argparse.BooleanOptionalAction,
            help="The rates and multiplier are final (silences the pricing TBD warnings).",
        )
        parser.add_argument("--description")
        add_limit_arguments(parser, "for each user of the group, by default")

    def handle(self, *args, **options):
        with validation_as_command_error():
            saved = save_group(
                options["name"],
                multiplier=decimal_or_none(options["multiplier"], "--multiplier"),
                auto_priority=int_or_none(options["auto_priority"], "--auto-priority"),
                user_selectable=options["selectable"],
                pricing_confirmed=options["pricing_confirmed"],
                description=options["description"],
                **limit_options(options),
            )
        group = saved.obj
        if saved.created:
            summary = f"Created group '{group.name}' (multiplier {group.multiplier})."
            if limits_label(group):
                summary += f" Default limits per user: {limits_label(group)}."
        elif saved.changed:
            summary = f"Updated group '{group.name}': {', '.join(saved.changed)}."
        else:
            summary = f"Group '{group.name}' already exists with these settings."
        if not group.pricing_confirmed:
            summary += " Pricing TBD: confirm it with --pricing-confirmed."
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(summary))
