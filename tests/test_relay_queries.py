"""The hot path's database cost: at most 4 round trips per proxied request in the steady state
(token, hold, pending usage record, settle); a token with a spend limit holds on itself too.

Django's test client runs the view in this thread, so every query is counted (live_server would
run it in another thread, out of sight of the counter).
"""

import json
from decimal import Decimal

import pytest

from billing.models import UsageRecord
from tests.factories import make_token
from tests.relay_setup import routed

pytestmark = pytest.mark.django_db

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def send(client, key, **extra):
    response = client.post(
        "/v1/chat/completions",
        json.dumps(dict(BODY, **extra)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    if response.streaming:
        b"".join(response.streaming_content)
    assert response.status_code == 200
    return response


@pytest.mark.parametrize("stream", [False, True])
def test_a_proxied_request_costs_at_most_four_queries(
    client, fake_upstream, django_assert_max_num_queries, stream
):
    token, key, _ = routed(fake_upstream)
    _, limited_key = make_token(token.owner, spend_limit=Decimal("10"))
    send(client, key)  # warm up: the routing table, the channel's first latency note
    with django_assert_max_num_queries(4):
        send(client, key, stream=stream)
    # A token with a spend limit holds on itself as well: one more.
    with django_assert_max_num_queries(5):
        send(client, limited_key, stream=stream)
    assert UsageRecord.objects.filter(status="success").count() == 3
