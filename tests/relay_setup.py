"""Shared set-up for the relay tests: a routed token, an SDK client, a raw client."""

from decimal import Decimal

import openai
import requests

from groups.models import User
from tests.factories import make_channel, make_group, make_token, make_user


def sdk(live_server, key, **kw):
    """The official openai client pointed at the relay; no retries, short timeouts."""
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10)
    # No keep-alive: a live-server thread idling on an open connection outlives its test.
    kw.setdefault("default_headers", {"Connection": "close"})
    return openai.OpenAI(api_key=key, base_url=f"{live_server.url}/v1", **kw)


def post(live_server, path, key=None, json=None, data=None, headers=None, **kw):
    headers = dict(headers or {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(
        f"{live_server.url}{path}", json=json, data=data, headers=headers, timeout=10, **kw
    )


def stream_post(live_server, key, model="gpt-4o-mini", headers=None, **body):
    """A raw streamed chat request (read whole): for asserting on the SSE bytes themselves."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True, **body}
    return post(live_server, "/v1/chat/completions", key, json=body, headers=headers)


def routed(upstream, *, group="pro", multiplier="1", balance="100", channel="ch-a", **channel_kw):
    """A group with one channel on `upstream`, a user in it with credit, and a token.

    Returns (token, key, channel).
    """
    grp = make_group(group, multiplier=Decimal(multiplier), pricing_confirmed=True)
    user = User.objects.filter(username=f"user-{group}").first() or make_user(
        f"user-{group}", group=grp, balance=Decimal(balance)
    )
    channel_kw.setdefault("input_price", Decimal("1"))
    channel_kw.setdefault("output_price", Decimal("2"))
    ch = make_channel(channel, groups=[grp], base_url=upstream.url, **channel_kw)
    token, key = make_token(user)
    return token, key, ch


def chat(client, model="gpt-4o-mini", **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], **kw
    )
