"""What the admin's usage records list costs on a big table: the page with its totals (unfiltered,
by group, by a rare status) and the CSV export of a filter, timed over a seeded table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/usage_list.py --rows 10000000

Works on a scratch database `usage_list_bench` on that server (created, migrated, seeded with
`generate_series`, dropped at the end unless --keep). PostgreSQL only: the list is built for it.
Prints the figures; asserts nothing.
"""

import argparse
import os
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = "usage_list_bench"


def scratch_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        sys.exit("bench/usage_list.py needs DATABASE_URL=postgres://...")
    return urlunsplit(parts._replace(path=f"/{SCRATCH}"))


def admin_database(url: str, sql: str):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


SEED = """
INSERT INTO billing_usagerecord (
    request_id, user_id, group_id, channel_id, username, group_name, channel_name, endpoint,
    requested_model, upstream_model, prompt_tokens, completion_tokens, cached_tokens,
    cache_write_tokens, reasoning_tokens, input_rate, output_rate, cached_input_rate,
    cache_write_rate, multiplier, cost, held, token_held, estimated, usage_corrected, overrun,
    stream, status, status_code, error, attempts, latency_ms, created)
SELECT 'req-' || g, %(user)s,
    CASE WHEN g %% 10 = 0 THEN %(small)s ELSE %(big)s END,
    %(channel)s, 'bench', CASE WHEN g %% 10 = 0 THEN 'small' ELSE 'big' END, 'bench-ch',
    'chat/completions', CASE WHEN g %% 3 = 0 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END, 'gpt-4o',
    1000 + g %% 500, 100 + g %% 50, 0, 0, 0, 1.5, 6, 0, 0, 1,
    (1000 + g %% 500) * 0.0000015 + (100 + g %% 50) * 0.000006, 0, 0, false, false, 0,
    g %% 2 = 0,
    CASE WHEN g %% 100000 = 0 THEN 'stream_error' WHEN g %% 50 = 0 THEN 'upstream_error'
         ELSE 'success' END,
    200, '', 1, 500, now() - make_interval(secs => g * 0.3)
FROM generate_series(1, %(rows)s) AS g
"""


def timed(client, path, params, repeat=3):
    """The best of `repeat` GETs: (seconds, body); a streamed body is read chunk by chunk and
    only its size and line count kept, as a client saving it to disk would."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, params)
        assert response.status_code == 200, response.status_code
        if response.streaming:
            size = lines = 0
            for chunk in response.streaming_content:
                size, lines = size + len(chunk), lines + chunk.count(b"\n")
            body = (size, lines)
        else:
            body = response.content
        best = min(best, time.perf_counter() - started)
    return best, body


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "")
    url = scratch_url(server)
    admin_database(server, f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
    admin_database(server, f"CREATE DATABASE {SCRATCH}")
    os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="airouter.settings")
    os.environ.setdefault("AIROUTER_DEMO", "false")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from channels_app.models import Channel
    from groups.models import Group, User

    try:
        call_command("migrate", verbosity=0)
        root = User.objects.create_superuser("bench-root", password=None)
        big, small = Group.objects.create(name="big"), Group.objects.create(name="small")
        channel = Channel.objects.create(name="bench-ch", kind="mock", model_names="gpt-4o")
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                SEED,
                {
                    "user": root.pk,
                    "big": big.pk,
                    "small": small.pk,
                    "channel": channel.pk,
                    "rows": args.rows,
                },
            )
            cursor.execute("ANALYZE billing_usagerecord")
        print(f"seeded {args.rows:,} usage records in {time.perf_counter() - started:.0f} s")

        client = Client()
        client.force_login(root)
        week_ago = (timezone.now() - timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S+00:00")
        changelist = reverse("admin:billing_usagerecord_changelist")
        export = reverse("admin:billing_usagerecord_export")
        cases = [
            ("list, no filter", {}),
            ("list, group 'small' (10% of rows)", {"group__id__exact": small.pk}),
            ("list, status stream_error (0.001%)", {"status__exact": "stream_error"}),
            ("list, model gpt-4o, past 7 days", {"model": "gpt-4o", "created__gte": week_ago}),
        ]
        for name, params in cases:
            seconds, body = timed(client, changelist, params)
            shown = "latest" if b"Totals of the latest" in body else "all matching"
            print(f"{name:40s} {seconds * 1000:8.0f} ms  (totals over {shown})")

        exports = [
            ("CSV, status upstream_error (2%)", {"status__exact": "upstream_error"}),
            ("CSV, group 'small' (10%)", {"group__id__exact": small.pk}),
        ]
        for name, params in exports:
            peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            seconds, (size, lines) = timed(client, export, params, repeat=1)
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
            print(
                f"{name:40s} {lines - 1:,} rows in {seconds:.1f} s = "
                f"{(lines - 1) / seconds:,.0f} rows/s, {size / 1e6:.0f} MB of CSV, "
                f"peak memory grew {grown / 1024:.0f} MB"
            )
    finally:
        connection.close()
        if not args.keep:
            admin_database(server, f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")


if __name__ == "__main__":
    main()
