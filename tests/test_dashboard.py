"""The admin index as a dashboard, read from hourly rollups (billing/rollups.py): the rollups
equal a direct sum of the records (late settles, deleted channels, exact money), a request
just sent shows at once, the channels needing attention, the command, and the page reading
no record older than the recent hours."""

import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing import rollups
from billing.models import RollupWatermark, UsageRecord, UsageRollup
from channels_app import breaker
from channels_app.models import Channel
from channels_app.provisioning import save_channel
from tests.factories import make_channel, make_group, make_token, make_user

pytestmark = pytest.mark.django_db

INDEX = "/admin/"


def hours_ago(n: float) -> datetime:
    return timezone.now() - timedelta(hours=n)


def record(created, *, group=None, channel=None, model="gpt-4o-mini", status="success", **kw):
    kw.setdefault("cost", Decimal("0.0000170000"))
    return UsageRecord.objects.create(
        request_id=kw.pop("request_id", "req"),
        requested_model=model,
        group=group,
        group_name=group.name if group else "",
        channel=channel,
        channel_name=channel.name if channel else "",
        status=status,
        created=created,
        **kw,
    )


def direct_sums() -> dict:
    """The records summed in Python, keyed as the rollups are."""
    sums = defaultdict(lambda: [0, 0, 0, 0, Decimal("0")])
    for r in UsageRecord.objects.select_related("group", "channel"):
        key = (
            rollups.hour_of(r.created),
            r.group.name if r.group else r.group_name,
            r.requested_model,
            r.channel.name if r.channel else r.channel_name,
        )
        row = sums[key]
        row[0] += 1
        row[1] += r.status not in ("success", "pending")
        row[2] += r.prompt_tokens
        row[3] += r.completion_tokens
        row[4] += r.cost
    return dict(sums)


def rolled_up() -> dict:
    return {
        (r.hour, r.group_name, r.model, r.channel_name): [
            r.requests,
            r.errors,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost,
        ]
        for r in UsageRollup.objects.all()
    }


def run(*args) -> str:
    out = StringIO()
    call_command("rollup_usage", *args, stdout=out)
    return out.getvalue()


def figure(html: str, window: str, name: str) -> str:
    section = re.search(rf'<section [^>]*id="dash-{window}".*?</section>', html, re.S).group(0)
    return re.search(rf'data-figure="{name}">([^<]*)<', section).group(1)


def table(html: str, window: str, by: str) -> str:
    return re.search(rf'<table [^>]*id="dash-{window}-{by}".*?</table>', html, re.S).group(0)


# --- the rollups -----------------------------------------------------------------------------


def test_rollups_equal_the_records_summed_with_late_settles_deleted_channels_and_exact_money(
    alice,
):
    pro = make_group("pro")
    kept = make_channel("ch-kept", groups=[pro])
    gone = make_channel("ch-gone", groups=[pro], model_names="claude-x")
    record(hours_ago(30), group=pro, channel=kept, prompt_tokens=5, completion_tokens=7)
    record(hours_ago(30), group=pro, channel=kept, cost=Decimal("1234.5678901234"))
    record(hours_ago(5), group=pro, channel=gone, model="claude-x", cost=Decimal("0.0000000001"))
    record(hours_ago(5), group=pro, channel=gone, model="claude-x", status="upstream_error", cost=0)
    record(hours_ago(0), group=None, channel=None, status="upstream_error", cost=Decimal("0"))
    late = record(hours_ago(3), user=alice, status="pending", cost=Decimal("0"))
    gone.delete()  # its records keep the name

    run()
    assert rolled_up() == direct_sums()
    # The in-flight request holds the watermark at its hour: that hour is summed again.
    assert RollupWatermark.objects.get().hour == rollups.hour_of(late.created)
    key = (rollups.hour_of(hours_ago(5)), "pro", "claude-x", "ch-gone")
    assert rolled_up()[key] == [2, 1, 0, 0, Decimal("0.0000000001")]
    dear = (rollups.hour_of(hours_ago(30)), "pro", "gpt-4o-mini", "ch-kept")
    assert rolled_up()[dear][4] == Decimal("1234.5679071234")

    # It settles hours later (an hour already rolled up): the next refresh counts it.
    UsageRecord.objects.filter(pk=late.pk).update(
        status="success",
        group=pro,
        group_name="pro",
        channel=kept,
        channel_name="ch-kept",
        prompt_tokens=100,
        completion_tokens=50,
        cost=Decimal("0.25"),
    )
    run()
    assert rolled_up() == direct_sums()
    hour = rollups.hour_of(late.created)
    assert rolled_up()[(hour, "pro", "gpt-4o-mini", "ch-kept")] == [1, 0, 100, 50, Decimal("0.25")]
    assert RollupWatermark.objects.get().hour == rollups.hour_of(timezone.now())


