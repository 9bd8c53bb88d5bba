"""Circuit breakers: a channel that keeps failing is left out of routing for a while.

After CHANNEL_FAILURE_THRESHOLD consecutive failures (every FAILURE and KEY_REFUSED outcome of
`channels_app.transports`: no connection, a timeout, 408, 429, a 5xx, an answer that is no
answer, a refused channel key) a channel's breaker **opens** for CHANNEL_COOLDOWN_SECONDS; a
success, or a request the upstream refused (the client's fault, not the channel's), resets
the count. A 429 or 503 with Retry-After opens it at once, for that long. Once the cooldown is
over the breaker is **half-open**: one request (and one only, across threads and instances)
probes the channel, tried first in its group; its success **closes** the breaker, its failure
opens it again for twice the last cooldown, up to CHANNEL_COOLDOWN_MAX_SECONDS.

Routing (`routing.plan`) leaves open channels out, unless every channel of the plan is open:
then it tries them all anyway, soonest reopening first (Envoy's panic threshold), so a breaker
never turns a flaky pool into a dead one. Saving a channel (the admin, `create_channel`, the
enable and disable actions) closes its breaker.

Where the state lives: with REDIS_URL, in one Redis hash shared by every worker and instance
(one Lua script per recorded failure, or per first success after failures; each process reads
the whole hash at most once per REFRESH seconds, so routing reads a local dict); without it,
in the process. A Redis error never fails a request: the process goes on with its own state
for REDIS_RETRY seconds. Successes of a healthy channel touch nothing but a dict lookup.
"""

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from airouter import shared_state
from channels_app.models import Channel
from channels_app.routing_table import get_table

log = logging.getLogger(__name__)

Outcome = Channel.Outcome
FAILURES = (Outcome.FAILURE, Outcome.KEY_REFUSED)

PREFIX = "airouter:breaker:"  # Redis keys: PREFIX + "state" (the hash), PREFIX + "probe:<id>"
REFRESH = 1.0  # seconds a process routes by its copy of the shared state
PROBE_SECONDS = 10.0  # a probe's turn; unanswered (or never sent) by then, the next request's
REDIS_RETRY = 5.0  # seconds on the process's own state after a Redis error

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True, slots=True)
class State:
    failures: int = 0  # consecutive failures
    opens: int = 0  # times opened since it last closed (0: closed); each doubles the cooldown
    until: float = 0.0  # when the cooldown ends (time.time())
    error: str = ""  # the last failure

    def status(self, now: float) -> str:
        if self.until > now:
            return OPEN
        return HALF_OPEN if self.opens else CLOSED


NO_STATE = State()

_lock = threading.Lock()
_refreshing = threading.Lock()
_states: dict[int, State] = {}  # channel id -> State; channels without one are closed
_read_at = float("-inf")  # monotonic time of the last read from Redis
_redis_down_until = 0.0  # monotonic
# Probe turns: without Redis, the grants themselves (channel id -> monotonic expiry); with it,
# the channels whose turn another request holds, until the next read from Redis.
_probes: dict[int, float] = {}


# --- recording outcomes (channels_app.health calls this for every attempt) -----------------


def record(channel_id: int, outcome: str, error: str = "", retry_after: float | None = None):
    """Count one attempt's outcome on the channel's breaker."""
    threshold = settings.CHANNEL_FAILURE_THRESHOLD
    if threshold <= 0:  # breakers turned off
        return
    if outcome in FAILURES:
        _failure(channel_id, error[:300], retry_after, threshold)
        return
    state = _states.get(channel_id)
    if state is None or state.until > time.time():
        # Nothing to reset (the hot path), or still open: a request sent before it opened.
        return
    _success(channel_id)


def cooldown(opens: int) -> float:
    """How long the breaker stays open the `opens`-th time in a row."""
    base, top = settings.CHANNEL_COOLDOWN_SECONDS, settings.CHANNEL_COOLDOWN_MAX_SECONDS
    return min(base * 2 ** min(opens - 1, 64), top)


def after_failure(state: State, now: float, threshold: int, retry: float | None, error: str):
    """The breaker after one more failure (FAIL_SCRIPT does the same in Redis)."""
    failures, opens, until = state.failures + 1, state.opens, state.until
    if until > now:  # still open (a request sent before it opened): Retry-After may extend it
        if retry is not None:
            until = max(until, now + retry)
    elif retry is not None or opens or failures >= threshold:  # (re)open
        opens += 1
        until = now + (retry if retry is not None else cooldown(opens))
    return State(failures, opens, until, error)


