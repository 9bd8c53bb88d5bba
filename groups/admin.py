from decimal import Decimal

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group as PermissionGroup
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from airouter.admin_display import CSS, badge
from billing.ledger import top_up
from billing.pricing import money
from channels_app import channel_state
from channels_app.models import Channel
from channels_app.route_preview import url_for as route_preview_url
from groups.models import LIMIT_FIELDS, Group, User, default_group_id, limits_label
from groups.provisioning import apply_balance_edit
from tokens.admin import ROUTED_BY
from tokens.models import Token

# Routing groups are the only groups here; Django's permission groups are unused.
admin.site.unregister(PermissionGroup)


class TopUpForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=20,
        decimal_places=10,
        min_value=Decimal("0.0000000001"),
        help_text="Added to each selected user's balance.",
    )


def count_of(queryset, field: str):
    """A correlated COUNT per group: no join fan-out, one query for the whole page."""
    counted = (
        queryset.filter(**{field: OuterRef("pk")})
        .order_by()
        .values(field)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def balance_seen(form) -> Decimal:
    """The balance shown when the operator opened the form (posted back as initial-balance)."""
    field = form.fields["balance"]
    posted = form["balance"].html_initial_name
    try:
        seen = field.to_python(field.hidden_widget().value_from_datadict(form.data, {}, posted))
    except forms.ValidationError:
        seen = None
    return form.initial["balance"] if seen is None else seen


class ChannelMembershipInline(admin.TabularInline):
    """The group's channels, read-only: each one's state, models, priority, weight, prices."""

    model = Channel.groups.through
    extra = 0
    verbose_name = "channel"
    verbose_name_plural = (
        "channels serving this group (read-only: to add or remove one, edit the channel's "
        "groups on the channel's page)"
    )
    classes = ("airouter-memberships",)  # admin.css hides the rows' "Channel_groups object"
    fields = (
        "channel_link",
        "state",
        "models",
        "priority",
        "weight",
        "input_price",
        "output_price",
        "cached_input_price",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("channel")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="channel")
    def channel_link(self, membership):
        url = reverse("admin:channels_app_channel_change", args=[membership.channel_id])
        return format_html('<a href="{}">{}</a>', url, membership.channel.name)

    @admin.display(description="status")
    def state(self, membership):
        state = channel_state.of(membership.channel)
        return badge(Truncator(state.label).chars(60), state.level, title=state.title)

    @admin.display(description="models")
    def models(self, membership):
        return ", ".join(membership.channel.model_list)

    @admin.display(description="priority")
    def priority(self, membership):
        return membership.channel.priority

    @admin.display(description="weight")
    def weight(self, membership):
        return membership.channel.weight

    @admin.display(description="input / 1M")
    def input_price(self, membership):
        return money(membership.channel.input_price)

    @admin.display(description="output / 1M")
    def output_price(self, membership):
        return money(membership.channel.output_price)

    @admin.display(description="cached input / 1M")
    def cached_input_price(self, membership):
        price = membership.channel.cached_input_price
        return "= input" if price is None else money(price)


TOKENS_SHOWN = 50  # the newest: the default group may route thousands


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "multiplier",
        "pricing",
        "auto_priority",
        "selectable",
        "is_active",
        "limits",
        "num_users",
        "num_tokens",
        "num_channels",
    )
    list_filter = ("pricing_confirmed", "user_selectable", "is_active")
    search_fields = ("name", "description")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_active", "all_tokens")}),
        ("Billing", {"fields": ("multiplier", "pricing_confirmed")}),
        ("Routing", {"fields": ("auto_priority", "user_selectable")}),
        (
            "Limits",
            {
                "fields": LIMIT_FIELDS,
                "description": "The default of each user of this group, counted per user; a "
                "user's own limit overrides it. A token's own limits apply on top.",
            },
        ),
    )
    readonly_fields = ("all_tokens", "route_preview")
    inlines = (ChannelMembershipInline,)
    change_form_template = "admin/groups/group/change_form.html"

    class Media:
        css = {"all": [*CSS["all"], "channels_app/admin.css"]}

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        name, options = self.fieldsets[2]
        routing = (name, {**options, "fields": (*options["fields"], "route_preview")})
        return (*self.fieldsets[:2], routing, *self.fieldsets[3:])

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:  # the group the page already read
            tokens = Token.objects.routed_by(obj.pk).select_related("owner").order_by("-created")
            context["routed_tokens"] = list(tokens[:TOKENS_SHOWN])
            context["routed_tokens_shown"] = TOKENS_SHOWN
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                num_users=count_of(User.objects.all(), "group"),
                num_tokens=count_of(Token.objects.all(), "group"),
                num_channels=count_of(Channel.groups.through.objects.all(), "group"),
            )
        )

    @admin.display(description="tokens")
    def all_tokens(self, group):
        if group.pk is None:
            return "-"
        tokens = reverse("admin:tokens_token_changelist")
        by_default = Token.objects.routed_by(group.pk).filter(group__isnull=True).count()
        return format_html(
            '<a href="{}">All {} tokens that name {}</a>; <a href="{}">{} more route by it as '
            "their owner's default group</a> (they name no group)",
            f"{tokens}?group__id__exact={group.pk}",
            group.num_tokens,
            group,
            f"{tokens}?{ROUTED_BY}={group.pk}",
            by_default,
        )

    @admin.display(description="routing preview")
    def route_preview(self, group):
        return format_html(
            '<a href="{}">Preview how a token of {} routes</a>',
            route_preview_url(group=group),
            group,
        )

    @admin.display(description="pricing", ordering="pricing_confirmed")
    def pricing(self, group):
        if group.pricing_confirmed:
            return badge("confirmed", "ok")
        return badge("pricing TBD", "warn")

    @admin.display(description="default limits per user")
    def limits(self, group):
        return limits_label(group) or "-"

    @admin.display(description="selectable", boolean=True, ordering="user_selectable")
    def selectable(self, group):
        return group.user_selectable

    @admin.display(description="users", ordering="num_users")
    def num_users(self, group):
        return group.num_users

    @admin.display(description="tokens naming it", ordering="num_tokens")
    def num_tokens(self, group):
        return group.num_tokens

    @admin.display(description="channels", ordering="num_channels")
    def num_channels(self, group):
        return group.num_channels


