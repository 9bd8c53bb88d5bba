"""Multiplier billing through the relay: holds, settles, failures, disconnects, concurrency."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import urlsplit

import openai
import pytest
from django.db.models import Sum

from billing.models import UsageRecord
from groups.models import User
from tests.factories import make_token
from tests.relay_setup import chat, routed, sdk
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)


def balance(user_id) -> Decimal:
    return User.objects.values_list("balance", flat=True).get(pk=user_id)


def test_the_hold_covers_the_worst_case_then_becomes_the_cost(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream, multiplier="2", input_price=0, output_price=1000)
    fake_upstream.configure(delay=0.5, completion_tokens=10)
    client = sdk(live_server, key)
    with ThreadPoolExecutor(1) as pool:
        request = pool.submit(chat, client, max_tokens=50)
        seen = {balance(token.owner_id)}
        while not request.done():  # watch the balance while the upstream works
            seen.add(balance(token.owner_id))
            time.sleep(0.01)
        request.result()
    # While the upstream works: 50 tokens x 1000/1M x 2 = 0.1 held.
    assert Decimal("99.9") in seen
    assert min(seen) == Decimal("99.9")
    # After: 10 tokens x 1000/1M x 2 = 0.02.
    assert balance(token.owner_id) == Decimal("99.98")
    assert UsageRecord.objects.get().cost == Decimal("0.02")


def test_without_max_tokens_the_configured_cap_is_held(live_server, fake_upstream, settings):
    settings.RELAY_DEFAULT_MAX_TOKENS = 100
    token, key, _ = routed(fake_upstream, balance="0.0999", input_price=0, output_price=1000)
    with pytest.raises(openai.RateLimitError):
        chat(sdk(live_server, key))  # holds 100 x 1000/1M = 0.1
    assert chat(sdk(live_server, key), max_tokens=99).choices
    assert fake_upstream.requests and len(fake_upstream.requests) == 1


def test_the_hold_uses_the_highest_rate_of_the_planned_attempts(live_server, fake_upstream_factory):
    cheap, dear = fake_upstream_factory(), fake_upstream_factory()
    token, key, _ = routed(cheap, input_price=0, output_price=1, priority=2, balance="0.05")
    routed(dear, channel="ch-dear", input_price=0, output_price=1000)
    # ch-dear is in the same group ("pro"): 100 tokens at 1000/1M is 0.1 > the balance.
    with pytest.raises(openai.RateLimitError):
        chat(sdk(live_server, key), max_tokens=100)
    assert cheap.requests == [] and dear.requests == []


def test_a_request_no_upstream_answered_costs_nothing(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream, output_price=1000)
    fake_upstream.configure(status=502)
    with pytest.raises(openai.InternalServerError):
        chat(sdk(live_server, key))
    assert balance(token.owner_id) == Decimal("100")
    record = UsageRecord.objects.get()
    assert (record.status, record.cost, record.held > 0) == ("upstream_error", 0, True)
    assert "HTTP 502" in record.error
    assert Token.objects.get(pk=token.pk).spent == 0


def test_spend_limit_and_spent_follow_the_costs(live_server, fake_upstream):
    token, _, _ = routed(fake_upstream, input_price=0, output_price=1000)
    limited, key = make_token(token.owner, spend_limit=Decimal("0.05"))
    fake_upstream.configure(completion_tokens=10)  # 0.01 a request
    client = sdk(live_server, key)
    for _ in range(3):
        chat(client, max_tokens=20)  # holds 0.02
    assert Token.objects.get(pk=limited.pk).spent == Decimal("0.03")
    chat(client, max_tokens=20)  # 0.04 spent: 0.01 left, a 0.02 hold does not fit
    with pytest.raises(openai.RateLimitError):
        chat(client, max_tokens=20)
    assert Token.objects.get(pk=limited.pk).spent == Decimal("0.04")
    assert balance(token.owner_id) == Decimal("99.96")


def test_a_client_disconnecting_mid_stream_leaves_a_record(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream, output_price=1000)
    fake_upstream.configure(chunks=["tok "] * 40, chunk_interval=0.05)
    url = urlsplit(live_server.url)
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True}
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"tok" not in received:
            received += sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 200")
    # ...hung up after the first events.

    for _ in range(100):
        record = UsageRecord.objects.exclude(status="pending").first()  # settled
        if record is not None:
            break
        time.sleep(0.05)
    assert record is not None
    assert record.status == "client_disconnected"
    assert record.estimated and 0 < record.completion_tokens < 40
    assert record.cost > 0
    assert balance(token.owner_id) == Decimal("100") - record.cost


def test_concurrent_requests_never_overdraw(live_server, fake_upstream):
    """A balance that covers N requests, 5N at once: at most N succeed, nothing overdraws."""
    n = 5
    # Each request holds, and then costs, exactly 100 x 1000/1M = 0.1 (input price 0).
    token, key, _ = routed(
        fake_upstream, balance=str(Decimal("0.1") * n), input_price=0, output_price=1000
    )
    fake_upstream.configure(completion_tokens="max_tokens", delay=0.2)
    start = threading.Barrier(5 * n)

    def one(_):
        # Retries cover only connections the test server's small listen backlog refused:
        # the relay's 429 says x-should-retry: false.
        client = sdk(live_server, key, max_retries=5)
        start.wait()
        try:
            chat(client, max_tokens=100)
            return "ok"
        except openai.RateLimitError:
            return "quota"

    low = []
    with ThreadPoolExecutor(5 * n) as pool:
        futures = [pool.submit(one, i) for i in range(5 * n)]
        while not all(f.done() for f in futures):  # watch the balance while they run
            low.append(balance(token.owner_id))
            time.sleep(0.01)
        outcomes = [f.result() for f in futures]

    assert 0 < outcomes.count("ok") <= n
    assert outcomes.count("ok") + outcomes.count("quota") == 5 * n
    assert min(low) >= 0
    final = balance(token.owner_id)
    assert final >= 0
    recorded = UsageRecord.objects.aggregate(total=Sum("cost"))["total"]
    assert recorded == Decimal("0.1") * n - final
    assert UsageRecord.objects.filter(status="success").count() == outcomes.count("ok")


def test_an_image_is_held_at_a_fixed_allowance_not_its_size(live_server, fake_upstream):
    # 3.00 covers 2,000 image tokens + the text at 1000/1M, not 150 KB of base64 as tokens.
    token, key, _ = routed(fake_upstream, balance="3", input_price=1000, output_price=0)
    image = "data:image/png;base64," + "A" * 150_000
    completion = sdk(live_server, key).chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            }
        ],
    )
    assert completion.choices
    assert fake_upstream.requests[-1].json["messages"][0]["content"][1]["image_url"]["url"] == image


def test_an_upstream_overrunning_max_tokens_is_charged_what_it_served(live_server, fake_upstream):
    token, key, _ = routed(fake_upstream, balance="0.02", input_price=0, output_price=1000)
    fake_upstream.configure(completion_tokens=500)  # ignores max_tokens=10
    client = sdk(live_server, key)
    chat(client, max_tokens=10)
    record = UsageRecord.objects.get()
    assert record.completion_tokens == 500
    assert (record.held, record.cost) == (Decimal("0.01"), Decimal("0.5"))  # 500 x 1000/1M
    assert record.overrun == Decimal("0.49")  # the record says by how much
    assert balance(token.owner_id) == Decimal("-0.48")  # below zero by one request's overrun
    with pytest.raises(openai.RateLimitError) as refused:  # ... and nothing more
        chat(client, max_tokens=1)
    assert refused.value.code == "insufficient_quota"
    assert UsageRecord.objects.count() == 1


@pytest.mark.parametrize("stream", [False, True])
def test_integral_float_usage_is_usage(live_server, fake_upstream, stream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(prompt_tokens=12.0, completion_tokens=5.0)
    response = chat(sdk(live_server, key), stream=stream)
    if stream:
        list(response)
    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.completion_tokens) == (12, 5)
    assert not record.estimated and not record.usage_corrected


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "reported", [{"prompt_tokens": -3}, {"completion_tokens": 2.5}, {"completion_tokens": 10**12}]
)
def test_nonsense_usage_is_estimated_and_says_so(live_server, fake_upstream, reported, stream):
    token, key, _ = routed(fake_upstream)
    fake_upstream.configure(**reported)
    response = chat(sdk(live_server, key), stream=stream)
    if stream:
        list(response)
    record = UsageRecord.objects.get()
    assert record.status == "success"  # settled: never left pending for release_holds
    assert record.estimated and record.usage_corrected
    assert record.prompt_tokens > 0 and record.completion_tokens == 8  # the 29 characters sent
    assert balance(token.owner_id) == Decimal("100") - record.cost


@pytest.mark.parametrize("stream", [False, True])
def test_an_estimate_counts_tool_calls_and_tool_definitions(live_server, fake_upstream, stream):
    _, key, _ = routed(fake_upstream)
    arguments = {"city": "Paris", "details": "x" * 400}
    fake_upstream.configure(
        usage=False, tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": arguments}]
    )
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "description": "y" * 800, "parameters": {}},
    }
    response = chat(sdk(live_server, key), stream=stream, tools=[tool])
    if stream:
        list(response)
    record = UsageRecord.objects.get()
    assert record.estimated
    assert record.completion_tokens >= 100  # the 400-character arguments, not 0
    assert record.prompt_tokens >= 200  # the 800-character tool description
