"""The admin's routing preview: a token (or a group) and a model in, the plan `manage.py route`
prints out (channels_app.route_report, the same lines), and the state of every channel of the
groups it routes through. Staff with view permission on channels; nothing is sent upstream.

The form is a GET (links from token and group pages prefill it), so it takes a key's display
prefix only: a whole key in a URL would land in access logs.
"""

import time
from urllib.parse import urlencode

from django import forms
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import reverse

from channels_app import breaker, channel_state, route_report, routing
from channels_app.models import Channel
from channels_app.routing_table import get_table
from groups.models import Group
from tokens.models import DISPLAY_PREFIX_LENGTH

URL_NAME = "channels_app_channel_route"


class PreviewForm(forms.Form):
    token = forms.CharField(
        required=False,
        strip=True,
        help_text="The key's prefix as the token list shows it (sk-AbCd1234), not the whole key.",
        widget=forms.TextInput(attrs={"placeholder": "sk-AbCd1234", "size": 16}),
    )
    group = forms.ModelChoiceField(
        Group.objects.all(),
        required=False,
        empty_label="(none: preview the token)",
        help_text="Or a group: how a token of one of its users would route.",
    )
    model = forms.CharField(
        max_length=200, strip=True, widget=forms.TextInput(attrs={"list": "airouter-models"})
    )
    endpoint = forms.ChoiceField(
        choices=[(e, f"/v1/{e}") for e in route_report.ENDPOINTS],
        initial="chat/completions",
        required=False,
    )

    def __init__(self, data=None, **kwargs):
        self.whole_key = False
        if data is not None:
            token = data.get("token", "").strip().removesuffix("...")
            if len(token) > DISPLAY_PREFIX_LENGTH:  # never shown back on the page
                data = data.copy()
                data["token"], self.whole_key = "", True
            elif token != data.get("token"):
                data = data.copy()
                data["token"] = token
        super().__init__(data, **kwargs)

    def clean(self):
        data = super().clean()
        if self.whole_key:
            self.add_error(
                "token",
                f"Give only the key's prefix (its first {DISPLAY_PREFIX_LENGTH} characters): "
                "a whole key does not belong in a URL.",
            )
            return data
        if bool(data.get("token")) == bool(data.get("group")):
            raise forms.ValidationError("Pick a token or a group (one of them).")
        if data.get("token"):
            try:
                data["the_token"] = route_report.find_token(data["token"])
            except route_report.TokenNotFound as exc:
                self.add_error("token", str(exc))
        data["endpoint"] = data.get("endpoint") or "chat/completions"
        return data


def url_for(*, token=None, group=None) -> str:
    """The preview prefilled for a token or a group, with a model it reaches (if any)."""
    query = {}
    if token is not None:
        query["token"] = token.key_prefix
        models = routing.reachable_models(token)
    else:
        query["group"] = group.pk
        models = routing.reachable_models(route_report.group_token(group))
    if models:
        query["model"] = models[0]
    return reverse(f"admin:{URL_NAME}") + "?" + urlencode(query)


def channel_rows(plan: routing.Plan) -> list[dict]:
    """Every channel of the plan's groups, with its state and where it stands in the plan."""
    table = get_table()
    order = {a.channel.id: n for n, a in enumerate(plan.attempts, 1)}
    entries = [(g, ch) for g in plan.groups for ch in table.channels_by_group.get(g.id, ())]
    rows_by_id = Channel.objects.in_bulk({ch.id for _, ch in entries})
    states, now = breaker.current(), time.time()
    rows = []
    for group, entry in entries:
        channel = rows_by_id.get(entry.id)
        if channel is None:  # deleted since the table was read
            continue
        rows.append(
            {
                "group": group.name,
                "channel": channel,
                "url": reverse("admin:channels_app_channel_change", args=[channel.pk]),
                "state": channel_state.of(channel, states, now),
                "serves": plan.model in entry.models,
                "attempt": order.get(entry.id),
            }
        )
    return rows


def view(model_admin, request):
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    bound = any(request.GET.get(name) for name in ("token", "group", "model"))
    form = PreviewForm(request.GET if bound else None)
    report = None
    rows = []
    if bound and form.is_valid():
        data = form.cleaned_data
        if data.get("the_token") is not None:
            report = route_report.token_report(data["the_token"], data["model"], data["endpoint"])
        else:
            report = route_report.group_report(data["group"], data["model"], data["endpoint"])
        rows = channel_rows(report.plan)
    served = get_table().channels_by_group.values()
    models = sorted({model for group in served for ch in group for model in ch.models})
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Routing preview",
        "opts": model_admin.opts,
        "form": form,
        "report": report,
        "rows": rows,
        "models": models,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, "admin/channels_app/channel/route_preview.html", context)
