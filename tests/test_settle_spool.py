"""A request served while the database refuses to settle is billed once the database is back:
its settle is kept (Redis or a file) and replayed by its process or by release_holds."""

import uuid
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils.timezone import now

from billing import spool
from billing.models import UsageRecord
from tests.relay_setup import chat, routed, sdk

pytestmark = pytest.mark.django_db(transaction=True)

REFUSE = {
    "sqlite": [
        "CREATE TRIGGER test_refuse_settle BEFORE UPDATE OF status ON billing_usagerecord "
        "BEGIN SELECT RAISE(ABORT, 'the database refuses'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION test_refuse_settle() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'the database refuses' USING ERRCODE = '57P03'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER test_refuse_settle BEFORE UPDATE ON billing_usagerecord "
        "FOR EACH ROW EXECUTE FUNCTION test_refuse_settle()",
    ],
}
ALLOW = {
    "sqlite": ["DROP TRIGGER IF EXISTS test_refuse_settle"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS test_refuse_settle ON billing_usagerecord",
        "DROP FUNCTION IF EXISTS test_refuse_settle()",
    ],
}


def database(statements):
    with connection.cursor() as cursor:
        for sql in statements[connection.vendor]:
            cursor.execute(sql)


@pytest.fixture
def refusing_database(settings, tmp_path, monkeypatch):
    """The database refuses every settle until `allow()` is called; the spool is the test's."""
    settings.SETTLE_SPOOL_DIR = str(tmp_path / "spool")
    monkeypatch.setattr(spool, "RETRY_EVERY", 3600.0)  # the test replays, not the thread
    monkeypatch.setattr(spool, "KEY", f"test:settle-spool:{uuid.uuid4().hex}")
    database(REFUSE)
    yield lambda: database(ALLOW)
    database(ALLOW)


@pytest.mark.parametrize("shared", [False, True], ids=["file", "redis"])
def test_a_refused_settle_is_kept_and_billed_by_release_holds(
    live_server, fake_upstream, refusing_database, settings, shared
):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0" if shared else ""
    token, key, _ = routed(fake_upstream)
    completion = chat(sdk(live_server, key))  # served although the settle fails
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    record = UsageRecord.objects.get()
    assert record.status == "pending"
    held = record.held
    kept_on_disk = list(Path(settings.SETTLE_SPOOL_DIR).glob("*.jsonl"))
    assert bool(kept_on_disk) is not shared  # on disk without Redis, in Redis with it

    with pytest.raises(CommandError, match="1 kept settle"):  # still refused: nothing released
        call_command("release_holds", stdout=StringIO())

    refusing_database()  # the database is back
    out = StringIO()
    call_command("release_holds", stdout=out)
    assert "Settled 1 kept settle(s); 0 still kept." in out.getvalue()
    record.refresh_from_db()
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("success", 12, 5)
    assert record.cost == Decimal("0.000022")  # (12 x 1 + 5 x 2) / 1M
    token.owner.refresh_from_db()
    assert token.owner.balance == Decimal("100") - record.cost  # the hold replaced by the cost
    assert held > record.cost
    call_command("release_holds", stdout=out)  # replaying again moves nothing
    token.owner.refresh_from_db()
    assert token.owner.balance == Decimal("100") - record.cost


def test_release_holds_never_releases_a_request_that_may_still_run(alice, settings):
    from billing.ledger import reserve
    from tests.factories import make_token

    settings.RELAY_MAX_STREAM_SECONDS = 3600
    token, _ = make_token(alice)
    hold = reserve(token, Decimal("5"), request_id="r", endpoint="e", model="m", stream=False)
    forty_minutes_ago = now() - timedelta(minutes=40)
    UsageRecord.objects.filter(pk=hold.record_id).update(created=forty_minutes_ago)
    err = StringIO()
    call_command("release_holds", "--older-than", "30", stdout=StringIO(), stderr=err)
    assert "releasing only holds older than 61 minutes" in err.getvalue()
    assert UsageRecord.objects.get(pk=hold.record_id).status == "pending"  # may still run


def test_a_hold_taken_as_the_database_failed_is_given_back(alice, settings, tmp_path):
    # The database took the hold but the connection dropped before it said so: the relay
    # answered 503 and keeps the release; replaying it gives the hold back.
    from billing.ledger import reserve
    from tests.factories import make_token

    settings.SETTLE_SPOOL_DIR = str(tmp_path / "spool")
    settings.REDIS_URL = ""
    token, _ = make_token(alice)
    hold = reserve(
        token, Decimal("5"), request_id="req-lost", endpoint="e", model="m", stream=False
    )
    spool.keep_release("req-lost")
    assert spool.replay() == (1, 0)
    record = UsageRecord.objects.get(pk=hold.record_id)
    assert record.status == "abandoned"
    alice.refresh_from_db()
    assert alice.balance == Decimal("100")
