"""The usage records list (issue 10): the totals of the current filter above the list, and the
CSV export of the same filter (streamed, view permission, no secret, no spreadsheet formula)."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.admin import CappedCountPaginator
from billing.models import UsageRecord
from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_token, make_user

pytestmark = pytest.mark.django_db

LIST = "admin:billing_usagerecord_changelist"
EXPORT = "admin:billing_usagerecord_export"
T0 = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def world(alice):
    """Two groups, two channels, alice's key; six records of several statuses and costs."""
    pro, team = make_group("pro"), make_group("team")
    up_pro = make_channel("up-pro", groups=[pro], key="sk-upstream-pro-secret")
    up_team = make_channel("up-team", groups=[team], key="sk-upstream-team-secret")
    token, key = make_token(alice, group_name="pro")
    rows = [
        # group, channel, status, prompt, cached, completion, cost
        (pro, up_pro, "success", 1000, 200, 50, "0.0000015000"),
        (pro, up_pro, "success", 2000, 0, 70, "0.0123456789"),
        (pro, up_pro, "upstream_error", 300, 0, 0, "0"),
        (team, up_team, "success", 4000, 1000, 90, "1.2500000001"),
        (team, up_team, "client_disconnected", 500, 0, 5, "0.0000000007"),
        (team, up_team, "success", 600, 0, 6, "3"),
    ]
    records = [
        UsageRecord.objects.create(
            request_id=f"req-{i}",
            user=alice,
            token=token,
            group=group,
            channel=channel,
            username=alice.username,
            group_name=group.name,
            channel_name=channel.name,
            requested_model="gpt-4o",
            upstream_model="gpt-4o-2024-08-06",
            prompt_tokens=prompt,
            cached_tokens=cached,
            completion_tokens=completion,
            input_rate=Decimal("1.5"),
            output_rate=Decimal("6"),
            multiplier=Decimal("1.25"),
            cost=Decimal(cost),
            status=status,
            status_code=200 if status == "success" else 502,
            latency_ms=1234,
            created=T0 + timedelta(minutes=i),
        )
        for i, (group, channel, status, prompt, cached, completion, cost) in enumerate(rows)
    ]
    return {"pro": pro, "team": team, "records": records, "key": key, "token": token}


def totals_on_page(html: str) -> dict:
    """The figures of the totals block, by their label."""
    block = re.search(r'<section class="usage-totals".*?</section>', html, re.S).group(0)
    pairs = re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", block)
    return {label: value for label, value in pairs} | {"text": block}


def expected(records) -> dict:
    prompt = sum(r.prompt_tokens for r in records)
    cached = sum(r.cached_tokens for r in records)
    return {
        "requests": f"{len(records):,}",
        "prompt tokens": f"{prompt:,}" + (f" (cached {cached:,})" if cached else ""),
        "completion tokens": f"{sum(r.completion_tokens for r in records):,}",
        "cost": f"{sum(r.cost for r in records).normalize():f}",
    }


def test_the_totals_are_those_of_the_filtered_records(admin_client, world):
    records = world["records"]
    cases = [
        ({}, records),
        ({"group__id__exact": world["pro"].pk}, [r for r in records if r.group == world["pro"]]),
        ({"status__exact": "success"}, [r for r in records if r.status == "success"]),
        (
            {"group__id__exact": world["team"].pk, "status__exact": "success"},
            [r for r in records if r.group == world["team"] and r.status == "success"],
        ),
    ]
    for params, matching in cases:
        html = admin_client.get(reverse(LIST), params).content.decode()
        shown = totals_on_page(html)
        assert {k: v for k, v in shown.items() if k != "text"} == expected(matching), params
        assert f"Totals of the {len(matching)} record" in shown["text"]
        assert "latest" not in shown["text"]
    # Group "team", successes: 4,000 + 600 prompt tokens; 1.2500000001 + 3.
    team_ok = totals_on_page(
        admin_client.get(
            reverse(LIST), {"group__id__exact": world["team"].pk, "status__exact": "success"}
        ).content.decode()
    )
    assert team_ok["prompt tokens"] == "4,600 (cached 1,000)"
    assert team_ok["cost"] == "4.2500000001"


def test_a_cost_of_a_millionth_never_reads_zero(admin_client, world):
    html = admin_client.get(reverse(LIST), {"q": "req-0"}).content.decode()
    assert ">0.0000015<" in html  # the list's cost cell
    assert totals_on_page(html)["cost"] == "0.0000015"


def test_past_the_cap_the_totals_cover_the_latest_records_and_say_so(admin_client, alice):
    cap = CappedCountPaginator.CAP
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"r{i}",
            user=alice,
            requested_model="m",
            prompt_tokens=1 if i < cap else 1000,  # the oldest rows are past the cap
            completion_tokens=2,
            cost=Decimal("0.001"),
            created=T0 - timedelta(seconds=i),
        )
        for i in range(cap + 5)
    )
    shown = totals_on_page(admin_client.get(reverse(LIST)).content.decode())
    assert "Totals of the latest 10,000 records" in " ".join(shown["text"].split())
    assert shown["requests"] == "10,000"
    assert shown["prompt tokens"] == "10,000"
    assert shown["completion tokens"] == "20,000"
    assert shown["cost"] == "10"


