"""Cross-instance invalidation of the routing table through Redis pub/sub.

Without REDIS_URL every instance re-reads its table after ROUTING_CACHE_TTL seconds. With it,
a change saved on one instance is published on a channel; every process listens on a daemon
thread (started on first use, so after gunicorn forks) and drops its table the moment the
message arrives. The TTL stays as the backstop should Redis be unreachable.
"""

import logging
import threading
import time

import redis
from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL = "airouter:routing-changed"
RECONNECT_DELAY = 1.0
MAX_RECONNECT_DELAY = 30.0

_lock = threading.Lock()
_listener: threading.Thread | None = None
_publisher: redis.Redis | None = None


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def publish() -> None:
    """Tell every instance its routing table is stale. Never fails the caller's save."""
    global _publisher
    if not enabled():
        return
    try:
        if _publisher is None:
            _publisher = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1)
        _publisher.publish(CHANNEL, b"1")
    except redis.RedisError as exc:
        log.warning("Could not publish a routing change to Redis: %s", exc)


def ensure_listener(on_change) -> None:
    """Start this process's listener once; on_change() runs for every published change."""
    global _listener
    if not enabled() or (_listener is not None and _listener.is_alive()):
        return
    with _lock:
        if _listener is not None and _listener.is_alive():
            return
        ready = threading.Event()
        _listener = threading.Thread(
            target=_listen,
            args=(settings.REDIS_URL, on_change, ready),
            name="routing-sync",
            daemon=True,
        )
        _listener.start()
    ready.wait(timeout=1)  # subscribed (or gave up for now): changes from here on are seen


def _listen(url: str, on_change, ready: threading.Event) -> None:
    delay = RECONNECT_DELAY
    client = redis.Redis.from_url(url)
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            pubsub.get_message(timeout=1)  # the subscribe confirmation
            on_change()  # anything published while we were not listening
            ready.set()
            delay = RECONNECT_DELAY
            for _message in pubsub.listen():
                on_change()
        except redis.RedisError as exc:
            ready.set()
            if delay == RECONNECT_DELAY:  # say it once per outage, not every retry
                log.warning("Routing sync lost Redis (%s); the TTL applies meanwhile", exc)
            time.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY)
        finally:
            pubsub.close()
