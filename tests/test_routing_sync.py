"""Routing changes reach every instance at once through Redis when REDIS_URL is set."""

import time

import pytest
import redis

from channels_app import routing_sync, routing_table
from tests.factories import make_group

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.django_db


@pytest.fixture
def with_redis(settings):
    settings.REDIS_URL = REDIS_URL
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # Redis must be up (.ci/run starts it): fail loudly, never skip
    return client


def wait_for(condition, seconds=3.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_change_published_by_another_instance_drops_this_table(with_redis, settings):
    settings.ROUTING_CACHE_TTL = 3600  # only Redis can make this table stale
    table = routing_table.get_table()
    assert routing_table.get_table() is table
    with_redis.publish(routing_sync.CHANNEL, b"1")  # another instance saved something
    assert wait_for(lambda: routing_table.get_table() is not table)


def test_saving_a_group_publishes_the_change_after_commit(
    with_redis, django_capture_on_commit_callbacks
):
    listener = with_redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(routing_sync.CHANNEL)
    listener.get_message(timeout=1)
    with django_capture_on_commit_callbacks(execute=True):
        make_group("team", multiplier="2")
    message = listener.get_message(timeout=2)
    assert message is not None and message["channel"] == routing_sync.CHANNEL.encode()
    listener.close()


def test_without_redis_the_table_lives_for_the_ttl(settings):
    settings.REDIS_URL = ""
    settings.ROUTING_CACHE_TTL = 0.2
    table = routing_table.get_table()
    assert routing_table.get_table() is table
    assert wait_for(lambda: routing_table.get_table() is not table, seconds=2)
