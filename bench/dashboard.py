"""The admin dashboard at 10 million usage records: seed, build the rollups, time the page.

    .venv/bin/python bench/dashboard.py [--rows 10000000] [--keep]

Seeds N settled usage records (4 groups, 10 channels of 2 models each, 5% errors) spread
evenly over the last 30 days, in a database of its own: DATABASE_URL, by default
sqlite:////tmp/bench_dash.sqlite3; its name must contain "bench" (the records table is emptied
first). Bulk inserted: executemany on SQLite, COPY on PostgreSQL. Then times:

- `manage.py rollup_usage`'s first run (the whole history, hour by hour);
- `billing.dashboard.build()` (refresh of the recent hours + the rollup reads), median of 5;
- the admin index through Django's test client, median of 5;
- the worst case: a request left in flight 23 hours ago (its process died, `release_holds`
  not run) holds the watermark back, so each page refreshes 24 hours from the records.

It prints the figures; it asserts nothing.
"""

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "sqlite:////tmp/bench_dash.sqlite3")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airouter.settings")
os.environ.setdefault("AIROUTER_DEMO", "false")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from billing import dashboard, rollups  # noqa: E402
from billing.models import RollupWatermark, UsageRecord, UsageRollup  # noqa: E402
from channels_app.models import Channel  # noqa: E402
from groups.models import Group, User  # noqa: E402

GROUPS = ["default", "pro", "team-a", "team-b"]
MODELS = [f"model-{i}" for i in range(20)]
BATCH = 50_000
STATUSES = ["success"] * 19 + ["upstream_error"]


def setup_rows():
    groups = [Group.objects.get_or_create(name=name)[0] for name in GROUPS]
    channels = []
    for i in range(10):
        channel, _ = Channel.objects.get_or_create(
            name=f"bench-ch-{i}",
            defaults={
                "kind": Channel.Kind.MOCK,
                "base_url": "http://mock.invalid/v1",
                "model_names": f"{MODELS[2 * i]},{MODELS[2 * i + 1]}",
            },
        )
        channel.groups.set([groups[i % 4], groups[(i + 1) % 4]])
        channels.append(channel)
    return groups, channels


def records(n: int, groups, channels):
    """Tuples in COLUMNS order, oldest first, evenly over 30 days ending a minute ago."""
    end = datetime.now(UTC) - timedelta(minutes=1)
    start = end - timedelta(days=30)
    step = (end - start) / n
    for i in range(n):
        channel = channels[i % 10]
        group = groups[(i % 10 + (i // 10) % 2) % 4]
        model = MODELS[2 * (i % 10) + (i // 7) % 2]
        status = STATUSES[i % 20]
        prompt, completion = 100 + i % 900, 20 + i % 300
        cost = f"{(prompt * 1 + completion * 2) / 1_000_000:.10f}" if status == "success" else "0"
        yield (
            f"bench-{i}",
            group.pk,
            channel.pk,
            group.name,
            channel.name,
            model,
            prompt,
            completion,
            cost,
            status,
            start + step * i,
        )


COLUMNS = [
    "request_id",
    "group_id",
    "channel_id",
    "group_name",
    "channel_name",
    "requested_model",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "status",
    "created",
]
# The other NOT NULL columns, as the ORM would write them.
FIXED = {
    "username": "",
    "endpoint": "chat/completions",
    "upstream_model": "",
    "cached_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "input_rate": "1",
    "output_rate": "2",
    "cached_input_rate": "1",
    "cache_write_rate": "1",
    "multiplier": "1",
    "held": "0",
    "token_held": "0",
    "estimated": False,
    "usage_corrected": False,
    "overrun": "0",
    "stream": False,
    "error": "",
    "attempts": 1,
}


def seed(n: int, groups, channels) -> None:
    table = UsageRecord._meta.db_table
    names = COLUMNS + list(FIXED)
    fixed = tuple(FIXED.values())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")  # noqa: S608
        if connection.vendor == "postgresql":
            copy = f"COPY {table} ({', '.join(names)}) FROM STDIN"
            with cursor.cursor.copy(copy) as pipe:
                for row in records(n, groups, channels):
                    pipe.write_row(row + fixed)
            return
        marks = ", ".join(["%s"] * len(names))
        sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"  # noqa: S608
        batch = []
        for row in records(n, groups, channels):
            created = row[-1].strftime("%Y-%m-%d %H:%M:%S.%f")
            batch.append((*row[:-1], created, *fixed))
            if len(batch) == BATCH:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)


def median_seconds(fn, runs=5) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keep", action="store_true", help="Reuse the records already seeded.")
    args = parser.parse_args()
    name = str(connection.settings_dict["NAME"])
    if "bench" not in name:
        sys.exit(f"Refusing to empty the usage records of {name!r}: use a database named *bench*.")
    print(f"database: {connection.vendor} {name}")
    call_command("migrate", verbosity=0)
    groups, channels = setup_rows()

    if not args.keep:
        began = time.perf_counter()
        seed(args.rows, groups, channels)
        print(f"seeded {args.rows:,} records over 30 days: {time.perf_counter() - began:.1f} s")
    total = UsageRecord.objects.count()
    UsageRollup.objects.all().delete()
    RollupWatermark.objects.all().delete()

    began = time.perf_counter()
    call_command("rollup_usage", verbosity=0)
    built = time.perf_counter() - began
    print(
        f"rollup_usage, first run ({total:,} records -> {UsageRollup.objects.count():,} "
        f"rollup rows): {built:.1f} s"
    )
    began = time.perf_counter()
    call_command("rollup_usage", verbosity=0)
    print(f"rollup_usage, next run (from the watermark): {time.perf_counter() - began:.3f} s")

    admin = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser(
        "bench-admin", "bench@example.invalid", "bench-pw-1"
    )
    data = median_seconds(lambda: dashboard.build(admin))
    with CaptureQueriesContext(connection) as queries:
        dashboard.build(admin)
    print(f"dashboard.build(), median of 5: {data * 1000:.0f} ms, {len(queries)} queries")
    client = Client()
    client.force_login(admin)
    assert client.get("/admin/").status_code == 200
    page = median_seconds(lambda: client.get("/admin/"))
    print(f"admin index (test client), median of 5: {page * 1000:.0f} ms")

    # Worst case: a request in flight since 23 hours ago holds the watermark back.
    stuck = UsageRecord.objects.order_by("created").filter(
        created__gte=datetime.now(UTC) - timedelta(hours=23)
    )[:1]
    stuck_pk = stuck[0].pk
    UsageRecord.objects.filter(pk=stuck_pk).update(status="pending")  # pending -> trigger-free
    call_command(
        "rollup_usage", "--since", (datetime.now(UTC) - timedelta(days=1)).isoformat(), verbosity=0
    )
    print(f"  watermark held back to {rollups.watermark():%Y-%m-%d %H:00} UTC")
    worst = median_seconds(lambda: client.get("/admin/"), runs=3)
    print(
        "admin index, a request in flight 23 h ago (24 h refreshed per page): "
        f"{worst * 1000:.0f} ms"
    )
    UsageRecord.objects.filter(pk=stuck_pk).update(status="abandoned")


if __name__ == "__main__":
    main()
