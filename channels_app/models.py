from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.timezone import now

from airouter.lists import split_list
from airouter.text import storable
from channels_app import keystore
from groups.models import Group

PRICE = {"max_digits": 20, "decimal_places": 6}
PRICE_FIELDS = ("input_price", "output_price", "cached_input_price", "cache_write_price")


class Channel(models.Model):
    """An upstream: base URL + key + the models it serves, for one or more groups."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        MOCK = "mock", "Mock (built in: answers itself, no upstream)"

    class Status(models.TextChoices):
        ENABLED = "enabled", "Enabled"
        DISABLED = "disabled", "Disabled by hand"
        AUTO_DISABLED = "auto_disabled", "Disabled automatically"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(
        max_length=500, help_text="Up to and including /v1, e.g. https://api.openai.com/v1"
    )
    responses_api = models.BooleanField(
        "serves the Responses API",
        default=False,
        help_text="An OpenAI-compatible upstream that serves /v1/responses itself: Responses "
        "requests pass through instead of being converted to chat completions.",
    )
    key_encrypted = models.TextField(blank=True, editable=False)
    model_names = models.TextField(
        "models", help_text="Model names this channel serves, separated by commas or new lines."
    )
    model_map = models.JSONField(
        default=dict,
        blank=True,
        help_text='Public name -> upstream name, e.g. {"gpt-4o": "gpt-4o-2024-08-06"}.',
    )
    groups = models.ManyToManyField(Group, related_name="channels", blank=True)
    priority = models.IntegerField(default=0, help_text="Higher tiers are tried first.")
    weight = models.PositiveIntegerField(
        default=1, help_text="Share of traffic inside a priority tier."
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ENABLED)
    status_reason = models.CharField(max_length=500, blank=True)
    connect_timeout = models.FloatField(default=5.0, help_text="Seconds to open a connection.")
    read_timeout = models.FloatField(
        default=60.0, help_text="Longest silence allowed between bytes, in seconds."
    )
    total_timeout = models.FloatField(
        default=600.0,
        help_text="Longest a whole non-stream answer may take, in seconds (a stream is bounded "
        "by RELAY_MAX_STREAM_SECONDS).",
    )
    mock_delay_ms = models.PositiveIntegerField(
        "mock delay (ms)",
        default=0,
        help_text="A mock channel only: milliseconds it waits before it answers (a stream: "
        "before its first event, then a tenth of this between events).",
    )
    input_price = models.DecimalField(
        **PRICE, default=Decimal("0"), help_text="Price per 1M prompt tokens."
    )
    output_price = models.DecimalField(
        **PRICE, default=Decimal("0"), help_text="Price per 1M completion tokens."
    )
    cached_input_price = models.DecimalField(
        **PRICE,
        null=True,
        blank=True,
        help_text="Price per 1M prompt tokens read from the prompt cache (blank: the input price).",
    )
    cache_write_price = models.DecimalField(
        **PRICE,
        null=True,
        blank=True,
        help_text="Price per 1M prompt tokens written to the prompt cache (blank: the input "
        "price).",
    )
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_checked = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_price__gte=0)
                & Q(output_price__gte=0)
                & (Q(cached_input_price__isnull=True) | Q(cached_input_price__gte=0))
                & (Q(cache_write_price__isnull=True) | Q(cache_write_price__gte=0)),
                name="channels_app_channel_prices_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(connect_timeout__gt=0) & Q(read_timeout__gt=0) & Q(total_timeout__gt=0),
                name="channels_app_channel_timeouts_positive",
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        for name in PRICE_FIELDS:
            value = getattr(self, name)
            if value is not None and value < 0:
                errors[name] = "Prices cannot be negative."
        if self.responses_api and self.kind != self.Kind.OPENAI:
            errors["responses_api"] = (
                "Only an OpenAI-compatible channel can serve the Responses API."
            )
        if not isinstance(self.model_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.model_map.items()
        ):
            errors["model_map"] = "Give a JSON object of public name -> upstream name."
        if not self.model_list:
            errors["model_names"] = "List at least one model."
        if errors:
            raise ValidationError(errors)

    # --- the key: write-only ---
    def set_key(self, plaintext: str) -> None:
        self.key_encrypted = keystore.encrypt(plaintext)

    def get_key(self) -> str:
        return keystore.decrypt(self.key_encrypted) if self.key_encrypted else ""

    @property
    def has_key(self) -> bool:
        return bool(self.key_encrypted)

    @property
    def model_list(self) -> list[str]:
        return split_list(self.model_names or "")

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)

    class Outcome(models.TextChoices):
        """What one upstream attempt came to (channels_app.transports decides)."""

        SUCCESS = "success", "Answered"
        FAILURE = "failure", "Failed (the next channel is tried)"
        KEY_REFUSED = "key_refused", "Refused the channel's key"
        REFUSED = "refused", "Refused the request"

    @classmethod
    def record_result(
        cls,
        channel_id: int,
        outcome: str,
        *,
        error: str = "",
        latency_ms: int | None = None,
        checked: bool = False,
    ) -> bool:
        """Note how the channel last answered (error, latency, probe time) and change its
        status where the outcome says so: an upstream that refuses the channel's key disables
        it automatically; a probe that succeeds (`checked`) enables a channel disabled that way
        again (one disabled by hand stays off). Returns whether the status changed: the
        routing table must then hear of it. No signals: a plain note needs no reload.
        """
        error = storable(error)
        fields = {"last_error": error[:2000]}
        if error:
            fields["last_error_at"] = now()
        if latency_ms is not None:
            fields["last_latency_ms"] = latency_ms
        if checked:
            fields["last_checked"] = now()
        rows = cls.objects.filter(pk=channel_id)
        if outcome == cls.Outcome.KEY_REFUSED:
            reason = f"The upstream refused the channel's key: {error}"[:500]
            changed = rows.filter(status=cls.Status.ENABLED).update(
                status=cls.Status.AUTO_DISABLED, status_reason=reason, **fields
            )
            if not changed:
                rows.update(**fields)
            return bool(changed)
        if outcome == cls.Outcome.SUCCESS and checked:
            changed = rows.filter(status=cls.Status.AUTO_DISABLED).update(
                status=cls.Status.ENABLED, status_reason="", **fields
            )
            if not changed:
                rows.update(**fields)
            return bool(changed)
        rows.update(**fields)
        return False


class ModelPrice(models.Model):
    """A per-model price on one channel, overriding the channel's rates."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="model_prices")
    model = models.CharField(max_length=200)
    input_price = models.DecimalField(**PRICE, default=Decimal("0"))
    output_price = models.DecimalField(**PRICE, default=Decimal("0"))
    cached_input_price = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="Blank: this model's input price."
    )
    cache_write_price = models.DecimalField(
        **PRICE, null=True, blank=True, help_text="Blank: this model's input price."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "model"], name="channels_app_modelprice_unique_model"
            ),
            models.CheckConstraint(
                condition=Q(input_price__gte=0)
                & Q(output_price__gte=0)
                & (Q(cached_input_price__isnull=True) | Q(cached_input_price__gte=0))
                & (Q(cache_write_price__isnull=True) | Q(cache_write_price__gte=0)),
                name="channels_app_modelprice_prices_not_negative",
            ),
        ]

    def __str__(self):
        return f"{self.channel} {self.model}"

    def clean(self):
        if any((getattr(self, name) or 0) < 0 for name in PRICE_FIELDS):
            raise ValidationError("Prices cannot be negative.")
