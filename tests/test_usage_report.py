"""usage_report: totals per group/user/token/channel/model, in table, CSV and JSON."""

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import UsageRecord
from billing.reports import usage_totals
from tests.factories import make_channel, make_group, make_token, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage(alice):
    pro, free = make_group("pro"), make_group("free")
    bob = make_user("bob")
    fast, slow = make_channel("fast", groups=[pro]), make_channel("slow", groups=[free])
    alice_token, _ = make_token(alice, group_name="pro")
    bob_token, _ = make_token(bob, group_name="free")
    rows = [
        # user, token, group, channel, model, prompt, completion, cost, day
        (alice, alice_token, pro, fast, "gpt-4o", 100, 50, "0.30", 1),
        (alice, alice_token, pro, fast, "gpt-4o", 200, 10, "0.20", 2),
        (alice, alice_token, pro, fast, "gpt-4o-mini", 10, 5, "0.01", 3),
        (bob, bob_token, free, slow, "gpt-4o-mini", 1000, 500, "0.05", 3),
    ]
    for i, (user, token, group, channel, model, prompt, completion, cost, day) in enumerate(rows):
        UsageRecord.objects.create(
            request_id=f"req-{i}",
            user=user,
            token=token,
            group=group,
            channel=channel,
            requested_model=model,
            prompt_tokens=prompt,
            cached_tokens=prompt // 10 if model == "gpt-4o" else 0,  # 10 and 20
            cache_write_tokens=4 if i == 0 else 0,
            completion_tokens=completion,
            cost=Decimal(cost),
            created=datetime(2026, 11, day, 12, tzinfo=UTC),
        )
    return {"alice_token": alice_token, "bob_token": bob_token}


def report(*args) -> str:
    out = StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


def test_totals_by_group_in_one_query(usage, django_assert_num_queries):
    with django_assert_num_queries(1):
        rows = usage_totals("group")
    assert [
        (r["key"], r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rows
    ] == [
        ("pro", 3, 310, 65),
        ("free", 1, 1000, 500),
    ]
    assert rows[0]["cost"] == Decimal("0.51") and rows[1]["cost"] == Decimal("0.05")


def test_json_by_model(usage):
    data = json.loads(report("--by", "model", "--format", "json"))
    assert data == [
        {
            "model": "gpt-4o",
            "requests": 2,
            "prompt_tokens": 300,
            "cached_tokens": 30,
            "cache_write_tokens": 4,
            "completion_tokens": 60,
            "cost": "0.5",
        },
        {
            "model": "gpt-4o-mini",
            "requests": 2,
            "prompt_tokens": 1010,
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "completion_tokens": 505,
            "cost": "0.06",
        },
    ]


def test_csv_by_user_within_dates(usage):
    rows = list(
        csv.reader(
            StringIO(
                report(
                    "--by",
                    "user",
                    "--format",
                    "csv",
                    "--since",
                    "2026-11-02",
                    "--until",
                    "2026-11-02",
                )
            )
        )
    )
    assert rows == [
        [
            *("user", "requests", "prompt_tokens", "cached_tokens", "cache_write_tokens"),
            *("completion_tokens", "cost"),
        ],
        ["alice", "1", "200", "20", "0", "10", "0.2"],
    ]


def test_until_date_includes_that_whole_day_and_datetimes_are_exact(usage):
    by_day = json.loads(report("--by", "channel", "--format", "json", "--until", "2026-11-03"))
    assert sum(row["requests"] for row in by_day) == 4
    exact = json.loads(report("--format", "json", "--until", "2026-11-03T12:00:00Z"))
    assert sum(row["requests"] for row in exact) == 2


def test_table_by_token_has_a_total_line(usage):
    out = report("--by", "token")
    lines = out.splitlines()
    assert lines[0].split() == [
        *("token", "requests", "prompt", "tokens", "cached", "tokens", "cache", "write"),
        *("tokens", "completion", "tokens", "cost"),
    ]
    assert lines[1].split()[:2] == [usage["alice_token"].key_prefix, "3"]
    assert lines[-1].split() == ["total", "4", "1310", "30", "4", "565", "0.56"]


def test_deleted_channels_are_summed_under_none(usage):
    UsageRecord.objects.filter(channel__name="slow").update(channel=None)
    out = report("--by", "channel")
    assert "(none)" in out


def test_empty_period():
    assert report("--since", "2030-01-01").strip() == "No usage in this period."
    assert json.loads(report("--format", "json")) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "yesterday"], "--since: 'yesterday' is not an ISO 8601"),
        (["--until", "2026-13-01"], "--until: '2026-13-01' is not an ISO 8601"),
        (["--by", "planet"], "invalid choice: 'planet'"),
        (["--format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        report(*args)