def test_the_command_builds_history_once_and_re_running_changes_nothing():
    pro = make_group("pro")
    channel = make_channel("ch-a", groups=[pro])
    for days in (20, 10, 2):
        record(timezone.now() - timedelta(days=days), group=pro, channel=channel)
    out = run()
    assert "Rolled up" in out and "Final before" in out
    first = rolled_up()
    assert sum(row[0] for row in first.values()) == 3
    assert run() and rolled_up() == first  # nothing new: the same rows
    # --since recomputes final hours too, to the same result.
    UsageRollup.objects.all().delete()
    run("--since", (timezone.now() - timedelta(days=25)).date().isoformat())
    assert rolled_up() == first == direct_sums()


def test_the_command_refuses_an_unreadable_date():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="give a date"):
        run("--since", "last tuesday")


# --- the page --------------------------------------------------------------------------------


def test_a_request_through_the_mock_channel_shows_on_the_dashboard_at_once(client, admin_client):
    pro = make_group("pro", pricing_confirmed=True)
    save_channel(
        "demo",
        kind=Channel.Kind.MOCK,
        models=["mock-1"],
        group_names=["pro"],
        input_price=Decimal("1"),
        output_price=Decimal("2"),
    )
    _, key = make_token(make_user("mia", group=pro, balance=Decimal("10")))
    html = admin_client.get(INDEX).content.decode()
    assert "No requests yet" in html
    assert figure(html, "day", "requests") == "0"

    answer = client.post(
        "/v1/chat/completions",
        json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "Say hello"}]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert answer.status_code == 200
    cost = UsageRecord.objects.get().cost
    assert cost > 0

    html = admin_client.get(INDEX).content.decode()
    assert "No requests yet" not in html
    for window in ("day", "month"):
        assert figure(html, window, "requests") == "1"
        assert figure(html, window, "errors") == "0"
        assert figure(html, window, "spend") == f"{cost.normalize():f}"
        assert ">demo</a>" in table(html, window, "channel")
        assert ">mock-1<" in table(html, window, "model")
        assert ">pro<" in table(html, window, "group")
    assert html.count('class="bar"') == 24 + 30  # an hourly and a daily chart
    assert 'class="spend-line"' in html
    # ...and the app list is still there, below.
    assert reverse("admin:billing_usagerecord_changelist") in html


def test_the_page_reads_no_record_older_than_the_recent_hours(admin_client):
    pro = make_group("pro")
    channel = make_channel("ch-a", groups=[pro])
    for days in range(30):
        record(timezone.now() - timedelta(days=days, hours=1), group=pro, channel=channel)
    # A request whose process died 3 days ago, never released: it holds the watermark back.
    record(timezone.now() - timedelta(days=3), status="pending")
    run()  # cron built the history
    assert RollupWatermark.objects.get().hour < timezone.now() - timedelta(days=2)
    bound = timezone.now() - rollups.RECENT - rollups.HOUR
    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(INDEX).content.decode()
    assert figure(html, "month", "requests") == "31"
    assert "may be incomplete" in html and "release_holds" in html
    reads_only_recent_records(queries, bound)


def reads_only_recent_records(queries, bound, probe=False):
    """Every query on the records table reads from `bound` on; with `probe`, one may instead
    ask whether any older record exists (one index entry, LIMIT 1: never built yet)."""
    touching = [q["sql"] for q in queries if "billing_usagerecord" in q["sql"]]
    if probe:
        older = [sql for sql in touching if re.match(r'SELECT 1 AS "a" .* LIMIT 1$', sql)]
        assert len(older) == 1, touching
        touching.remove(older[0])
    assert touching  # the recent hours are refreshed from the records...
    for sql in touching:  # ...and only they are read
        found = re.search(
            r'"billing_usagerecord"\."created" >= \'?(\d{4}-\d\d-\d\d[ T][\d:]+)', sql
        )
        assert found, sql
        since = datetime.fromisoformat(found.group(1)).replace(tzinfo=UTC)
        assert since >= bound, sql