def test_the_export_link_keeps_the_filter_search_and_ordering(admin_client, world):
    params = {"group__id__exact": str(world["pro"].pk), "o": "-6", "q": "req-1", "p": "0"}
    html = admin_client.get(reverse(LIST), params).content.decode()
    href = re.search(r'<a href="([^"]+)"[^>]*>Export CSV</a>', html).group(1)
    path, _, query = href.replace("&amp;", "&").partition("?")
    assert path == reverse(EXPORT)
    assert dict(pair.split("=") for pair in query.split("&")) == {
        "group__id__exact": str(world["pro"].pk),
        "o": "-6",
        "q": "req-1",
    }


def read_csv(response) -> list[dict]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_holds_exactly_the_filtered_records(admin_client, world):
    rows = read_csv(
        admin_client.get(
            reverse(EXPORT), {"group__id__exact": world["team"].pk, "o": "6"}
        )  # ordered by cost, ascending
    )
    assert [row["request_id"] for row in rows] == ["req-4", "req-3", "req-5"]
    assert [row["cost"] for row in rows] == ["0.0000000007", "1.2500000001", "3"]
    first = rows[0]
    assert list(first) == [
        "created",
        "request_id",
        "user",
        "token",
        "group",
        "channel",
        "endpoint",
        "requested_model",
        "upstream_model",
        "prompt_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "input_rate",
        "cached_input_rate",
        "cache_write_rate",
        "output_rate",
        "multiplier",
        "cost",
        "status",
        "status_code",
        "latency_ms",
        "stream",
        "estimated",
    ]
    assert first["created"] == "2026-11-05T12:04:00+00:00"
    assert (first["user"], first["group"], first["channel"]) == ("alice", "team", "up-team")
    assert first["token"] == f"{world['token'].key_prefix}..."
    assert (first["input_rate"], first["output_rate"], first["multiplier"]) == ("1.5", "6", "1.25")
    assert (first["status"], first["status_code"], first["latency_ms"]) == (
        "client_disconnected",
        "502",
        "1234",
    )
    # The whole filter, not the page shown; a search narrows it like the list.
    assert len(read_csv(admin_client.get(reverse(EXPORT), {"p": "1"}))) == 6
    searched = read_csv(admin_client.get(reverse(EXPORT), {"q": "req-2"}))
    assert [row["request_id"] for row in searched] == ["req-2"]
    assert read_csv(admin_client.get(reverse(EXPORT), {"status__exact": "pending"})) == []


def test_the_csv_names_a_deleted_channel_and_carries_no_secret(admin_client, world):
    Channel.objects.get(name="up-team").delete()
    rows = read_csv(admin_client.get(reverse(EXPORT), {"group__id__exact": world["team"].pk}))
    assert {row["channel"] for row in rows} == {"up-team"}
    text = "\n".join(",".join(row.values()) for row in rows)
    for secret in (world["key"], "sk-upstream-team-secret", "sk-upstream-pro-secret"):
        assert secret not in text


def test_a_formula_looking_name_is_neutralized(admin_client, world, alice):
    for i, model in enumerate(['=HYPERLINK("http://evil","x")', "+1", "-2+3", "@SUM(A1)"]):
        UsageRecord.objects.create(
            request_id=f"evil-{i}", user=alice, requested_model=model, created=T0
        )
    rows = read_csv(admin_client.get(reverse(EXPORT), {"model": "+1"}))
    assert [row["requested_model"] for row in rows] == ["'+1"]
    models = {row["requested_model"] for row in read_csv(admin_client.get(reverse(EXPORT)))}
    assert {'\'=HYPERLINK("http://evil","x")', "'-2+3", "'@SUM(A1)", "gpt-4o"} <= models
    assert not any(m.startswith(("=", "+", "-", "@")) for m in models)


def test_the_export_needs_the_view_permission(client, world):
    staff = make_user("operator", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse(EXPORT)).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    assert len(read_csv(client.get(reverse(EXPORT)))) == 6

    client.force_login(make_user("mallory"))  # an API user, not staff
    response = client.get(reverse(EXPORT))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_filter_that_does_not_apply_is_a_400_not_a_500(admin_client, world):
    response = admin_client.get(reverse(EXPORT), {"no_such_field": "1"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    "query", [{"model": "gpt\x00"}, {"username": "\x00"}, {"endpoint": "no/such"}]
)
def test_a_filter_value_no_record_can_hold_is_refused_not_a_500(admin_client, world, query):
    """PostgreSQL refuses a NUL in text; an endpoint the relay does not serve matches nothing."""
    response = admin_client.get(reverse(LIST), query)
    assert response.status_code == 302 and response["Location"].endswith("?e=1")
    assert admin_client.get(reverse(EXPORT), query).status_code == 400


def test_the_endpoint_filter_lists_the_relay_endpoints_without_reading_the_table(
    admin_client, world, alice
):
    UsageRecord.objects.create(
        request_id="emb", user=alice, endpoint="embeddings", requested_model="e", created=T0
    )
    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(reverse(LIST)).content.decode()
    assert not [q["sql"] for q in queries if "DISTINCT" in q["sql"].upper()]
    for endpoint in ("chat/completions", "completions", "embeddings", "messages", "responses"):
        assert f"?endpoint={endpoint.replace('/', '%2F')}" in html
    html = admin_client.get(reverse(LIST), {"endpoint": "embeddings"}).content.decode()
    assert totals_on_page(html)["requests"] == "1"
    rows = read_csv(admin_client.get(reverse(EXPORT), {"endpoint": "embeddings"}))
    assert [row["request_id"] for row in rows] == ["emb"]