class UserKindFilter(admin.SimpleListFilter):
    """API users (who call /v1) apart from staff (who run the admin)."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return (("api", "API users"), ("staff", "Staff"))

    def queryset(self, request, queryset):
        if self.value() == "api":
            return queryset.filter(is_staff=False)
        if self.value() == "staff":
            return queryset.filter(is_staff=True)
        return queryset


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "group", "balance_display", "is_staff", "is_active")
    list_filter = (UserKindFilter, "group", "is_superuser", "is_active")
    list_select_related = ("group",)
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("API access", {"fields": ("group", "balance")}),
        (
            "Limits",
            {
                "fields": LIMIT_FIELDS,
                "description": "Empty: the default of the user's group. Every key of the user "
                "counts here together; a key's own limits apply on top.",
            },
        ),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "usable_password", "password1", "password2"),
            },
        ),
        ("API access", {"fields": ("group", "balance")}),
    )
    actions = ("top_up_balance",)
    add_form_template = "admin/groups/user/add_form.html"  # breadcrumbs: User Management
    change_list_template = "admin/groups/user/change_list_counts.html"

    def changelist_view(self, request, extra_context=None):
        """ "12 API users · 2 staff" above the list, each a link to its filter."""
        counts = User.objects.aggregate(
            api=Count("pk", filter=Q(is_staff=False)), staff=Count("pk", filter=Q(is_staff=True))
        )
        extra_context = {**(extra_context or {}), "user_counts": counts}
        return super().changelist_view(request, extra_context)

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, user):
        return money(user.balance)  # 7.25, not 7.2500000000

    def get_changeform_initial_data(self, request):
        """New users start in the default group, as they do everywhere else."""
        return {"group": default_group_id(), **super().get_changeform_initial_data(request)}

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if obj is not None and "balance" in form.base_fields:
            # The form posts back the balance the operator saw, to apply their edit as a delta.
            form.base_fields["balance"].show_hidden_initial = True
        return form

    def save_model(self, request, obj, form, change):
        """Save the form but never write back a balance read before requests drew on it."""
        if not change:
            return super().save_model(request, obj, form, change)
        fields = [f.attname for f in obj._meta.concrete_fields if f.name not in ("id", "balance")]
        obj.save(update_fields=fields)
        if "balance" in form.changed_data:
            apply_balance_edit(obj.pk, balance_seen(form), form.cleaned_data["balance"])

    @admin.action(description="Top up the balance of the selected users", permissions=["change"])
    def top_up_balance(self, request, queryset):
        form = TopUpForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            amount = form.cleaned_data["amount"]
            for user in queryset:
                top_up(user.pk, amount)
                self.log_change(request, user, f"Topped up the balance by {amount}.")
            self.message_user(request, f"Topped up {queryset.count()} user(s) by {amount}.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Top up balances",
            "form": form,
            "users": queryset,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/groups/user/top_up.html", context)
