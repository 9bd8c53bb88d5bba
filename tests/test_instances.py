"""Two gunicorn instances on two ports sharing one database, as in production.

They serve the same tokens with one consistent balance, and a routing change made anywhere
reaches both at once through Redis (their own cache would keep it for an hour).
"""

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from billing.models import UsageRecord
from channels_app.models import Channel
from groups.models import User
from tests.relay_setup import routed

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.django_db(transaction=True)


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    host = db["HOST"] or "127.0.0.1"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def instances(tmp_path):
    """Start two routers; yield their base URLs; stop them."""
    redis.Redis.from_url(REDIS_URL).ping()  # Redis must be up (.ci/run starts it)
    env = dict(
        os.environ,
        DATABASE_URL=database_url(),
        REDIS_URL=REDIS_URL,
        ROUTING_CACHE_TTL="3600",
        SECRET_KEY=settings.SECRET_KEY,
        CHANNEL_KEY_ENCRYPTION_KEYS=",".join(settings.CHANNEL_KEY_ENCRYPTION_KEYS),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="16",
        DEBUG="false",
    )
    procs, urls = [], []
    for n in range(2):
        port = free_port()
        log = open(tmp_path / f"instance-{n}.log", "wb")  # noqa: SIM115 (closed below)
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "airouter.wsgi"],
                    cwd=ROOT,
                    env=dict(env, BIND=f"127.0.0.1:{port}"),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{url}/v1/models", timeout=1).status_code == 401:
                        break
                except requests.RequestException:
                    pass  # not listening yet, or still importing Django
                assert time.monotonic() < deadline, (tmp_path / "instance-0.log").read_text()
                time.sleep(0.1)
        yield urls
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()


def ask(url, key, max_tokens=100):
    return requests.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
        },
        timeout=20,
    )


def test_two_instances_share_one_balance(instances, fake_upstream):
    n = 4  # after one request on each instance the balance covers n more; 3n arrive
    start = Decimal("0.1") * (n + 2)
    token, key, _ = routed(fake_upstream, balance=str(start), input_price=0, output_price=1000)
    fake_upstream.configure(completion_tokens="max_tokens", delay=0.2)
    assert [ask(url, key).status_code for url in instances] == [200, 200]  # both serve it
    with ThreadPoolExecutor(3 * n) as pool:
        answers = list(pool.map(lambda i: ask(instances[i % 2], key), range(3 * n)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429}
    assert 0 < codes.count(200) <= n
    final = User.objects.get(pk=token.owner_id).balance
    assert final >= 0
    spent = UsageRecord.objects.aggregate(total=Sum("cost"))["total"]
    assert spent == start - final
    assert UsageRecord.objects.filter(status="success").count() == codes.count(200) + 2


def test_a_routing_change_reaches_every_instance_at_once(instances, fake_upstream, settings):
    settings.REDIS_URL = REDIS_URL
    token, key, channel = routed(fake_upstream)
    assert all(ask(url, key, max_tokens=5).status_code == 200 for url in instances)
    channel.status = Channel.Status.DISABLED
    channel.save()  # autocommit: published to Redis right after
    deadline = time.monotonic() + 2  # their own cache would hold the old table for an hour
    for url in instances:
        while (status := ask(url, key, max_tokens=5).status_code) == 200:
            assert time.monotonic() < deadline, f"{url} still routes to the disabled channel"
            time.sleep(0.02)
        assert status == 503
