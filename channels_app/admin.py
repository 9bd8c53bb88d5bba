import time

from django import forms
from django.contrib import admin
from django.utils.text import Truncator

from airouter.admin_display import CSS, badge
from channels_app import breaker, provisioning
from channels_app.models import Channel, ModelPrice


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


STATUS_LEVEL = {
    Channel.Status.ENABLED: "ok",
    Channel.Status.DISABLED: "off",
    Channel.Status.AUTO_DISABLED: "bad",
}


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = (
        "name",
        "status_badge",
        "kind_label",
        "group_names",
        "models",
        "priority",
        "weight",
        "input_price",
        "output_price",
        "last_latency_ms",
        "error",
    )
    list_filter = ("status", "kind", "groups", LastErrorFilter)
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
    actions = ("enable", "disable")

    class Media:
        css = CSS

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    def changelist_view(self, request, extra_context=None):
        breaker.refresh(wait=True)  # the breakers as they are now, for the status column
        return super().changelist_view(request, extra_context)

    @admin.display(description="status", ordering="status")
    def status_badge(self, channel):
        state = breaker.current().get(channel.pk)
        if channel.status == Channel.Status.ENABLED and state is not None:
            now = time.time()
            status = state.status(now)
            if status != breaker.CLOSED:
                text = breaker.describe(state, now, opened="cooling down")
                return badge(Truncator(text).chars(90), "warn", title=text)
        level = STATUS_LEVEL.get(channel.status, "off")
        return badge(channel.get_status_display(), level, title=channel.status_reason)

    @admin.display(description="kind", ordering="kind")
    def kind_label(self, channel):
        label = channel.get_kind_display()
        return f"{label} + Responses" if channel.responses_api else label

    @admin.display(description="groups")
    def group_names(self, channel):
        return ", ".join(group.name for group in channel.groups.all()) or "-"

    @admin.display(description="models")
    def models(self, channel):
        return Truncator(", ".join(channel.model_list)).chars(60)

    @admin.display(description="last error")
    def error(self, channel):
        return Truncator(channel.last_error).chars(80) if channel.last_error else ""

    @admin.display(description="key")
    def key_status(self, channel):
        return "set (encrypted; never shown)" if channel.has_key else "not set"

    @admin.action(description="Enable the selected channels")
    def enable(self, request, queryset):
        count = provisioning.enable(queryset)
        self.message_user(request, f"Enabled {count} channel(s).")

    @admin.action(description="Disable the selected channels")
    def disable(self, request, queryset):
        count = provisioning.disable(queryset)
        self.message_user(request, f"Disabled {count} channel(s).")
