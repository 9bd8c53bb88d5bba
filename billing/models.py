from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils.timezone import now

from channels_app.models import PRICE, Channel
from groups.models import MONEY, Group


class UsageRecord(models.Model):
    """One row per relayed request, with the rates and multiplier actually applied.

    A usage record is also the ledger line of its request: written as pending when the hold is
    taken, and settled by turning it into the outcome, which replaces the hold by the cost on
    the user's balance and the token's spend in the same statement (a database trigger on
    that transition: migration billing 0002 and billing/ledger.py). Writing a record any other
    way moves no money.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "In flight (hold taken)"
        SUCCESS = "success", "Success"
        CLIENT_DISCONNECTED = "client_disconnected", "Client disconnected"
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        STREAM_ERROR = "stream_error", "Failed mid-stream"
        ABANDONED = "abandoned", "Never settled (hold given back)"

    request_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="usage"
    )
    token = models.ForeignKey(
        "tokens.Token", on_delete=models.SET_NULL, null=True, related_name="usage"
    )
    group = models.ForeignKey(Group, on_delete=models.SET_NULL, null=True, related_name="usage")
    channel = models.ForeignKey(
        Channel, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    # The names as they were when the record was written (the user) or settled (the group and
    # channel that served): what the record still says once the row behind a reference is gone.
    username = models.CharField(max_length=150, blank=True, default="")
    group_name = models.CharField(max_length=100, blank=True, default="")
    channel_name = models.CharField(max_length=100, blank=True, default="")
    endpoint = models.CharField(max_length=40, default="chat/completions")
    requested_model = models.CharField(max_length=200)
    upstream_model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(
        default=0, help_text="Prompt tokens read from the prompt cache (part of the prompt)."
    )
    cache_write_tokens = models.PositiveIntegerField(
        default=0, help_text="Prompt tokens written to the prompt cache (part of the prompt)."
    )
    reasoning_tokens = models.PositiveIntegerField(
        default=0, help_text="Completion tokens spent reasoning (part of the completion)."
    )
    input_rate = models.DecimalField(**PRICE, default=Decimal("0"))
    output_rate = models.DecimalField(**PRICE, default=Decimal("0"))
    cached_input_rate = models.DecimalField(**PRICE, default=Decimal("0"))
    cache_write_rate = models.DecimalField(**PRICE, default=Decimal("0"))
    multiplier = models.DecimalField(max_digits=10, decimal_places=4, default=Decimal("1"))
    cost = models.DecimalField(**MONEY, default=Decimal("0"))
    held = models.DecimalField(
        **MONEY, default=Decimal("0"), help_text="What was held on the balance before forwarding."
    )
    token_held = models.DecimalField(
        **MONEY, default=Decimal("0"), help_text="What was held on the token's spend limit."
    )
    estimated = models.BooleanField(
        default=False, help_text="Tokens were estimated: the upstream reported no usage."
    )
    usage_corrected = models.BooleanField(
        default=False,
        help_text="The upstream reported usage that could not be right (negative, fractional, "
        "absurd): the tokens were estimated instead.",
    )
    overrun = models.DecimalField(
        **MONEY,
        default=Decimal("0"),
        help_text="What the request cost beyond its hold (charged: the balance may go below "
        "zero by this much).",
    )
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.SUCCESS)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=1)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField("time to first token (ms)", null=True, blank=True)
    created = models.DateTimeField(default=now, db_index=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "usage record"
        indexes = [
            models.Index(fields=["group", "created"], name="billing_usage_group_created"),
            models.Index(fields=["channel", "created"], name="billing_usage_channel_created"),
            models.Index(fields=["user", "created"], name="billing_usage_user_created"),
            models.Index(fields=["token", "created"], name="billing_usage_token_created"),
            models.Index(fields=["requested_model", "created"], name="billing_usage_model_created"),
        ]

    def __str__(self):
        return f"{self.request_id} {self.requested_model}"


class UsageRollup(models.Model):
    """The usage records of one hour summed by group, model and channel: what the admin
    dashboard reads (billing/rollups.py builds them from the records, never the request path).

    The names are those on the records (the group's and channel's current name, else the name
    the record kept once the row is gone; "" when there is none: a request no channel served).
    """

    hour = models.DateTimeField(help_text="The hour's start (UTC).")
    group_name = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    channel_name = models.CharField(max_length=100, blank=True, default="")
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(
        default=0, help_text="Records neither successful nor still in flight."
    )
    pending = models.PositiveIntegerField(
        default=0, help_text="Records still in flight when the hour was summed."
    )
    prompt_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal("0"))

    class Meta:
        ordering = ["-hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "group_name", "model", "channel_name"],
                name="billing_usagerollup_unique_hour_keys",
            ),
        ]

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H:00} {self.group_name}/{self.model}/{self.channel_name}"


class RollupWatermark(models.Model):
    """One row: every hour before `hour` is summed in UsageRollup and can no longer change
    (it has ended and none of its records is in flight). None: never built."""

    hour = models.DateTimeField(null=True, blank=True)
    refreshed = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"rollups final before {self.hour}"
