"""Add credit to a user's balance (one atomic UPDATE: safe while requests draw on it)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from airouter.arguments import decimal_or_none
from billing.ledger import top_up
from billing.pricing import money


class Command(BaseCommand):
    help = "Add AMOUNT to USERNAME's balance."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("amount", help="A positive decimal, e.g. 25 or 9.99")

    def handle(self, *args, **options):
        amount = decimal_or_none(options["amount"], "AMOUNT")
        if amount <= 0:
            raise CommandError(f"AMOUNT must be positive, not {options['amount']}.")
        users = get_user_model().objects
        user = users.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named '{options['username']}'.")
        top_up(user.pk, amount)
        balance = users.values_list("balance", flat=True).get(pk=user.pk)
        if options["verbosity"] >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Topped up '{user.username}' by {money(amount)}; balance now {money(balance)}."
                )
            )
