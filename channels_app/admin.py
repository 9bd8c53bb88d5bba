from django import forms
from django.contrib import admin, messages
from django.urls import path
from django.utils.html import format_html
from django.utils.text import Truncator

from airouter.admin_display import CSS, badge
from billing.pricing import money
from channels_app import breaker, channel_state, health, provisioning, route_preview
from channels_app.models import Channel, ModelPrice

SHORT_KIND = {Channel.Kind.OPENAI: "OpenAI", Channel.Kind.ANTHROPIC: "Anthropic", "mock": "Mock"}
ADMIN_CSS = {"all": [*CSS["all"], "channels_app/admin.css"]}
TEST_NOW_MAX = 10


class ChannelForm(forms.ModelForm):
    """The upstream key is write-only: typed in, encrypted, never rendered back."""

    base_url = forms.URLField(
        label="Base URL",
        max_length=500,
        required=False,
        assume_scheme="https",
        help_text=Channel._meta.get_field("base_url").help_text + " Not needed for a mock channel.",
    )
    key = forms.CharField(
        label="Upstream API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave blank to keep the current key.",
    )

    class Meta:
        model = Channel
        fields = (
            "name",
            "kind",
            "responses_api",
            "base_url",
            "groups",
            "model_names",
            "model_map",
            "priority",
            "weight",
            "status",
            "status_reason",
            "input_price",
            "output_price",
            "cached_input_price",
            "cache_write_price",
            "connect_timeout",
            "read_timeout",
            "total_timeout",
            "mock_delay_ms",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance.has_key:
            self.fields["key"].help_text = "Stored encrypted and never shown again."

    def clean(self):
        """A mock channel needs neither a base URL nor a key; every other kind needs both."""
        data = super().clean()
        if data.get("kind") == Channel.Kind.MOCK:
            data["base_url"] = data.get("base_url") or provisioning.MOCK_BASE_URL
            return data
        if not data.get("base_url"):
            self.add_error("base_url", "This field is required.")
        if not self.instance.has_key and not data.get("key"):
            self.add_error("key", "This field is required.")
        return data

    def save(self, commit=True):
        if self.cleaned_data.get("key"):
            self.instance.set_key(self.cleaned_data["key"])
        return super().save(commit)


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    extra = 0
    verbose_name_plural = "per-model prices (override the channel's rates)"


class LastErrorFilter(admin.SimpleListFilter):
    title = "last error"
    parameter_name = "has_error"

    def lookups(self, request, model_admin):
        return (("yes", "Has an error"), ("no", "No error"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(last_error="")
        if self.value() == "no":
            return queryset.filter(last_error="")
        return queryset


class LatencyFilter(admin.SimpleListFilter):
    """The latency of the last request or probe, in buckets."""

    title = "last latency"
    parameter_name = "latency"

    def lookups(self, request, model_admin):
        return (
            ("fast", "under 1 s"),
            ("slow", "1 s to 5 s"),
            ("slowest", "over 5 s"),
            ("unknown", "unknown"),
        )

    def queryset(self, request, queryset):
        value = self.value()
        if value == "fast":
            return queryset.filter(last_latency_ms__lt=1000)
        if value == "slow":
            return queryset.filter(last_latency_ms__gte=1000, last_latency_ms__lte=5000)
        if value == "slowest":
            return queryset.filter(last_latency_ms__gt=5000)
        if value == "unknown":
            return queryset.filter(last_latency_ms__isnull=True)
        return queryset


def probe_message(result: health.ProbeResult, was_auto_disabled: bool) -> str:
    """One channel's "Test now" outcome in words."""
    name = result.channel.name
    if result.ok:
        again = " (enabled again)" if was_auto_disabled else ""
        return f"Channel {name}: ok in {result.latency_ms} ms{again}."
    status = f" (HTTP {result.status})" if result.status is not None else ""
    return f"Channel {name}: failed after {result.latency_ms} ms{status}: {result.error}"


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = (
        "name",
        "status_badge",
        "kind_label",
        "group_names",
        "models",
        "tier",
        "prices",
        "latency",
    )
    list_filter = ("status", "kind", "groups", LastErrorFilter, LatencyFilter)
    search_fields = ("name", "model_names", "base_url")
    filter_horizontal = ("groups",)
    readonly_fields = (
        "key_status",
        "last_error",
        "last_error_at",
        "last_latency_ms",
        "last_checked",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "kind",
                    "responses_api",
                    "base_url",
                    "key",
                    "key_status",
                    "mock_delay_ms",
                )
            },
        ),
        ("Routing", {"fields": ("groups", "model_names", "model_map", "priority", "weight")}),
        ("Status", {"fields": ("status", "status_reason")}),
        (
            "Pricing (per 1M tokens)",
            {
                "fields": (
                    "input_price",
                    "output_price",
                    "cached_input_price",
                    "cache_write_price",
                )
            },
        ),
        (
            "Timeouts (seconds)",
            {"fields": ("connect_timeout", "read_timeout", "total_timeout")},
        ),
        (
            "Health",
            {"fields": ("last_error", "last_error_at", "last_latency_ms", "last_checked")},
        ),
    )
    inlines = (ModelPriceInline,)
    actions = ("test_now", "enable", "disable")
    change_list_template = "admin/channels_app/channel/change_list.html"

    class Media:
        css = ADMIN_CSS

    def get_urls(self):
        preview = self.admin_site.admin_view(lambda request: route_preview.view(self, request))
        return [path("route/", preview, name=route_preview.URL_NAME), *super().get_urls()]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    def changelist_view(self, request, extra_context=None):
        breaker.refresh(wait=True)  # the breakers as they are now, for the status column
        return super().changelist_view(request, extra_context)

    @admin.display(description="status / last error", ordering="status")
    def status_badge(self, channel):
        """The state, and under it the last error (wrapped, cut; the whole text in its title)."""
        state = channel_state.of(channel)
        shown = badge(Truncator(state.label).chars(90), state.level, title=state.title)
        if not channel.last_error:
            return shown
        return format_html(
            '{}<span class="airouter-error" title="{}">{}<span class="airouter-error-at">{}</span>'
            "</span>",
            shown,
            channel.last_error,
            Truncator(channel.last_error).chars(160),
            channel_state.when(channel.last_error_at),
        )

    @admin.display(description="kind", ordering="kind")
    def kind_label(self, channel):
        label = SHORT_KIND.get(channel.kind, channel.kind)
        return f"{label} + Responses" if channel.responses_api else label

    @admin.display(description="groups")
    def group_names(self, channel):
        return ", ".join(group.name for group in channel.groups.all()) or "-"

    @admin.display(description="models")
    def models(self, channel):
        return Truncator(", ".join(channel.model_list)).chars(60)

    @admin.display(description="priority / weight", ordering="-priority")
    def tier(self, channel):
        return f"{channel.priority} / {channel.weight}"

    @admin.display(description="in / out per 1M", ordering="input_price")
    def prices(self, channel):
        return f"{money(channel.input_price)} / {money(channel.output_price)}"

    @admin.display(description="latency", ordering="last_latency_ms")
    def latency(self, channel):
        ms = channel.last_latency_ms
        if ms is None:
            return "-"
        return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"

    @admin.display(description="key")
    def key_status(self, channel):
        return "set (encrypted; never shown)" if channel.has_key else "not set"

    @admin.action(description="Test now: probe the selected channels", permissions=["change"])
    def test_now(self, request, queryset):
        """The probe of `manage.py check_channels`, recorded on each channel the same way. The
        probes run one after another inside the request: at most TEST_NOW_MAX of them."""
        if queryset.count() > TEST_NOW_MAX:
            self.message_user(
                request,
                f"Test now probes at most {TEST_NOW_MAX} channels at once (each may take up to "
                "its timeout); select fewer, or run `manage.py check_channels`.",
                messages.ERROR,
            )
            return
        for channel in queryset.order_by("name"):
            was_auto_disabled = channel.status == Channel.Status.AUTO_DISABLED
            result = health.probe(channel)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, probe_message(result, was_auto_disabled), level)

    @admin.action(description="Enable the selected channels", permissions=["change"])
    def enable(self, request, queryset):
        count = provisioning.enable(queryset)
        self.message_user(request, f"Enabled {count} channel(s).")

    @admin.action(description="Disable the selected channels", permissions=["change"])
    def disable(self, request, queryset):
        count = provisioning.disable(queryset)
        self.message_user(request, f"Disabled {count} channel(s).")