def test_history_not_yet_rolled_up_is_pointed_out_and_the_command_brings_it_in(admin_client):
    pro = make_group("pro")
    channel = make_channel("ch-a", groups=[pro])
    record(timezone.now() - timedelta(days=3), group=pro, channel=channel)  # before the upgrade
    record(hours_ago(0), group=pro, channel=channel)
    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(INDEX).content.decode()
    reads_only_recent_records(queries, timezone.now() - rollups.RECENT - rollups.HOUR, probe=True)
    assert "run `manage.py rollup_usage` once" in html
    assert figure(html, "month", "requests") == "1"  # only the recent hours so far
    run()
    html = admin_client.get(INDEX).content.decode()
    assert "rollup_usage" not in html.split('id="content-main"')[0]
    assert figure(html, "month", "requests") == "2"
    assert figure(html, "day", "requests") == "1"


def test_staff_without_the_usage_permission_see_no_money(client, admin_client):
    pro = make_group("pro")
    record(hours_ago(0), group=pro, cost=Decimal("0.5"))
    staff = make_user("sam", is_staff=True)
    client.force_login(staff)
    html = client.get(INDEX).content.decode()
    assert figure(html, "day", "requests") == "1"
    assert 'data-figure="spend"' not in html and ">0.5<" not in html
    assert "spend 0.5" not in html  # nor in the chart's tooltips
    assert 'class="spend-line"' not in html
    assert "Channels needing attention" not in html  # nor the channels
    assert 'id="dash-day-channel"' not in html and 'id="dash-day-group"' in html
    staff.user_permissions.add(
        Permission.objects.get(codename="view_usagerecord"),
        Permission.objects.get(codename="view_channel"),
    )
    staff = type(staff).objects.get(pk=staff.pk)  # drop the permission cache
    client.force_login(staff)
    html = client.get(INDEX).content.decode()
    assert figure(html, "day", "spend") == "0.5"
    assert "Channels needing attention" in html
    assert 'id="dash-day-channel"' in html
    assert figure(admin_client.get(INDEX).content.decode(), "day", "spend") == "0.5"


@pytest.fixture
def breakers(settings):
    settings.REDIS_URL = ""
    settings.CHANNEL_FAILURE_THRESHOLD = 2
    settings.CHANNEL_COOLDOWN_SECONDS = 300.0
    breaker.reset()
    yield
    breaker.reset()


def test_channels_needing_attention_are_listed_with_why_and_a_link(admin_client, breakers):
    make_channel("healthy")
    make_channel("off-by-hand", status=Channel.Status.DISABLED, last_error="HTTP 500: old")
    refused = make_channel(
        "refused",
        status=Channel.Status.AUTO_DISABLED,
        status_reason="The upstream refused the channel's key: HTTP 401",
    )
    failing = make_channel(
        "failing", last_error="HTTP 502: bad gateway", last_error_at=timezone.now()
    )
    cooling = make_channel("cooling")
    for _ in range(2):
        breaker.record(cooling.pk, Channel.Outcome.FAILURE, "timed out")

    html = admin_client.get(INDEX).content.decode()
    section = re.search(r'id="dash-attention".*?</section>', html, re.S).group(0)
    rows = dict(re.findall(r'<a href="[^"]*/(\d+)/change/">([^<]+)</a>', section))
    assert rows == {str(c.pk): c.name for c in (cooling, failing, refused)}
    assert "Disabled automatically" in section and "refused the channel&#x27;s key" in section
    assert "Failing" in section and "HTTP 502: bad gateway" in section
    assert "Cooling down" in section and "2 failures: timed out" in section


def test_a_fresh_install_reads_well(admin_client):
    html = admin_client.get(INDEX).content.decode()
    assert "No requests yet" in html
    assert "None: every channel is enabled" in html
    assert figure(html, "month", "requests") == "0"
    assert "No requests." in table(html, "day", "group")
