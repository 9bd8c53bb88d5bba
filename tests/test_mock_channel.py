"""The built-in `mock` channel kind (no upstream: the router answers itself) through the
official SDKs, billed like any channel; its options; and the demo `make run` seeds with it."""

import re
import time
from decimal import Decimal
from io import StringIO
from types import SimpleNamespace

import anthropic
import pytest
from django.core.management import CommandError, call_command

from billing.models import UsageRecord
from channels_app import mock
from channels_app.management.commands import seed_demo
from channels_app.models import Channel
from channels_app.provisioning import MOCK_BASE_URL, save_channel
from tests.factories import make_group, make_token, make_user
from tests.relay_setup import post, sdk
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "mock-1"
PRICES = {"input_price": Decimal("1"), "output_price": Decimal("2")}
MULTIPLIER = Decimal("1.5")


def run(*args, **kw) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **kw)
    return out.getvalue()


def mock_channel(name="mock", group="pro", **kw):
    kw = {"models": [MODEL], "group_names": [group], **PRICES, **kw}
    return save_channel(name, kind=Channel.Kind.MOCK, **kw).channel


@pytest.fixture
def key(db):
    """A key of a user in group pro (multiplier 1.5), which a mock channel serves."""
    pro = make_group("pro", multiplier=MULTIPLIER, pricing_confirmed=True)
    mock_channel()
    _, key = make_token(make_user("mia", group=pro, balance=Decimal("10")))
    return key


def claude(live_server, key):
    return anthropic.Anthropic(
        api_key=key,
        base_url=live_server.url,
        max_retries=0,
        timeout=10,
        default_headers={"Connection": "close"},
    )


def billed(endpoint: str, prompt: int, completion: int) -> UsageRecord:
    """The request's usage record, asserted settled with these tokens at the channel's rates."""
    record = UsageRecord.objects.get(endpoint=endpoint)
    assert (record.status, record.channel.name) == ("success", "mock")
    assert (record.prompt_tokens, record.completion_tokens) == (prompt, completion)
    assert not record.estimated
    expected = (prompt * 1 + completion * 2) * MULTIPLIER / Decimal(1_000_000)
    assert record.cost == expected and record.cost > 0
    return record


# --- OpenAI's APIs ---------------------------------------------------------------------


def test_openai_sdk_chat_is_answered_and_billed(live_server, key):
    raw = sdk(live_server, key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Mock answer to: Say hello"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == MODEL
    assert raw.headers["x-airouter-channel"] == "mock"
    usage = answer.usage
    assert usage.prompt_tokens == 3  # "Say hello": 9 characters, ~4 a token
    assert usage.completion_tokens == 7  # "Mock answer to: Say hello": 25 characters
    billed("chat/completions", 3, 7)


def test_openai_sdk_chat_stream_is_answered_and_billed(live_server, key):
    chunks = list(
        sdk(live_server, key).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock answer to: Tell me a story"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (4, 8)
    assert billed("chat/completions", 4, 8).stream


def test_a_stream_that_asks_no_usage_gets_none_and_is_billed_all_the_same(live_server, key):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = post(live_server, "/v1/chat/completions", key, json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert '"usage"' not in response.text and response.text.endswith("data: [DONE]\n\n")
    billed("chat/completions", 1, 5)


def test_max_tokens_cuts_the_answer_as_a_model_would(live_server, key):
    answer = sdk(live_server, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], max_tokens=2
    )
    assert answer.choices[0].message.content == "Mock ans"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 2


def test_openai_sdk_completions(live_server, key):
    answer = sdk(live_server, key).completions.create(model=MODEL, prompt="Once upon a time")
    assert answer.choices[0].text == "Mock answer to: Once upon a time"
    billed("completions", 4, 8)


def test_openai_sdk_embeddings_are_unit_vectors_the_same_for_the_same_text(live_server, key):
    client = sdk(live_server, key)
    first = client.embeddings.create(model=MODEL, input=["hello", "world"])  # base64 on the wire
    assert [len(e.embedding) for e in first.data] == [16, 16]
    assert abs(sum(x * x for x in first.data[0].embedding) - 1) < 1e-3
    assert first.data[0].embedding != first.data[1].embedding
    again = client.embeddings.create(
        model=MODEL, input="hello", encoding_format="float", dimensions=16
    )
    assert again.data[0].embedding == pytest.approx(first.data[0].embedding, abs=1e-5)
    assert (
        len(client.embeddings.create(model=MODEL, input="x", dimensions=8).data[0].embedding) == 8
    )
    assert first.usage.prompt_tokens == 3  # "hello" + "world": 10 characters
    records = UsageRecord.objects.filter(endpoint="embeddings", status="success")
    assert records.count() == 3
    assert {(r.prompt_tokens, r.completion_tokens) for r in records} == {(3, 0), (2, 0), (1, 0)}


def test_openai_sdk_responses(live_server, key):
    client = sdk(live_server, key)
    answer = client.responses.create(model=MODEL, input="Say hello", instructions="Be brief.")
    assert answer.output_text == "Mock answer to: Say hello"
    assert answer.status == "completed"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (5, 7)  # 18 characters in
    billed("responses", 5, 7)


def test_openai_sdk_responses_stream(live_server, key):
    events = list(
        sdk(live_server, key).responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
            stream=True,
        )
    )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Mock answer to: Say hello"
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == text
    assert (final.response.usage.input_tokens, final.response.usage.output_tokens) == (3, 7)
    billed("responses", 3, 7)


# --- Anthropic's API -------------------------------------------------------------------


def test_anthropic_sdk_messages(live_server, key):
    message = claude(live_server, key).messages.create(
        model=MODEL,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert message.content[0].text == "Mock answer to: Say hello"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 7)
    billed("messages", 5, 7)


def test_anthropic_sdk_messages_stream(live_server, key):
    with claude(live_server, key).messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Mock answer to: Say hello"
    assert final.usage.output_tokens == 7
    assert billed("messages", 3, 7).stream


def test_anthropic_sdk_count_tokens_is_free(live_server, key):
    counted = claude(live_server, key).messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Say hello there"}]
    )
    assert counted.input_tokens == 4
    assert not UsageRecord.objects.exists()