def _failure(channel_id: int, error: str, retry_after: float | None, threshold: int) -> None:
    now = time.time()
    retry = None
    if retry_after is not None and retry_after > 0:
        retry = min(retry_after, settings.CHANNEL_COOLDOWN_MAX_SECONDS)
    client = _redis()
    if client is not None:
        try:
            raw = _script(client, FAIL_SCRIPT)(
                keys=_keys(channel_id),
                args=[channel_id, repr(now), threshold, *_cooldowns(), retry or "", error],
            )
            state = decode(raw)
            with _lock:
                _states[channel_id] = state
                if state.until > now:
                    _probes.pop(channel_id, None)
            return
        except redis.RedisError as exc:
            _redis_failed(exc)
    with _lock:
        state = after_failure(_states.get(channel_id, NO_STATE), now, threshold, retry, error)
        _states[channel_id] = state
        if state.until > now:
            _probes.pop(channel_id, None)  # (re)opened: the probe, if any, is over


def _success(channel_id: int) -> None:
    client = _redis()
    if client is not None:
        try:
            _script(client, SUCCESS_SCRIPT)(keys=_keys(channel_id), args=[channel_id, time.time()])
        except redis.RedisError as exc:
            _redis_failed(exc)
    with _lock:
        _states.pop(channel_id, None)
        _probes.pop(channel_id, None)


def forget(channel_id: int) -> None:
    """Close the channel's breaker and forget its failures (the channel was saved or deleted)."""
    client = _redis()
    if client is not None:
        try:
            client.pipeline().hdel(PREFIX + "state", channel_id).delete(
                f"{PREFIX}probe:{channel_id}"
            ).execute()
        except redis.RedisError as exc:
            _redis_failed(exc)
    with _lock:
        _states.pop(channel_id, None)
        _probes.pop(channel_id, None)


def reset() -> None:
    """Forget every breaker of this process (tests; the shared state is left alone)."""
    global _states, _read_at, _redis_down_until
    with _lock:
        _states = {}
        _probes.clear()
        _read_at = float("-inf")
        _redis_down_until = 0.0


# --- reading them (routing, the admin, `route`, metrics) ----------------------------------


def current() -> dict[int, State]:
    """Channel id -> State of every channel with failures on record (the others are closed).
    Routing reads it on every request: a dict, re-read from Redis at most every REFRESH
    seconds."""
    if settings.REDIS_URL and time.monotonic() - _read_at >= REFRESH:
        refresh()
    return _states


def refresh(wait: bool = False) -> None:
    """Read the shared state from Redis now (one HGETALL). Without `wait`, a thread that finds
    another one reading goes on with the copy it has."""
    global _states, _read_at
    if not _refreshing.acquire(blocking=wait):
        return
    try:
        _read_at = time.monotonic()
        client = _redis()
        if client is None:
            return
        try:
            raw = client.hgetall(PREFIX + "state")
        except redis.RedisError as exc:
            _redis_failed(exc)
            return
        states = {}
        for key, value in raw.items():
            try:
                states[int(key)] = decode(value)
            except (ValueError, TypeError, KeyError):
                log.warning("Ignoring an unreadable breaker state in Redis: %r", value)
        with _lock:
            _states = states
            _probes.clear()  # whose turn it is: Redis says (SET NX) when asked again
    finally:
        _refreshing.release()


def grant_probe(channel_id: int) -> bool:
    """Whether this request may probe a half-open channel: one request at a time, across
    threads and instances (SET NX in Redis, a lock in the process). A turn that is neither
    answered nor sent (an earlier attempt served the request) passes after PROBE_SECONDS."""
    now = time.monotonic()
    with _lock:
        if _probes.get(channel_id, 0.0) > now:
            return False
        _probes[channel_id] = now + PROBE_SECONDS  # no other thread of ours asks meanwhile
    client = _redis()
    if client is None:
        return True
    try:
        return bool(
            client.set(f"{PREFIX}probe:{channel_id}", b"1", nx=True, px=int(PROBE_SECONDS * 1000))
        )
    except redis.RedisError as exc:
        _redis_failed(exc)
        return True


