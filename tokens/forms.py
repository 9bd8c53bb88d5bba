"""The key page's create form: the group is a choice among the owner's usable groups that serve
a model (their own group always: their keys route there anyway) or auto; optional limits:
spend, expiry, models, and rate limits on top of the account's own."""

from django import forms
from django.utils.timezone import now

from airouter.lists import split_list
from channels_app.price_list import group_offers
from groups.models import AUTO, MONEY

LIMIT_MAX = 2**31 - 1  # what the database column holds


def limit_field(label: str, what: str) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=1,
        max_value=LIMIT_MAX,
        help_text=f"Optional{what}. Empty: only your account's limits apply.",
    )


class CreateTokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="To tell your keys apart.")
    group = forms.ChoiceField(
        help_text="The group that routes this key's requests; auto fails over between groups."
    )
    spend_limit = forms.DecimalField(
        label="Spend limit",
        required=False,
        min_value=0,
        max_digits=MONEY["max_digits"],
        decimal_places=MONEY["decimal_places"],
        help_text="Optional. Empty: no limit beyond your balance.",
    )
    expires_at = forms.DateTimeField(
        label="Expires",
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Optional, UTC. Empty: never.",
    )
    allowed_models = forms.CharField(
        label="Allowed models",
        required=False,
        max_length=2000,
        help_text="Optional, comma-separated. Empty: every model of the group.",
    )

    rpm = limit_field("Requests per minute", "")
    tpm = limit_field("Tokens per minute", ": prompt + completion tokens")
    max_concurrency = limit_field("Concurrent requests", ": requests in flight at once")

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        # What each group serves and costs: the page shows it beside the picker.
        offers = group_offers(owner)
        self.offers = [offer for offer in offers if offer.offered]
        self.not_offered = [offer.name for offer in offers if not offer.offered]
        names = [offer.name for offer in self.offers]
        self.fields["group"].choices = [(name, name) for name in names] + [(AUTO, AUTO)]
        self.fields["group"].initial = owner.group.name if owner.group.name in names else AUTO

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at

    def clean_allowed_models(self):
        return ", ".join(split_list(self.cleaned_data["allowed_models"]))
