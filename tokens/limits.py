"""Rate limits: requests per minute, tokens per minute and concurrent requests.

Where they come from: a token's own limits, and its owner's (a user's own limit, or else their
group's: a group's limits are the default of each of its users, counted per user). Both scopes
apply; the token lookup (tokens.authentication) loads all of them, so knowing them costs no
query.

The algorithm, per scope and per kind (requests, tokens): a leaky bucket, kept as the amount
`used` and when it was last written. `used` drains continuously at `limit / window` per second,
and a request passes when `used + cost <= limit`. So a full bucket allows a burst of the whole
minute's limit at once, then the limit's steady rate (an RPM of 3 lets one more request in every
20 s); memory is one small hash per scope whatever the limit; the reset headers are exact
(`used` drains to zero in `used / rate`). A request counts its tokens at the hold (the prompt
bound plus the completion bound the relay holds money for) and its settle gives back what it
did not use (or adds what it used beyond). Concurrency: each request in flight holds a lease
that expires on its own (a crashed process cannot leak a slot for longer than the longest a
request may run).

Exact across workers and instances with REDIS_URL: one Lua script checks every scope and takes
from all of them or none (the check-and-take is atomic), one more corrects the tokens and gives
the slot back at settle; the clock is Redis's. Without REDIS_URL every process keeps its own
counts (N processes let N times the limit through). A Redis error never fails a request: this
process counts on its own for RETRY_SECONDS, logged once per outage.

Settings (read at each use, for tests; not environment variables): RATE_LIMIT_WINDOW (60 s),
RATE_LIMIT_KEY_PREFIX ("airouter:limits:"), RATE_LIMIT_LEASE_SECONDS (the longest stream,
RELAY_MAX_STREAM_SECONDS, plus 5 minutes).
"""

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from redis.commands.core import Script

from airouter import observability, shared_state
from tokens.authentication import KeyRefused

logger = logging.getLogger(__name__)

WINDOW = 60.0
KEY_PREFIX = "airouter:limits:"
LEASE_MARGIN = 300.0  # seconds a lease outlives the longest stream
RETRY_SECONDS = 5.0  # after a Redis error, count in this process for this long
REQUESTS, TOKENS, CONCURRENCY = 1, 2, 3  # what refused a request (the script's numbers)


def window() -> float:
    return float(getattr(settings, "RATE_LIMIT_WINDOW", WINDOW))


def key_prefix() -> str:
    return getattr(settings, "RATE_LIMIT_KEY_PREFIX", KEY_PREFIX)


def lease_seconds() -> float:
    longest = getattr(settings, "RELAY_MAX_STREAM_SECONDS", 3600.0)
    return float(getattr(settings, "RATE_LIMIT_LEASE_SECONDS", longest + LEASE_MARGIN))


@dataclass(frozen=True, slots=True)
class Scope:
    """One set of counters and its limits (0: that kind is not limited)."""

    key: str  # "t:<token id>" or "u:<user id>"
    label: str  # who, as the client is told
    rpm: int
    tpm: int
    concurrency: int

    def limit(self, kind: int) -> int:
        return (self.rpm, self.tpm, self.concurrency)[kind - 1]


@dataclass(frozen=True, slots=True)
class State:
    """A scope's counters: after the take when one was made, else as they stand."""

    requests: float
    tokens: float
    in_flight: int

    def used(self, kind: int) -> float:
        return (self.requests, self.tokens, self.in_flight)[kind - 1]


def scopes_of(token) -> tuple[Scope, ...]:
    """The scopes that limit a token's requests: its own, and its owner's (with the group's
    defaults), each only when some limit is set. A 0 reads as no limit."""
    scopes = []
    if token.rpm or token.tpm or token.max_concurrency:
        scopes.append(
            Scope(
                f"t:{token.pk}",
                f"API key {token.key_prefix}...",
                token.rpm or 0,
                token.tpm or 0,
                token.max_concurrency or 0,
            )
        )
    owner = token.owner
    rpm, tpm, concurrency = (value or 0 for value in owner.rate_limits().values())
    if rpm or tpm or concurrency:
        scopes.append(Scope(f"u:{owner.pk}", f"user {owner.username}", rpm, tpm, concurrency))
    return tuple(scopes)


