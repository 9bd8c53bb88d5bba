from functools import cached_property

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, PAGE_VAR
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from airouter.admin_display import CSS, badge
from billing.models import UsageRecord
from billing.pricing import money
from billing.reports import list_totals
from billing.usage_export import csv_lines


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows (COUNT over a LIMITed subquery), never the whole usage table.

    Past the cap the list stops at page CAP / per_page: narrow it with the filters.
    """

    CAP = 10_000

    @cached_property
    def count(self):
        return self.object_list[: self.CAP].count()


class TextInputFilter(admin.SimpleListFilter):
    """A filter typed in rather than picked: listing every value would scan the table."""

    template = "admin/text_input_filter.html"

    def lookups(self, request, model_admin):
        return (("", ""),)  # one dummy entry, so the filter is shown

    def choices(self, changelist):
        params = changelist.get_filters_params()
        params.pop(self.parameter_name, None)
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "hidden": [(k, v) for k, values in params.items() for v in values],
            "value": self.value() or "",
        }


def checked_text(value: str) -> str:
    """A typed filter value, refused when no text column can hold it (PostgreSQL rejects NUL)."""
    if "\x00" in value:
        raise IncorrectLookupParameters("A filter value cannot contain a NUL character.")
    return value


class RequestedModelFilter(TextInputFilter):
    title = "requested model"
    parameter_name = "model"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(requested_model=checked_text(self.value()))


class UsernameFilter(TextInputFilter):
    title = "user (username)"
    parameter_name = "username"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        name = checked_text(self.value())
        # The user's records, and those of a deleted user of that name.
        return queryset.filter(Q(user__username=name) | Q(user__isnull=True, username=name))


def relay_endpoints() -> list[str]:
    """The endpoints the relay serves (its URL patterns'), so the filter lists them without a
    SELECT DISTINCT over the usage table."""
    from airouter.relay.urls import urlpatterns

    kwargs = (getattr(pattern.callback, "view_initkwargs", {}) for pattern in urlpatterns)
    return [kw["endpoint"] for kw in kwargs if kw.get("endpoint")]


class EndpointFilter(admin.SimpleListFilter):
    title = "endpoint"
    parameter_name = "endpoint"

    def lookups(self, request, model_admin):
        return [(endpoint, endpoint) for endpoint in relay_endpoints()]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        if self.value() not in relay_endpoints():
            raise IncorrectLookupParameters(f"No endpoint {self.value()!r}.")
        return queryset.filter(endpoint=self.value())


def _label(related, kept_name: str) -> str:
    if related is not None:
        return str(related)
    return f"{kept_name} (deleted)" if kept_name else "-"


def _cut(text: str, title: str = ""):
    """A cell cut to its column's width by usage_list.css, the whole text in its title."""
    return format_html('<span class="usage-cut" title="{}">{}</span>', title or text, text)


def totals_shown(cl) -> dict:
    """The totals above the list, as the page words them: over what the paginator counted
    (at most CappedCountPaginator.CAP records, the latest)."""
    cap = CappedCountPaginator.CAP
    sums = list_totals(cl.queryset, cap)
    parts = [
        f"cached {sums['cached_tokens']:,}" if sums["cached_tokens"] else "",
        f"cache writes {sums['cache_write_tokens']:,}" if sums["cache_write_tokens"] else "",
    ]
    detail = ", ".join(part for part in parts if part)
    return {
        "requests": cl.result_count,
        "capped": cl.result_count >= cap,
        "cap": f"{cap:,}",
        "requests_text": f"{cl.result_count:,}",
        "prompt_text": f"{sums['prompt_tokens']:,}" + (f" ({detail})" if detail else ""),
        "completion_text": f"{sums['completion_tokens']:,}",
        "cost_text": money(sums["cost"]),
    }


STATUS_LEVEL = {"success": "ok", "client_disconnected": "warn", "pending": "off"}
# Short badge words; the full label, HTTP status and latency are in the badge's title.
STATUS_WORD = {
    "pending": "in flight",
    "success": "success",
    "client_disconnected": "disconnected",
    "upstream_error": "upstream error",
    "stream_error": "stream error",
    "abandoned": "abandoned",
}


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    # The columns an operator reads at 1400 px; the rest (endpoint, token, rates, multiplier,
    # latency, stream, estimated) are in the cells' titles, on the record's page and in the CSV.
    list_display = (
        "time",
        "requested",
        "user_label",
        "group_label",
        "channel_label",
        "tokens",
        "cost_display",
        "status_badge",
    )
    list_filter = (
        "created",
        "group",
        "channel",
        RequestedModelFilter,
        UsernameFilter,
        "status",
        EndpointFilter,  # not "endpoint": its choices would be a DISTINCT over the table
        "stream",
        "estimated",
    )
    list_select_related = ("user", "token", "group", "channel")
    search_fields = ("=request_id",)
    search_help_text = "A request id (x-request-id), exactly."
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would scan the whole table
    list_per_page = 100

    class Media:
        css = {"all": [*CSS["all"], "billing/usage_list.css"]}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # --- the totals of the current filter and its CSV export ------------------------------

    def get_urls(self):
        export = path(
            "export.csv",
            self.admin_site.admin_view(self.export_csv),
            name="billing_usagerecord_export",
        )
        return [export, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None) or {}
        cl = context.get("cl")
        if cl is not None:  # not a redirect (?e=1) nor an error page
            context["usage_totals"] = totals_shown(cl)
            query = cl.get_query_string(remove=[PAGE_VAR, ERROR_FLAG])
            export = reverse(f"{self.admin_site.name}:billing_usagerecord_export")
            context["usage_export_url"] = export + query
        return response

    def export_csv(self, request):
        """The records of the list's current filter, search and ordering, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        request.GET = request.GET.copy()
        request.GET.pop(PAGE_VAR, None)  # the whole filter, not the page shown
        try:
            cl = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("These filters do not apply to usage records.")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = StreamingHttpResponse(
            csv_lines(cl.queryset), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.csv"'
        return response

    # --- the columns ------------------------------------------------------------------------

    @admin.display(description="time", ordering="created")
    def time(self, record):
        """ "12-03" over "14:05:09" (the year too when it is not this one), in full on hover."""
        local = timezone.localtime(record.created)
        day = "%m-%d" if local.year == timezone.localtime().year else "%Y-%m-%d"
        return format_html(
            '<span title="{}">{}<br>{}</span>',
            local.isoformat(sep=" "),
            local.strftime(day),
            local.strftime("%H:%M:%S"),
        )

    @admin.display(description="requested model", ordering="requested_model")
    def requested(self, record):
        return _cut(record.requested_model)

    # The user, group or channel; once it is deleted, the name the record kept ("(deleted)").
    @admin.display(description="user", ordering="user__username")
    def user_label(self, record):
        token = f"{record.token.key_prefix}..." if record.token_id else "no token"
        label = _label(record.user, record.username)
        return _cut(label, f"{label}, key {token}")

    @admin.display(description="group", ordering="group__name")
    def group_label(self, record):
        return _cut(_label(record.group, record.group_name))

    @admin.display(description="channel", ordering="channel__name")
    def channel_label(self, record):
        label = _label(record.channel, record.channel_name)
        served = f" as {record.upstream_model}" if record.upstream_model else ""
        return _cut(label, f"{label}{served} ({record.endpoint})")

    @admin.display(description="tokens", ordering="prompt_tokens")
    def tokens(self, record):
        """ "in 1,234 / out 56" over "cached 200"; every part of the counts on hover."""
        parts = [
            f"{label} {count:,}"
            for label, count in (
                ("prompt", record.prompt_tokens),
                ("cached", record.cached_tokens),
                ("cache writes", record.cache_write_tokens),
                ("completion", record.completion_tokens),
                ("reasoning", record.reasoning_tokens),
            )
        ]
        if record.estimated:
            parts.append("estimated: the upstream reported no usage")
        under = []
        if record.cached_tokens:
            under.append(f"cached {record.cached_tokens:,}")
        if record.estimated:
            under.append("estimated")
        return format_html(
            '<span title="{}">in {}<br>out {}{}</span>',
            ", ".join(parts),
            f"{record.prompt_tokens:,}",
            f"{record.completion_tokens:,}",
            format_html('<br><span class="usage-sub">{}</span>', ", ".join(under)) if under else "",
        )

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, record):
        return format_html(
            '<span title="multiplier {}">{}</span>', money(record.multiplier), money(record.cost)
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, record):
        details = [record.get_status_display()]
        if record.status_code is not None:
            details.append(f"HTTP {record.status_code}")
        if record.latency_ms is not None:
            details.append(f"{record.latency_ms:,} ms")
        if record.stream:
            details.append("stream")
        return badge(
            STATUS_WORD.get(record.status, record.status),
            STATUS_LEVEL.get(record.status, "bad"),
            ", ".join(details),
        )