# --- the delay ---------------------------------------------------------------------------


def test_the_delay_comes_before_the_first_byte(live_server, key):
    save_channel("mock", mock_delay_ms=300)
    started = time.monotonic()
    sdk(live_server, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert time.monotonic() - started >= 0.3
    list(
        sdk(live_server, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert UsageRecord.objects.get(stream=True).ttft_ms >= 300


def test_a_delay_past_the_timeout_fails_over_like_a_silent_upstream(live_server, key):
    mock_channel("slow", priority=10, mock_delay_ms=2000, read_timeout=0.2)
    response = sdk(live_server, key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert response.headers["x-airouter-channel"] == "mock"
    assert Channel.objects.get(name="slow").last_error == "sent nothing for 0.2s"
    assert UsageRecord.objects.get().attempts == 2


def test_the_mock_stream_reads_like_an_upstream_response():
    stream = mock.MockStream([b"data: one\n\n", b"data: two\n\n"])
    assert stream.read1(4) == b"data"
    assert stream.read1(65536) == b": one\n\n"
    stream.close()
    assert stream.read1(65536) == b""
    stream.release_conn()


# --- operating it ----------------------------------------------------------------------


NEW_MOCK = ["--kind", "mock", "--models", "m1"]
NEW_OPENAI = ["--models", "m1", "--base-url", "https://x.example/v1", "--key", "k"]


def test_create_channel_mock_needs_no_base_url_nor_key():
    make_group("pro")
    out = run("create_channel", "m", *NEW_MOCK, "--groups", "pro", "--mock-delay-ms", "250")
    assert "Created channel 'm' serving pro." in out
    channel = Channel.objects.get(name="m")
    assert (channel.kind, channel.model_list) == ("mock", ["m1"])
    assert (channel.mock_delay_ms, channel.base_url) == (250, MOCK_BASE_URL)
    assert not channel.has_key
    out = run("create_channel", "m", "--mock-delay-ms", "0")
    assert "Updated channel 'm': mock_delay_ms." in out


@pytest.mark.parametrize(
    "args, message",
    [
        ([*NEW_OPENAI, "--mock-delay-ms", "5"], "Only a mock channel has a mock delay"),
        ([*NEW_MOCK, "--mock-delay-ms", "-1"], "mock_delay_ms"),
        ([*NEW_MOCK, "--mock-delay-ms", "soon"], "is not a whole number"),
        ([*NEW_MOCK, "--responses-api"], "Only an OpenAI-compatible channel"),
        (["--kind", "mock"], "A new channel needs: models."),
    ],
)
def test_create_channel_refuses_bad_mock_options(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_channel", "bad", *args)
    assert not Channel.objects.filter(name="bad").exists()


def test_route_and_check_channels_take_a_mock_channel(key):
    mock_channel("embedder", models=["text-embedding-mock"])
    prefix = Token.objects.get().key_prefix
    for endpoint in ("completions", "embeddings", "messages", "responses"):
        out = run("route", token=prefix, model=MODEL, endpoint=endpoint)
        assert " mock " in out, endpoint
    out = run("check_channels")
    assert "mock: OK status=200" in out and "embedder: OK status=200" in out
    assert Channel.objects.get(name="mock").last_checked is not None


def test_admin_lists_the_mock_kind(admin_client, key):
    page = admin_client.get("/admin/channels_app/channel/")
    assert page.status_code == 200
    assert "Mock (built in: answers itself, no upstream)" in page.content.decode()


# --- the demo `make run` seeds -----------------------------------------------------------


@pytest.fixture
def fresh(monkeypatch):
    """A fresh database with the admin `make run` makes, AIROUTER_DEMO unset, on SQLite (as
    far as the command can tell: the tests run on either database)."""
    monkeypatch.delenv("AIROUTER_DEMO", raising=False)
    monkeypatch.delenv("AIROUTER_ADMIN_USER", raising=False)
    monkeypatch.setattr(seed_demo, "connection", SimpleNamespace(vendor="sqlite"))
    run("ensure_admin")


def test_the_demo_is_seeded_once_and_its_key_works(live_server, fresh):
    out = run("seed_demo", "--base-url", live_server.url)
    key = re.search(r"Bearer (sk-\S+)\"", out).group(1)
    assert f"curl {live_server.url}/v1/chat/completions" in out
    curl = out[out.index("curl ") :]
    body = re.search(r"-d '(.*)'", curl).group(1)

    response = post(
        live_server,
        "/v1/chat/completions",
        key,
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Mock answer to: Say hello"
    assert (response.headers["x-airouter-group"], response.headers["x-airouter-channel"]) == (
        "default",
        "demo",
    )
    record = UsageRecord.objects.get()
    assert (record.user.username, record.status) == ("admin", "success")
    assert record.cost == Decimal("0.000017")  # (3 x 1 + 7 x 2) / 1M

    again = run("seed_demo", "--base-url", live_server.url)
    assert "sk-" not in again and "nothing to do" in again
    assert Channel.objects.count() == 1


def test_the_demo_leaves_a_database_with_channels_alone(fresh):
    make_group("pro")
    mock_channel("mine")
    assert "nothing to do" in run("seed_demo")
    assert not Channel.objects.filter(name="demo").exists()


def test_airouter_demo_false_skips_it(fresh, monkeypatch):
    monkeypatch.setenv("AIROUTER_DEMO", "false")
    assert run("seed_demo") == "Demo: off (AIROUTER_DEMO=false).\n"
    assert not Channel.objects.exists()
    monkeypatch.setenv("AIROUTER_DEMO", "maybe")
    with pytest.raises(CommandError, match="AIROUTER_DEMO: 'maybe' is not true or false"):
        run("seed_demo")


def test_on_postgresql_only_airouter_demo_true_seeds_it(fresh, monkeypatch):
    monkeypatch.setattr(seed_demo, "connection", SimpleNamespace(vendor="postgresql"))
    assert "Demo: off on postgresql (AIROUTER_DEMO=true" in run("seed_demo")
    assert not Channel.objects.exists()
    monkeypatch.setenv("AIROUTER_DEMO", "true")
    assert "sk-" in run("seed_demo", verbosity=0)  # the key is shown whatever the verbosity
    assert Channel.objects.get().name == "demo"


def test_dry_run_writes_nothing(fresh):
    assert run("seed_demo", "--dry-run") == "Would seed the demo for 'admin'.\n"
    assert not Channel.objects.exists()


def test_the_admin_adds_a_mock_channel_without_url_or_key(admin_client):
    from django.urls import reverse

    from tests.test_admin import channel_form

    response = admin_client.post(
        reverse("admin:channels_app_channel_add"),
        channel_form(name="mocky", kind="mock", base_url="", key="", mock_delay_ms="5"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = Channel.objects.get(name="mocky")
    assert (channel.kind, channel.mock_delay_ms, channel.has_key) == ("mock", 5, False)
    response = admin_client.post(
        reverse("admin:channels_app_channel_add"), channel_form(name="real", base_url="", key="")
    )
    assert response.content.decode().count("This field is required.") == 2  # URL and key
