"""Sum requests, tokens and cost per group, user, token, channel or model over a period.

For invoices and for checking a pricing change: `usage_report --since 2026-11-01 --by user
--format csv > november.csv`. Dates are UTC; --until includes the whole day it names.
"""

import csv
import json

from django.core.management.base import BaseCommand

from airouter.arguments import moment
from billing.pricing import money
from billing.reports import COLUMNS, DIMENSIONS, usage_totals


class Command(BaseCommand):
    help = "Report usage (requests, prompt/completion tokens, cost) grouped by one dimension."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("--since", help="ISO 8601 date or date-time, inclusive.")
        parser.add_argument("--until", help="ISO 8601 date (inclusive) or date-time (exclusive).")
        parser.add_argument("--by", choices=list(DIMENSIONS), default="group")
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def handle(self, *args, **options):
        rows = usage_totals(
            options["by"],
            since=moment(options["since"], "--since"),
            until=moment(options["until"], "--until", end_of_day=True),
        )
        getattr(self, f"write_{options['format']}")(rows, options["by"])

    def write_json(self, rows, by):
        data = [{by: row["key"], **{c: row[c] for c in COLUMNS[1:]}} for row in rows]
        self.stdout.write(json.dumps(data, indent=2, default=money))

    def write_csv(self, rows, by):
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow([by, *COLUMNS[1:]])
        for row in rows:
            writer.writerow([row["key"], *(row[c] for c in COLUMNS[1:-1]), money(row["cost"])])

    def write_table(self, rows, by):
        if not rows:
            self.stdout.write("No usage in this period.")
            return
        totals = {c: sum(row[c] for row in rows) for c in COLUMNS[1:]}
        lines = [
            [by, *(column.replace("_", " ") for column in COLUMNS[1:])],
            *([row["key"] or "(none)", *row_cells(row)] for row in rows),
            ["total", *row_cells(totals)],
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
        for line in lines:
            cells = [line[0].ljust(widths[0])]
            cells += [value.rjust(width) for value, width in zip(line[1:], widths[1:], strict=True)]
            self.stdout.write("  ".join(cells))


def row_cells(row: dict) -> list[str]:
    return [
        str(row["requests"]),
        str(row["prompt_tokens"]),
        str(row["cached_tokens"]),
        str(row["cache_write_tokens"]),
        str(row["completion_tokens"]),
        money(row["cost"]),
    ]
