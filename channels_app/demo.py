"""The demo `make run` seeds into a fresh database, so the router's main job (route a request,
bill it) can be tried at once, with no provider key: a `mock` channel in the default group,
priced so the usage shows a cost, credit and an API key for the admin account.

Only a fresh database gets it: one with a channel or an API key already is someone's set-up,
and is left alone (so a second `make run` seeds nothing and prints no new key).
AIROUTER_DEMO=false turns it off; unset, it is on with SQLite (the zero-setup default) and off
on any other database (PostgreSQL: production) unless AIROUTER_DEMO=true.

The default group's pricing is not confirmed by the demo: its rates are made up, and the
"pricing TBD" warning (airouter.W001) is there for the real channels that come next.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from billing import ledger
from channels_app.models import Channel
from channels_app.provisioning import save_channel
from groups.models import DEFAULT_GROUP_NAME, User, default_group_id
from tokens.issuing import create_token
from tokens.models import Token

CHANNEL = "demo"
MODEL = "mock-1"
INPUT_PRICE, OUTPUT_PRICE = Decimal("1"), Decimal("2")  # per 1M tokens
CREDIT = Decimal("10")
KEY_LABEL = "demo"  # the API key's name
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass
class Demo:
    channel: Channel
    user: User
    key: str  # the API key: shown once, only its hash is stored

    def curl(self, base_url: str) -> str:
        """A request that works at once with the demo's key."""
        body = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "Say hello"}}]}}'
        return (
            f"curl {base_url.rstrip('/')}/v1/chat/completions \\\n"
            f'  -H "Authorization: Bearer {self.key}" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f"  -d '{body}'"
        )


def wanted(setting: str | None, vendor: str) -> bool:
    """Whether AIROUTER_DEMO (`setting`, None or "" when unset) asks for the demo on a
    database of this vendor (django.db.connection.vendor)."""
    value = (setting or "").strip().lower()
    if not value:
        return vendor == "sqlite"
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValidationError(f"AIROUTER_DEMO: '{setting}' is not true or false.")


def is_fresh() -> bool:
    """No channel and no API key yet."""
    return not Channel.objects.exists() and not Token.objects.exists()


def seed(username: str) -> Demo | None:
    """Seed the demo for the admin `username`; None when the database is not fresh."""
    with transaction.atomic():
        if not is_fresh():
            return None
        user = User.objects.filter(username=username).first()
        if user is None:
            raise ValidationError(f"No user '{username}' (`manage.py ensure_admin` makes it).")
        default_group_id()  # the migrations made it; put it back if it was deleted
        channel = save_channel(
            CHANNEL,
            kind=Channel.Kind.MOCK,
            models=[MODEL],
            group_names=[DEFAULT_GROUP_NAME],
            input_price=INPUT_PRICE,
            output_price=OUTPUT_PRICE,
        ).channel
        ledger.top_up(user.pk, CREDIT)
        _, key = create_token(user, name=KEY_LABEL)
    return Demo(channel, user, key)