def states(fresh: bool = True) -> dict[int, State]:
    """Like current(), read from Redis now when `fresh` (the admin, `route`, metrics)."""
    if fresh and settings.REDIS_URL:
        refresh(wait=True)
    return dict(current())


def snapshot() -> dict[int, str]:
    """{channel id: "closed" | "open" | "half-open"} for every channel of the routing table
    (and any other with a breaker state): what /metrics exports as
    airouter_channel_breaker_open{channel}."""
    found = states()
    now = time.time()
    ids = {ch.id for group in get_table().channels_by_group.values() for ch in group}
    return {cid: found.get(cid, NO_STATE).status(now) for cid in sorted(ids | set(found))}


def describe(state: State | None, now: float | None = None, opened: str = "open") -> str:
    """The breaker in words: "closed", "open until 14:03:20 (3 failures: HTTP 500: ...)"
    (`opened` says "open"), "half-open (the next request probes it)"."""
    now = time.time() if now is None else now
    status = (state or NO_STATE).status(now)
    if status == CLOSED:
        return CLOSED
    if status == HALF_OPEN:
        return "half-open (the next request probes it)"
    failures = f"{state.failures} failure{'s' if state.failures != 1 else ''}"
    why = f"{failures}: {state.error}" if state.error else failures
    return f"{opened} until {clock(state.until)} ({why})"


def clock(timestamp: float) -> str:
    """A time.time() as the admin shows times (HH:MM:SS in TIME_ZONE)."""
    moment = timezone.localtime(datetime.fromtimestamp(timestamp, tz=UTC))
    return moment.strftime("%H:%M:%S")


# --- Redis ----------------------------------------------------------------------------------

# KEYS: the state hash, the channel's probe key. ARGV: channel id, now, threshold, base
# cooldown, max cooldown, Retry-After seconds ("" for none), error. Returns the new state.
# The same transition as after_failure().
FAIL_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local s = {f = 0, o = 0, u = 0}
if raw then s = cjson.decode(raw) end
local now, retry = tonumber(ARGV[2]), tonumber(ARGV[6])
s.f = s.f + 1
s.e = ARGV[7]
if s.u > now then
  if retry and now + retry > s.u then s.u = now + retry end
elseif retry or s.o > 0 or s.f >= tonumber(ARGV[3]) then
  s.o = s.o + 1
  s.u = now + (retry or math.min(tonumber(ARGV[4]) * 2 ^ math.min(s.o - 1, 64), tonumber(ARGV[5])))
  redis.call('DEL', KEYS[2])
end
raw = cjson.encode(s)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
"""

# KEYS as above; ARGV: channel id, now. Closes the breaker unless it is (still) open.
SUCCESS_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
if cjson.decode(raw).u > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

_scripts: dict = {}  # (id of the client, script text) -> registered Script


def _keys(channel_id: int) -> list[str]:
    return [PREFIX + "state", f"{PREFIX}probe:{channel_id}"]


def _cooldowns() -> tuple[float, float]:
    return settings.CHANNEL_COOLDOWN_SECONDS, settings.CHANNEL_COOLDOWN_MAX_SECONDS


def _script(client, text: str):
    key = (id(client), text)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(text)
    return script


def _redis():
    """The shared Redis client, or None: no REDIS_URL, or it failed a moment ago."""
    if not settings.REDIS_URL or time.monotonic() < _redis_down_until:
        return None
    return shared_state.client()


def _redis_failed(exc: Exception) -> None:
    global _redis_down_until
    if time.monotonic() >= _redis_down_until:
        log.warning(
            "Channel breakers: Redis failed (%s); this process keeps its own state for %gs",
            exc,
            REDIS_RETRY,
        )
    _redis_down_until = time.monotonic() + REDIS_RETRY


def decode(raw) -> State:
    data = json.loads(raw)
    return State(int(data["f"]), int(data["o"]), float(data["u"]), str(data.get("e") or ""))


# --- saving a channel closes its breaker ------------------------------------------------------


def _saved(sender, instance, **kwargs):
    forget(instance.pk)


post_save.connect(_saved, sender=Channel, dispatch_uid="breaker_channel_saved")
post_delete.connect(_saved, sender=Channel, dispatch_uid="breaker_channel_deleted")
