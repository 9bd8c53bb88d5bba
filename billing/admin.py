from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator

from airouter.admin_display import CSS, badge
from billing.models import UsageRecord


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


class RequestedModelFilter(TextInputFilter):
    title = "requested model"
    parameter_name = "model"

    def queryset(self, request, queryset):
        return queryset.filter(requested_model=self.value()) if self.value() else queryset


class UsernameFilter(TextInputFilter):
    title = "user (username)"
    parameter_name = "username"

    def queryset(self, request, queryset):
        return queryset.filter(user__username=self.value()) if self.value() else queryset


STATUS_LEVEL = {"success": "ok", "client_disconnected": "warn"}


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created",
        "requested_model",
        "user",
        "token_prefix",
        "group",
        "channel",
        "endpoint",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "cost",
        "multiplier",
        "status_badge",
        "latency_ms",
        "stream",
        "estimated",
    )
    list_filter = (
        "created",
        "group",
        "channel",
        RequestedModelFilter,
        UsernameFilter,
        "status",
        "endpoint",
        "stream",
        "estimated",
    )
    list_select_related = ("user", "token", "group", "channel")
    search_fields = ("=request_id",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would scan the whole table
    list_per_page = 100

    class Media:
        css = CSS

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="token", ordering="token__key_prefix")
    def token_prefix(self, record):
        return f"{record.token.key_prefix}..." if record.token_id else "-"

    @admin.display(description="status", ordering="status")
    def status_badge(self, record):
        return badge(record.get_status_display(), STATUS_LEVEL.get(record.status, "bad"))
