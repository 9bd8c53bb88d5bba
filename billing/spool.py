"""Settles the database refused, kept until they land.

A request whose settle fails (the database down for a moment, a lock timeout) has already been
answered: its usage record stays pending with the hold on the balance. Its outcome is kept
here instead of only in a log line: in Redis (a list every instance shares) when REDIS_URL is
set, else in a file per process under SETTLE_SPOOL_DIR. A thread of the process retries every
RETRY_EVERY seconds until the spool is empty, and `release_holds` replays every kept settle
before it releases anything, so a request served while the database was away is billed what
it cost, once (settling only ever moves a pending record).
"""

import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import redis
from django.conf import settings
from django.db import DatabaseError, DataError, ProgrammingError, close_old_connections

from airouter import shared_state
from billing import ledger
from billing.models import UsageRecord

logger = logging.getLogger(__name__)

KEY = "airouter:settle-spool"
RETRY_EVERY = 5.0

_lock = threading.Lock()
_retrier: threading.Thread | None = None


def _directory() -> Path:
    return Path(settings.SETTLE_SPOOL_DIR)


def _own_file() -> Path:
    return _directory() / f"{socket.gethostname()}-{os.getpid()}.jsonl"


def keep(record_id: int, outcome: dict) -> None:
    """Keep a settle that failed, and make sure this process retries it."""
    _keep(json.dumps({"record": record_id, "outcome": outcome}, default=str))


def keep_release(request_id: str) -> None:
    """Keep the release of a request's hold whose fate is unknown: the database dropped the
    connection as it took the hold, so the hold may have been committed with nobody to settle
    it. Replaying gives back whatever hold of that request is still pending."""
    _keep(json.dumps({"release": request_id}))


def _keep(line: str) -> None:
    client = shared_state.client()
    if client is not None:
        try:
            client.rpush(KEY, line)
            _start_retrier()
            return
        except redis.RedisError as exc:
            logger.warning("settle spool: Redis refused the settle (%s): kept on disk", exc)
    _append(_own_file(), [line])
    _start_retrier()


def _append(path: Path, lines: list[str]) -> None:
    """Append under the file's lock; a file a replayer removed meanwhile is made again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with open(path, "a", encoding="utf-8") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            if os.fstat(spool.fileno()).st_nlink == 0:
                continue  # unlinked while we waited for the lock: open it anew
            spool.write("".join(line + "\n" for line in lines))
            spool.flush()
            os.fsync(spool.fileno())
            return


def replay() -> tuple[int, int]:
    """Settle what is kept: (settled now, still kept). Stops at the first database error."""
    settled = remaining = 0
    client = shared_state.client()
    if client is not None:
        try:
            s, r = _replay_redis(client)
            settled, remaining = settled + s, remaining + r
        except redis.RedisError as exc:
            logger.warning("settle spool: Redis unreachable (%s)", exc)
    directory = _directory()
    if directory.is_dir():
        for path in sorted(directory.glob("*.jsonl")):
            s, r = _replay_file(path)
            settled, remaining = settled + s, remaining + r
    return settled, remaining


def _settle(line: str) -> None:
    """Settle one kept outcome, or release one kept hold (raises DatabaseError while the
    database still refuses)."""
    kept = json.loads(line)
    if "release" in kept:
        UsageRecord.objects.filter(
            request_id=kept["release"], status=UsageRecord.Status.PENDING
        ).update(
            status=UsageRecord.Status.ABANDONED,
            error="The database failed as the hold was taken; the hold was given back.",
        )
        return
    outcome = {
        name: UsageRecord._meta.get_field(name).to_python(value)
        for name, value in kept["outcome"].items()
        if name not in ("group_id", "channel_id")
    }
    outcome["group_id"] = kept["outcome"].get("group_id")
    outcome["channel_id"] = kept["outcome"].get("channel_id")
    if not ledger.settle_record(kept["record"], outcome):
        status = (
            UsageRecord.objects.filter(pk=kept["record"]).values_list("status", flat=True).first()
        )
        if status == UsageRecord.Status.ABANDONED:
            logger.error(
                "settle spool: record %s was released before its settle landed: cost %s was "
                "not charged",
                kept["record"],
                outcome.get("cost"),
            )
        # else: an earlier try landed but its answer was lost: charged once, nothing to do


# Settling only ever moves a pending record, so replaying a line twice is harmless: a line is
# removed only once its settle landed, and a replayer that dies midway loses nothing.


def _replay_one(line: str, where) -> bool:
    """Settle one kept line: True when it is done with (settled, or set aside for a human),
    False while the database is still away (raises nothing)."""
    try:
        _settle(line)
    except (DataError, ProgrammingError) as exc:  # what no retry will change
        _dead_letter(line, f"{type(exc).__name__}: {exc}", where)
    except DatabaseError:
        return False  # the database is away (or busy): later
    except (ValueError, KeyError, TypeError) as exc:  # a torn or unreadable line
        _dead_letter(line, f"{type(exc).__name__}: {exc}", where)
    return True


def _dead_letter(line: str, why: str, where) -> None:
    """A line the database will never take (not an outage): kept aside, never in the way."""
    logger.error(
        "settle spool: a kept settle from %s cannot be written (%s): set aside", where, why
    )
    _append(_directory() / "dead-letter.txt", [line])


def _replay_redis(client) -> tuple[int, int]:
    settled = 0
    while (line := client.lindex(KEY, 0)) is not None:
        text = line.decode() if isinstance(line, bytes) else line
        if not _replay_one(text, "Redis"):
            return settled, client.llen(KEY)
        client.lrem(KEY, 1, line)
        settled += 1
    return settled, 0


def _replay_file(path: Path) -> tuple[int, int]:
    """Settle the file's lines without holding its lock (a request keeping a settle meanwhile
    is not held up), then take out, under the lock, the ones that landed."""
    try:
        with open(path, encoding="utf-8") as spool:
            fcntl.flock(spool, fcntl.LOCK_SH)
            lines = [line for line in spool.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return 0, 0
    done = []
    for line in lines:
        if not _replay_one(line, path.name):
            break
        done.append(line)
    if done:
        _remove(path, done)
    return len(done), len(lines) - len(done)


def _remove(path: Path, done: list[str]) -> None:
    with open(path, "r+", encoding="utf-8") as spool:
        fcntl.flock(spool, fcntl.LOCK_EX)
        left = [line for line in spool.read().splitlines() if line.strip()]
        for line in done:
            if line in left:
                left.remove(line)
        spool.seek(0)
        spool.truncate()
        spool.write("".join(line + "\n" for line in left))
        if not left:
            path.unlink(missing_ok=True)  # a writer waiting for the lock sees it and starts anew


def _start_retrier() -> None:
    global _retrier
    with _lock:
        if _retrier is not None and _retrier.is_alive():
            return
        _retrier = threading.Thread(target=_retry, name="settle-spool", daemon=True)
        _retrier.start()


def _retry() -> None:
    while True:
        time.sleep(RETRY_EVERY)
        close_old_connections()
        try:
            settled, remaining = replay()
        except Exception:
            logger.exception("settle spool: replay failed")
            continue
        finally:
            close_old_connections()
        if settled:
            logger.warning("settle spool: %d kept settle(s) landed", settled)
        if not remaining:
            return
