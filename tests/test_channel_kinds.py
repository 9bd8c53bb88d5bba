"""Channel kinds and cache prices as operators meet them: create_channel, route, check_channels
and the admin."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from channels_app.models import Channel
from tests.factories import make_channel, make_group, make_token, make_user
from tests.test_admin import channel_form

pytestmark = pytest.mark.django_db


def run(*args, **kw) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **kw)
    return out.getvalue()


BASE = ["--base-url", "https://api.anthropic.com/v1", "--key", "sk-ant-x", "--models", "claude"]


def test_create_channel_kind_flag_and_cache_prices():
    make_group("pro")
    run(
        "create_channel",
        "claude",
        *BASE,
        "--groups",
        "pro",
        "--kind",
        "anthropic",
        "--input-price",
        "3",
        "--cached-input-price",
        "0.3",
        "--cache-write-price",
        "3.75",
    )
    channel = Channel.objects.get(name="claude")
    assert (channel.kind, channel.responses_api) == ("anthropic", False)
    assert (channel.cached_input_price, channel.cache_write_price) == (
        Decimal("0.3"),
        Decimal("3.75"),
    )
    run("create_channel", "gpt", *BASE, "--responses-api")
    assert Channel.objects.get(name="gpt").kind == "openai"  # the default kind
    assert Channel.objects.get(name="gpt").responses_api
    out = run("create_channel", "gpt", "--no-responses-api")
    assert "Updated channel 'gpt': responses_api." in out
    assert not Channel.objects.get(name="gpt").responses_api


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kind", "anthropic", "--responses-api"], "Only an OpenAI-compatible channel"),
        (["--kind", "gemini"], "invalid choice: 'gemini'"),
        (["--cached-input-price", "-1"], "cached_input_price: Prices cannot be negative."),
    ],
)
def test_create_channel_refuses_bad_kinds_and_prices(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_channel", "bad", *BASE, *args)
    assert not Channel.objects.filter(name="bad").exists()


def test_route_leaves_out_kinds_that_cannot_serve_the_endpoint():
    pro = make_group("pro")
    make_channel("claude", groups=[pro], kind="anthropic")
    make_channel("gpt", groups=[pro], responses_api=True)
    token, _ = make_token(make_user("nia", group=pro))
    out = run(
        "route", token=token.key_prefix, model="gpt-4o-mini", endpoint="completions", verbosity=2
    )
    assert "channel claude is of kind anthropic, which cannot serve /v1/completions" in out
    lines = out.splitlines()
    assert any(line.split()[2:4] == ["gpt", "openai+responses"] for line in lines)
    out = run("route", token=token.key_prefix, model="gpt-4o-mini", endpoint="messages")
    assert "claude" in out and "anthropic" in out


def test_check_channels_probes_each_kind_with_its_own_request(fake_upstream_factory):
    claude, embed = fake_upstream_factory(), fake_upstream_factory()
    make_channel("claude", base_url=claude.url, kind="anthropic", model_names="claude-haiku")
    make_channel("embed", base_url=embed.url, model_names="text-embedding-3-small")
    out = run("check_channels")
    assert "claude: OK status=200" in out and "embed: OK status=200" in out
    probe = claude.requests[-1]
    assert probe.path == "/v1/messages"
    assert probe.headers["x-api-key"] == "sk-upstream-secret"
    assert probe.headers["anthropic-version"] == "2023-06-01"
    assert (probe.json["model"], probe.json["max_tokens"]) == ("claude-haiku", 1)
    assert embed.requests[-1].path == "/v1/embeddings"


def test_check_channels_fails_a_channel_answering_nonsense(fake_upstream):
    make_channel("odd", base_url=fake_upstream.url)
    fake_upstream.configure(body=b"<html>maintenance</html>")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_channels", stdout=out)
    assert "odd: FAIL status=200" in out.getvalue() and "not a valid answer" in out.getvalue()


def test_admin_edits_the_kind_the_flag_and_cache_prices(admin_client):
    pro = make_group("pro")
    url = reverse("admin:channels_app_channel_add")
    html = admin_client.get(url).content.decode()
    assert 'name="responses_api"' in html and 'value="anthropic"' in html
    assert 'name="cached_input_price"' in html and 'name="cache_write_price"' in html
    response = admin_client.post(
        url,
        channel_form(
            groups=[pro.pk],
            key="sk-ant-typed",
            kind="anthropic",
            cached_input_price="0.3",
            cache_write_price="",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = Channel.objects.get(name="up-1")
    assert (channel.kind, channel.cached_input_price, channel.cache_write_price) == (
        "anthropic",
        Decimal("0.3"),
        None,
    )
    response = admin_client.post(
        url, channel_form(name="up-2", key="k", kind="anthropic", responses_api="on")
    )
    assert (
        "Only an OpenAI-compatible channel can serve the Responses API."
        in response.content.decode()
    )
    listing = admin_client.get(reverse("admin:channels_app_channel_changelist")).content.decode()
    assert "Anthropic" in listing


def test_create_channel_sets_timeouts():
    run("create_channel", "slow", *BASE, "--total-timeout", "30", "--read-timeout", "20")
    channel = Channel.objects.get(name="slow")
    assert (channel.total_timeout, channel.read_timeout, channel.connect_timeout) == (30, 20, 5)
    with pytest.raises(CommandError, match="--total-timeout: '0' must be more than 0 seconds."):
        run("create_channel", "slow", "--total-timeout", "0")
