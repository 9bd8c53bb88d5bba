"""Create an upstream channel, or update one by name.

The key is stored encrypted and never printed. Options not given keep their current value on
update; a new channel needs --base-url, --key and --models (a mock channel only --models: it
answers inside the router and calls nothing). --model-map is merged into the channel's map
(public= removes an entry). A base URL that does not end in a version segment (/v1, /v1beta,
/api/v3) gets a warning; --check probes the channel once it is saved.
"""

import argparse
import re
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from airouter.arguments import (
    decimal_or_none,
    int_or_none,
    name_list,
    seconds_or_none,
    validation_as_command_error,
)
from channels_app import health
from channels_app.models import Channel
from channels_app.provisioning import parse_model_map, save_channel


class Command(BaseCommand):
    help = "Create or update a channel (upstream base URL, key, models, groups, priority, prices)."
    requires_system_checks = []  # like createsuperuser: `check` and `migrate` report them

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--kind",
            choices=[kind.value for kind in Channel.Kind],
            help="What the upstream speaks: openai (OpenAI-compatible, the default for a new "
            "channel) or anthropic (Anthropic's Messages API); mock: no upstream, the router "
            "answers every API itself (to try routing and billing without a provider key).",
        )
        parser.add_argument(
            "--responses-api",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="An openai channel whose upstream serves /v1/responses itself (Responses "
            "requests pass through instead of being converted to chat completions).",
        )
        parser.add_argument("--base-url", help="Up to and including /v1.")
        parser.add_argument("--key", help="The upstream API key (stored encrypted).")
        parser.add_argument("--models", help="Comma-separated model names: m1,m2")
        parser.add_argument("--groups", help="Comma-separated group names it serves: g1,g2")
        parser.add_argument("--priority", help="Higher tiers are tried first (default 0).")
        parser.add_argument("--weight", help="Share of traffic inside its tier (default 1).")
        parser.add_argument("--input-price", help="Price per 1M prompt tokens.")
        parser.add_argument("--output-price", help="Price per 1M completion tokens.")
        parser.add_argument(
            "--cached-input-price",
            help="Price per 1M prompt tokens read from the cache (unset: the input price).",
        )
        parser.add_argument(
            "--cache-write-price",
            help="Price per 1M prompt tokens written to the cache (unset: the input price).",
        )
        parser.add_argument(
            "--model-map",
            help="public=upstream,... name rewrites, merged into the channel's map: entries "
            "not named keep their value, public= (empty upstream) removes one. Each public "
            "name must be one of the channel's models.",
        )
        parser.add_argument("--connect-timeout", help="Seconds to open a connection (default 5).")
        parser.add_argument(
            "--read-timeout", help="Longest silence between bytes, in seconds (default 60)."
        )
        parser.add_argument(
            "--total-timeout",
            help="Longest a whole non-stream answer may take, in seconds (default 600).",
        )
        parser.add_argument(
            "--mock-delay-ms",
            help="A mock channel: milliseconds before it answers (a stream: before its first "
            "event, then a tenth of this between events). Default 0.",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Probe the channel once saved (as check_channels does) and report the result; "
            "exit non-zero if it fails.",
        )

    def handle(self, *args, **options):
        with validation_as_command_error():
            model_map = options["model_map"]
            saved = save_channel(
                options["name"],
                base_url=options["base_url"],
                key=options["key"],
                models=name_list(options["models"]),
                group_names=name_list(options["groups"]),
                priority=int_or_none(options["priority"], "--priority"),
                weight=int_or_none(options["weight"], "--weight"),
                input_price=decimal_or_none(options["input_price"], "--input-price"),
                output_price=decimal_or_none(options["output_price"], "--output-price"),
                cached_input_price=decimal_or_none(
                    options["cached_input_price"], "--cached-input-price"
                ),
                cache_write_price=decimal_or_none(
                    options["cache_write_price"], "--cache-write-price"
                ),
                kind=options["kind"],
                connect_timeout=seconds_or_none(options["connect_timeout"], "--connect-timeout"),
                read_timeout=seconds_or_none(options["read_timeout"], "--read-timeout"),
                total_timeout=seconds_or_none(options["total_timeout"], "--total-timeout"),
                mock_delay_ms=int_or_none(options["mock_delay_ms"], "--mock-delay-ms"),
                responses_api=options["responses_api"],
                model_map=parse_model_map(model_map) if model_map is not None else None,
            )
        channel = saved.channel
        if saved.created:
            groups = ", ".join(channel.groups.values_list("name", flat=True)) or "no group"
            summary = f"Created channel '{channel.name}' serving {groups}."
        elif saved.changed:
            summary = f"Updated channel '{channel.name}': {', '.join(saved.changed)}."
        else:
            summary = f"Channel '{channel.name}' already exists with these settings."
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(summary))
        if options["base_url"] is not None or saved.created:
            warning = base_url_warning(channel)
            if warning:
                self.stderr.write(self.style.WARNING(warning))
        if options["check"]:
            self.check_channel(channel, options["verbosity"])

    def check_channel(self, channel, verbosity):
        result = health.probe(channel)
        status = result.status if result.status is not None else "-"
        line = f"Check: {'OK' if result.ok else 'FAIL'} status={status} {result.latency_ms} ms"
        if not result.ok:
            raise CommandError(f"{line} {result.error}")
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(line))


# The path of a base URL ends in the API version: /v1, /v1beta, /api/v3, /openai/v2alpha...
VERSION_SEGMENT = re.compile(r"/v\d+[a-z0-9]*$", re.IGNORECASE)


def base_url_warning(channel) -> str:
    """A warning when the base URL's path does not end in a version segment (the router
    appends the endpoint, e.g. chat/completions, to it); '' when it does, or for a mock."""
    if channel.kind == Channel.Kind.MOCK:
        return ""
    path = urlsplit(channel.base_url).path.rstrip("/")
    if VERSION_SEGMENT.search(path):
        return ""
    return (
        f"Warning: the base URL {channel.base_url} does not end in a version segment such as "
        "/v1, /v1beta or /api/v3: the router appends the endpoint (chat/completions) to it, "
        "so clients would see the upstream's 404. Saved anyway."
    )