def of(token) -> "Limits | None":
    """The rate limits of a token's requests, or None when nothing limits them."""
    scopes = scopes_of(token)
    return Limits(scopes) if scopes else None


# --- the answers ---------------------------------------------------------------------


class RateLimited(KeyRefused):
    """429 rate_limit_exceeded, as OpenAI words it (type "requests" or "tokens")."""

    def __init__(self, message: str, kind: int, headers: dict):
        super().__init__(
            429,
            message,
            type="tokens" if kind == TOKENS else "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )


def duration(seconds: float) -> str:
    """OpenAI's (Go's) duration format: 20ms, 1s, 8.64s, 6m0s, 1h0m5s."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    text = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


def headers(scopes, states, length: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: per kind, the scope with the least room left."""
    found = {}
    for kind, name in ((REQUESTS, "requests"), (TOKENS, "tokens")):
        tightest = None
        for scope, state in zip(scopes, states, strict=True):
            limit = scope.limit(kind)
            if not limit:
                continue
            used = state.used(kind)
            remaining = max(0, math.floor(limit - used + 1e-6))
            if tightest is None or remaining < tightest[1]:
                tightest = (limit, remaining, max(0.0, used) * length / limit)
        if tightest is not None:
            limit, remaining, reset = tightest
            found[f"x-ratelimit-limit-{name}"] = str(limit)
            found[f"x-ratelimit-remaining-{name}"] = str(remaining)
            found[f"x-ratelimit-reset-{name}"] = duration(reset)
    return found


def refusal(scope, state, kind, cost, model, length, found) -> RateLimited:
    limit, used = scope.limit(kind), state.used(kind)
    who = f"Rate limit reached for {model} by {scope.label}"
    found = dict(found)
    if kind == CONCURRENCY:
        found["Retry-After"] = "1"
        return RateLimited(
            f"{who} on concurrent requests: Limit {limit}, Used {int(used)}, Requested 1. "
            "Please try again when one of them has finished.",
            kind,
            found,
        )
    requested = 1 if kind == REQUESTS else cost
    if requested > limit:  # never fits: retrying cannot help
        found["x-should-retry"] = "false"
        return RateLimited(
            f"Request too large for {model} by {scope.label} on tokens per min (TPM): "
            f"Limit {limit}, Requested {requested}. The prompt and the completion allowed "
            "(max_tokens) count together: lower max_tokens or shorten the prompt.",
            kind,
            found,
        )
    wait = (used + requested - limit) * length / limit
    found["Retry-After"] = str(max(1, math.ceil(wait)))
    what = "requests per min (RPM)" if kind == REQUESTS else "tokens per min (TPM)"
    return RateLimited(
        f"{who} on {what}: Limit {limit}, Used {math.ceil(used - 1e-6)}, Requested {requested}. "
        f"Please try again in {duration(wait)}.",
        kind,
        found,
    )


# --- Redis: one script to check and take, one to settle --------------------------------

# KEYS: per scope its bucket (hash: r, t, at) and its leases (sorted set, scored by expiry).
# ARGV: "take" or "peek", window ms, lease ms, lease id, tokens, then rpm, tpm, concurrency
# per scope (0: not limited). Returns the scope and kind refused (0, 0: none), then per scope
# the requests and tokens used and the requests in flight (after the take if one was made).
TAKE = b"""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local take = ARGV[1] == 'take'
local window, lease_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, cost = ARGV[4], tonumber(ARGV[5])
local n = #KEYS / 2
local state = {}
local refused, kind = 0, 0
for i = 1, n do
  local bucket, slots = KEYS[2 * i - 1], KEYS[2 * i]
  local rpm, tpm = tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 4])
  local most = tonumber(ARGV[3 * i + 5])
  local v = redis.call('HMGET', bucket, 'r', 't', 'at')
  local r, t, at = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or now
  local elapsed = math.max(0, now - at)
  if rpm > 0 then r = math.max(0, r - elapsed * rpm / window) else r = 0 end
  if tpm > 0 then t = math.max(0, t - elapsed * tpm / window) else t = 0 end
  local busy = 0
  if most > 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    busy = redis.call('ZCARD', slots)
  end
  state[i] = {r, t, busy, rpm, tpm, most}
  if take and refused == 0 then
    if rpm > 0 and r + 1 > rpm then refused, kind = i, 1
    elseif tpm > 0 and t + cost > tpm then refused, kind = i, 2
    elseif most > 0 and busy + 1 > most then refused, kind = i, 3 end
  end
end
if take and refused == 0 then
  for i = 1, n do
    local s = state[i]
    local bucket, slots = KEYS[2 * i - 1], KEYS[2 * i]
    if s[4] > 0 or s[5] > 0 then
      if s[4] > 0 then s[1] = s[1] + 1 end
      if s[5] > 0 then s[2] = s[2] + cost end
      local full = 0
      if s[4] > 0 then full = s[1] / s[4] end
      if s[5] > 0 then full = math.max(full, s[2] / s[5]) end
      redis.call('HSET', bucket, 'r', s[1], 't', s[2], 'at', now)
      redis.call('PEXPIRE', bucket, math.ceil(full * window) + 1000)
    end
    if s[6] > 0 then
      redis.call('ZADD', slots, now + lease_ms, lease)
      redis.call('PEXPIRE', slots, math.ceil(lease_ms))
      s[3] = s[3] + 1
    end
  end
end
local out = {refused, kind}
for i = 1, n do
  local s = state[i]
  table.insert(out, tostring(s[1]))
  table.insert(out, tostring(s[2]))
  table.insert(out, s[3])
end
return out
"""

# KEYS: as above. ARGV: window ms, lease id, tokens to add (negative: given back), then rpm,
# tpm, concurrency per scope. Corrects the tokens and gives the lease back.
SETTLE = b"""
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local window, lease, delta = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  local bucket, slots = KEYS[2 * i - 1], KEYS[2 * i]
  local rpm, tpm = tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local most = tonumber(ARGV[3 * i + 3])
  if tpm > 0 and delta ~= 0 then
    local v = redis.call('HMGET', bucket, 'r', 't', 'at')
    local r, t, at = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or now
    local elapsed = math.max(0, now - at)
    if rpm > 0 then r = math.max(0, r - elapsed * rpm / window) else r = 0 end
    t = math.max(0, t - elapsed * tpm / window + delta)
    local full = t / tpm
    if rpm > 0 then full = math.max(full, r / rpm) end
    redis.call('HSET', bucket, 'r', r, 't', t, 'at', now)
    redis.call('PEXPIRE', bucket, math.ceil(full * window) + 1000)
  end
  if most > 0 then redis.call('ZREM', slots, lease) end
end
return 1
"""

_take_script = Script(None, TAKE)
_settle_script = Script(None, SETTLE)
_redis_lock = threading.Lock()
_redis_down_until = 0.0  # monotonic time before which this process does not ask Redis
_redis_failing = False


def _redis():
    """The shared client, or None: no REDIS_URL, or Redis failed a moment ago."""
    if _redis_down_until and time.monotonic() < _redis_down_until:
        return None
    return shared_state.client()


def _redis_failed(exc: Exception) -> None:
    global _redis_down_until, _redis_failing
    with _redis_lock:
        _redis_down_until = time.monotonic() + RETRY_SECONDS
        first, _redis_failing = not _redis_failing, True
    if first:
        logger.warning(
            "Rate limits: Redis failed (%s); each process counts on its own until it answers "
            "again (retried every %ss)",
            exc,
            RETRY_SECONDS,
        )


def _redis_answered() -> None:
    global _redis_down_until, _redis_failing
    if _redis_failing:
        with _redis_lock:
            _redis_down_until, _redis_failing = 0.0, False
        logger.warning("Rate limits: Redis answers again; limits are shared across instances")


def _keys(scopes) -> list[str]:
    prefix = key_prefix()
    keys = []
    for scope in scopes:
        keys += [prefix + scope.key, f"{prefix}{scope.key}:leases"]
    return keys


def _limit_args(scopes) -> list[int]:
    args = []
    for scope in scopes:
        args += [scope.rpm, scope.tpm, scope.concurrency]
    return args


def _redis_take(client, scopes, take, cost, lease_id, length, lease_s):
    args = [b"take" if take else b"peek", length * 1000, lease_s * 1000, lease_id, cost]
    reply = _take_script(_keys(scopes), args + _limit_args(scopes), client=client)
    states = tuple(
        State(float(reply[i]), float(reply[i + 1]), int(reply[i + 2]))
        for i in range(2, len(reply), 3)
    )
    return int(reply[0]) - 1, int(reply[1]), states


def _redis_settle(client, scopes, lease_id, delta, length) -> None:
    args = [length * 1000, lease_id, delta, *_limit_args(scopes)]
    _settle_script(_keys(scopes), args, client=client)


# --- without Redis: the same counts in this process -----------------------------------


class LocalCounts:
    """The buckets and leases of one process (no REDIS_URL, or Redis failing)."""

    PRUNE_ABOVE = 10_000  # buckets kept before drained ones are dropped

    def __init__(self):
        self.lock = threading.Lock()
        self.buckets: dict[str, list] = {}  # key -> [requests used, tokens used, at]
        self.leases: dict[str, dict] = {}  # key -> {lease id: expires at}

    def _drained(self, scope, now, length) -> list:
        r, t, at = self.buckets.get(scope.key) or (0.0, 0.0, now)
        elapsed = max(0.0, now - at)
        r = max(0.0, r - elapsed * scope.rpm / length) if scope.rpm else 0.0
        t = max(0.0, t - elapsed * scope.tpm / length) if scope.tpm else 0.0
        return [r, t, now]

    def _in_flight(self, scope, now) -> dict:
        leases = self.leases.setdefault(scope.key, {})
        for lease_id in [k for k, expires in leases.items() if expires <= now]:
            del leases[lease_id]
        return leases

    def take(self, scopes, take, cost, lease_id, length, lease_s):
        now = time.monotonic()
        with self.lock:
            buckets = [self._drained(s, now, length) for s in scopes]
            leases = [self._in_flight(s, now) if s.concurrency else {} for s in scopes]
            refused, kind = -1, 0
            for i, (scope, (r, t, _), held) in enumerate(zip(scopes, buckets, leases, strict=True)):
                if not take:
                    break
                if scope.rpm and r + 1 > scope.rpm:
                    refused, kind = i, REQUESTS
                elif scope.tpm and t + cost > scope.tpm:
                    refused, kind = i, TOKENS
                elif scope.concurrency and len(held) + 1 > scope.concurrency:
                    refused, kind = i, CONCURRENCY
                if refused >= 0:
                    break
            if take and refused < 0:
                for scope, bucket, held in zip(scopes, buckets, leases, strict=True):
                    if scope.rpm or scope.tpm:
                        bucket[0] += 1 if scope.rpm else 0
                        bucket[1] += cost if scope.tpm else 0
                        self.buckets[scope.key] = bucket
                    if scope.concurrency:
                        held[lease_id] = now + lease_s
                if len(self.buckets) > self.PRUNE_ABOVE:
                    self._prune(now, length)
            states = tuple(
                State(r, t, len(held)) for (r, t, _), held in zip(buckets, leases, strict=True)
            )
        return refused, kind, states

    def settle(self, scopes, lease_id, delta, length) -> None:
        now = time.monotonic()
        with self.lock:
            for scope in scopes:
                if scope.tpm and delta and scope.key in self.buckets:
                    bucket = self._drained(scope, now, length)
                    bucket[1] = max(0.0, bucket[1] + delta)
                    self.buckets[scope.key] = bucket
                if scope.concurrency:
                    self.leases.get(scope.key, {}).pop(lease_id, None)

    def _prune(self, now, length) -> None:
        """Forget the buckets untouched for a whole window: they have drained (a bucket
        over its limit after a correction is forgiven the rest)."""
        stale = [k for k, (_, _, at) in self.buckets.items() if now - at > length]
        for key in stale:
            del self.buckets[key]
        for key in [k for k, leases in self.leases.items() if not leases]:
            del self.leases[key]

    def clear(self) -> None:
        with self.lock:
            self.buckets.clear()
            self.leases.clear()


local_counts = LocalCounts()


# --- what the relay calls ----------------------------------------------------------------


class Limits:
    """The rate limits of one request's key: take before forwarding, settle when done."""

    __slots__ = ("scopes",)

    def __init__(self, scopes: tuple[Scope, ...]):
        self.scopes = scopes

    def _run(self, take: bool, cost: int, lease_id: str):
        length, lease_s = window(), lease_seconds()
        client = _redis()
        if client is not None:
            try:
                found = _redis_take(client, self.scopes, take, cost, lease_id, length, lease_s)
            except redis.RedisError as exc:
                _redis_failed(exc)
            else:
                _redis_answered()
                return client, found
        return None, local_counts.take(self.scopes, take, cost, lease_id, length, lease_s)

    def take(self, tokens: int, model: str, lease_id: str) -> "Lease":
        """Count one request of `tokens` tokens and hold a concurrency slot, in every scope at
        once; or raise RateLimited (429), having taken nothing."""
        client, (refused, kind, states) = self._run(True, tokens, lease_id)
        length = window()
        found = headers(self.scopes, states, length)
        if refused >= 0:
            scope = self.scopes[refused]
            observability.rate_limited("token" if scope.key.startswith("t:") else "user")
            raise refusal(scope, states[refused], kind, tokens, model, length, found)
        return Lease(self, client, lease_id, tokens, found)

    def current_headers(self) -> dict[str, str]:
        """The x-ratelimit-* headers as the counters stand (nothing taken): for an answer
        given before the take (a bad request, an unknown model)."""
        _, (_, _, states) = self._run(False, 0, "")
        return headers(self.scopes, states, window())

    def add_headers(self, exc: Exception, lease: "Lease | None") -> None:
        """Give an error answer the x-ratelimit-* headers too (a refusal has its own)."""
        if isinstance(getattr(exc, "headers", None), dict) and not isinstance(exc, RateLimited):
            exc.headers.update(lease.headers if lease is not None else self.current_headers())


class Lease:
    """One request's share of its limits, until it settles (exactly once)."""

    __slots__ = ("limits", "client", "lease_id", "tokens", "headers", "open")

    def __init__(self, limits, client, lease_id, tokens, found):
        self.limits = limits
        self.client = client  # the Redis it was taken in; None: this process's counts
        self.lease_id = lease_id
        self.tokens = tokens
        self.headers = found
        self.open = True

    def apply(self, response):
        for name, value in self.headers.items():
            response[name] = value
        return response

    def settle(self, tokens: int) -> None:
        """The request is over and used `tokens` tokens: correct the count taken at the hold
        and give the concurrency slot back. Never fails the request."""
        if not self.open:
            return
        self.open = False
        scopes = self.limits.scopes
        delta = tokens - self.tokens if any(s.tpm for s in scopes) else 0
        if not delta and not any(s.concurrency for s in scopes):
            return  # nothing to give back: no round trip
        if self.client is None:
            local_counts.settle(scopes, self.lease_id, delta, window())
            return
        try:
            _redis_settle(self.client, scopes, self.lease_id, delta, window())
        except redis.RedisError as exc:  # the lease expires on its own
            _redis_failed(exc)

    def settled(self, usage) -> None:
        """The settle hook: `usage` is what the request was billed for."""
        self.settle(usage.input_tokens + usage.output_tokens)
