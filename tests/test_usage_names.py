"""Usage records keep the names of their user, group and channel (issue 10): written when the
record is written (the user) or settled (the group and channel that served), and shown by the
admin list and usage_report once the row behind the reference is deleted."""

import importlib
from io import StringIO

import openai
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from billing.models import UsageRecord
from billing.reports import usage_totals
from groups.models import Group
from tests.relay_setup import chat, routed, sdk


def test_a_record_keeps_its_names_after_the_rows_are_deleted(
    live_server, fake_upstream, admin_client
):
    token, key, channel = routed(fake_upstream, group="team-a", channel="openai-a")
    user = token.owner
    chat(sdk(live_server, key))
    record = UsageRecord.objects.get()
    assert (record.username, record.group_name, record.channel_name) == (
        user.username,
        "team-a",
        "openai-a",
    )
    assert record.status == "success" and record.cost > 0

    channel.delete()
    token.delete()
    user.delete()
    Group.objects.filter(name="team-a").delete()
    record.refresh_from_db()
    assert record.user_id is None and record.group_id is None and record.channel_id is None
    assert (record.username, record.group_name, record.channel_name) == (
        user.username,
        "team-a",
        "openai-a",
    )

    page = admin_client.get(reverse("admin:billing_usagerecord_changelist")).content.decode()
    for name in (user.username, "team-a", "openai-a"):
        assert f"{name} (deleted)" in page
    filtered = admin_client.get(
        reverse("admin:billing_usagerecord_changelist"), {"username": user.username}
    ).content.decode()
    assert "openai-a (deleted)" in filtered

    assert [row["key"] for row in usage_totals("channel")] == ["openai-a"]
    assert [row["key"] for row in usage_totals("group")] == ["team-a"]
    assert [row["key"] for row in usage_totals("user")] == [user.username]
    out = StringIO()
    call_command("usage_report", "--by", "channel", "--format", "csv", stdout=out)
    assert out.getvalue().splitlines()[1].startswith("openai-a,1,")


def test_a_failed_request_keeps_the_names_too(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream)
    fake_upstream.configure(status=500)
    with pytest.raises(openai.InternalServerError):
        chat(sdk(live_server, key))
    record = UsageRecord.objects.get()
    assert record.status == "upstream_error"
    assert record.username == token.owner.username
    # The attempt that failed is the one the record names.
    assert (record.group_name, record.channel_name) == ("pro", "ch-a")


def test_migration_0006_keeps_the_settle_trigger_on_sqlite(transactional_db):
    if connection.vendor != "sqlite":
        return  # PostgreSQL keeps its trigger through ALTER TABLE
    executor = MigrationExecutor(connection)
    executor.migrate([("billing", "0005_usage_overrun_and_correction")])
    executor = MigrationExecutor(connection)
    executor.migrate([("billing", "0006_usage_names")])
    # No post_migrate here (billing.apps would put the trigger back): the migration must.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
            ["billing_usagerecord"],
        )
        assert [row[0] for row in cursor.fetchall()] == ["billing_usagerecord_settle"]
    trigger = importlib.import_module("billing.migrations.0002_settle_trigger")
    assert "billing_usagerecord_settle" in trigger.SQLITE[0]
