import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from airouter.admin_display import CSS, badge
from billing.pricing import money
from channels_app.route_preview import url_for as route_preview_url
from groups.models import AUTO, LIMIT_FIELDS, Group, limits_label
from tokens import form_once, issuing
from tokens.models import Token

OWNER_DEFAULT = ""


def group_choice(token: Token) -> str:
    if token.auto:
        return AUTO
    return token.group.name if token.group_id else OWNER_DEFAULT


class TokenForm(forms.ModelForm):
    """Routing is one choice: the owner's default group, a group the owner may use, or auto."""

    route = forms.ChoiceField(
        label="Group",
        required=False,
        help_text="The group that routes this token, or auto to fail over across the owner's "
        "groups by auto priority. Only groups the owner may use are accepted.",
    )

    class Meta:
        model = Token
        fields = (
            "owner",
            "name",
            "status",
            "expires_at",
            "spend_limit",
            "allowed_models",
            "allowed_ips",
            *LIMIT_FIELDS,
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = Group.objects.active().values_list("name", flat=True)
        self.fields["route"].choices = [
            (OWNER_DEFAULT, "The owner's default group"),
            (AUTO, "auto: fail over by auto priority"),
            *((name, name) for name in names),
        ]
        if self.instance.pk:
            self.fields["route"].initial = group_choice(self.instance)

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("owner") or (self.instance.owner if self.instance.pk else None)
        route = cleaned.get("route", OWNER_DEFAULT)
        if owner is None or (self.instance.pk and route == group_choice(self.instance)):
            return cleaned  # no owner to check against, or the routing is unchanged
        try:
            self.instance.group, self.instance.auto = issuing.resolve_group(owner, route)
        except ValidationError as exc:
            self.add_error("route", exc)
        return cleaned


class TokenAddForm(TokenForm):
    """Creates through tokens.issuing.create_token and keeps the key for the one-time page."""

    form_once = forms.CharField(widget=forms.HiddenInput, required=False)
    new_key = None

    class Meta(TokenForm.Meta):
        fields = tuple(f for f in TokenForm.Meta.fields if f != "status")

    def save(self, commit=True):
        data = self.cleaned_data
        self.instance, self.new_key = issuing.create_token(
            data["owner"],
            name=data["name"],
            group_name=data["route"],
            spend_limit=data["spend_limit"],
            allowed_models=data["allowed_models"],
            allowed_ips=data["allowed_ips"],
            expires_at=data["expires_at"],
            **{field: data[field] for field in LIMIT_FIELDS},
        )
        return self.instance

    def save_m2m(self):
        pass  # a token has no many-to-many fields


STATUS_LEVEL = {"active": "ok", "expired": "warn", "revoked": "bad"}


EDITABLE = (
    "name",
    "group",
    "auto",
    "status",
    "expires_at",
    "spend_limit",
    "allowed_models",
    "allowed_ips",
    *LIMIT_FIELDS,
)


class TokenStateFilter(admin.SimpleListFilter):
    """Active, expired or revoked: what a key does now (an expired key is still "active" in
    its status column until someone revokes it)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked"))

    def queryset(self, request, queryset):
        now = timezone.now()
        unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        if self.value() == "active":
            return queryset.filter(unexpired, status=Token.Status.ACTIVE)
        if self.value() == "expired":
            return queryset.filter(status=Token.Status.ACTIVE, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(status=Token.Status.REVOKED)
        return queryset


ROUTED_BY = "routed_by"


class RoutedByGroupFilter(admin.SimpleListFilter):
    """Tokens that route by a group: those that name it, and those that name no group whose
    owner's default group it is (the group page links here)."""

    title = "routed by group"
    parameter_name = ROUTED_BY

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Group.objects.values_list("pk", "name")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not re.fullmatch(r"[0-9]{1,18}", value):
            raise IncorrectLookupParameters(f"routed_by={value!r} is not a group id.")
        return queryset.routed_by(int(value))


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    form = TokenForm
    add_form = TokenAddForm
    list_display = (
        "prefix",
        "name",
        "owner",
        "routing",
        "spend",
        "limits",
        "expires_at",
        "status_badge",
        "last_used_at",
        "created",
    )
    list_filter = (TokenStateFilter, "auto", "group", RoutedByGroupFilter)
    list_select_related = ("owner__group", "group")
    search_fields = ("key_prefix", "name", "owner__username")
    autocomplete_fields = ("owner",)  # search users by name, not by numeric id
    readonly_fields = ("prefix", "spent", "last_used_at", "created", "route_preview")
    actions = ("revoke",)

    class Media:
        css = CSS

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        limits = ("expires_at", "spend_limit", "allowed_models", "allowed_ips", *LIMIT_FIELDS)
        if obj is None:
            return (
                (None, {"fields": ("owner", "name", "route", "form_once")}),
                ("Limits", {"fields": limits}),
            )
        return (
            (None, {"fields": ("prefix", "owner", "name", "route", "route_preview", "status")}),
            ("Limits", {"fields": limits}),
            ("Use", {"fields": ("spent", "last_used_at", "created")}),
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*self.readonly_fields, "owner")

    def get_changeform_initial_data(self, request):
        return {
            **super().get_changeform_initial_data(request),
            "form_once": form_once.issue(request),
        }

    def add_view(self, request, form_url="", extra_context=None):
        """A reload of the one-time key page re-sends the form: create nothing the second time."""
        if request.method == "POST" and not form_once.is_fresh(
            request, request.POST.get(form_once.FIELD, "")
        ):
            self.message_user(
                request,
                "That form was already submitted: no second token was made. "
                "A key is only shown once.",
                messages.WARNING,
            )
            return redirect("admin:tokens_token_changelist")
        return super().add_view(request, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        if change:  # a new token was already saved by create_token
            # Only what the form edits: spent and last_used_at move with every request, and
            # writing back the values read when the page opened would undo those.
            obj.save(update_fields=EDITABLE)

    def response_add(self, request, obj, post_url_continue=None):
        """Show the full key on this response only: it is not stored anywhere to show later."""
        context = {
            **self.admin_site.each_context(request),
            "title": "Copy the new key",
            "opts": self.opts,
            "token": obj,
            "key": request._airouter_new_key,
            "change_url": reverse("admin:tokens_token_change", args=[obj.pk]),
        }
        return TemplateResponse(request, "admin/tokens/token/key_created.html", context)

    def save_form(self, request, form, change):
        obj = super().save_form(request, form, change)
        if not change:
            form_once.spend(request, form.cleaned_data.get("form_once", ""))
            request._airouter_new_key = form.new_key
        return obj

    @admin.display(description="key", ordering="key_prefix")
    def prefix(self, token):
        return format_html("<code>{}...</code>", token.key_prefix)

    @admin.display(description="routing preview")
    def route_preview(self, token):
        return format_html(
            '<a href="{}">Preview where this token\'s requests go</a>',
            route_preview_url(token=token),
        )

    @admin.display(description="group")
    def routing(self, token):
        return token.group_label

    @admin.display(description="spent / limit", ordering="spent")
    def spend(self, token):
        limit = "no limit" if token.spend_limit is None else money(token.spend_limit)
        return f"{money(token.spent)} / {limit}"

    @admin.display(description="rate limits")
    def limits(self, token):
        return limits_label(token) or "-"

    @admin.display(description="status", ordering="status")
    def status_badge(self, token):
        state = "expired" if token.status == "active" and token.is_expired else token.status
        return badge(state, STATUS_LEVEL.get(state, "off"))

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        count = issuing.revoke(queryset)
        self.message_user(request, f"Revoked {count} token(s).")
