from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Q

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
        if not self.value():
            return queryset
        # The user's records, and those of a deleted user of that name.
        return queryset.filter(
            Q(user__username=self.value()) | Q(user__isnull=True, username=self.value())
        )


def _label(related, kept_name: str) -> str:
    if related is not None:
        return str(related)
    return f"{kept_name} (deleted)" if kept_name else "-"


STATUS_LEVEL = {"success": "ok", "client_disconnected": "warn"}


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created",
        "requested_model",
        "user_label",
        "token_prefix",
        "group_label",
        "channel_label",
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

    # The user, group or channel; once it is deleted, the name the record kept ("(deleted)").
    @admin.display(description="user", ordering="user__username")
    def user_label(self, record):
        return _label(record.user, record.username)

    @admin.display(description="group", ordering="group__name")
    def group_label(self, record):
        return _label(record.group, record.group_name)

    @admin.display(description="channel", ordering="channel__name")
    def channel_label(self, record):
        return _label(record.channel, record.channel_name)

    @admin.display(description="token", ordering="token__key_prefix")
    def token_prefix(self, record):
        return f"{record.token.key_prefix}..." if record.token_id else "-"

    @admin.display(description="status", ordering="status")
    def status_badge(self, record):
        return badge(record.get_status_display(), STATUS_LEVEL.get(record.status, "bad"))
