"""The Redis connection that instances share state through (REDIS_URL), when there is one.

`client()` is None without REDIS_URL: each process then keeps its own state (breakers, rate
counters), as the README says. Calls must be short and must not fail a request: callers catch
`redis.RedisError` and fall back to the process's own state.
"""

import threading

import redis
from django.conf import settings

TIMEOUT = 0.5  # seconds: a slow Redis must not hold requests up

_lock = threading.Lock()
_client: redis.Redis | None = None
_url = ""


def client() -> redis.Redis | None:
    global _client, _url
    url = settings.REDIS_URL
    if not url:
        return None
    if _client is None or _url != url:  # (tests switch REDIS_URL on and off)
        with _lock:
            if _client is None or _url != url:
                _client = redis.Redis.from_url(
                    url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
                )
                _url = url
    return _client
