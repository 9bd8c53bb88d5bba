from django.core import checks
from django.db import DatabaseError

from airouter.db_checks import database_reachable


@checks.register()
def channel_keys_readable(app_configs, **kwargs):
    """airouter.W003: a saved channel key no longer decrypts (SECRET_KEY or the encryption
    keys changed), so the channel cannot be used."""
    from channels_app.keystore import KeyStoreError
    from channels_app.models import Channel

    if not database_reachable():
        return []
    try:
        channels = list(Channel.objects.exclude(key_encrypted="").only("name", "key_encrypted"))
    except DatabaseError:
        return []  # not migrated yet
    unreadable = []
    for channel in channels:
        try:
            channel.get_key()
        except KeyStoreError:
            unreadable.append(channel)
    return [
        checks.Warning(
            f"Channel '{channel.name}': its saved upstream key cannot be decrypted, so no "
            "request can use it.",
            hint="Put the encryption key it was saved with back into "
            "CHANNEL_KEY_ENCRYPTION_KEYS (or restore SECRET_KEY), or save the key again: "
            f"`manage.py create_channel {channel.name} --key ...`.",
            obj=channel,
            id="airouter.W003",
        )
        for channel in unreadable
    ]


@checks.register()
def channel_prices_set(app_configs, **kwargs):
    """airouter.W004: an enabled channel with no price serves requests for free."""
    from channels_app.models import Channel

    if not database_reachable():
        return []
    try:
        free = list(
            Channel.objects.filter(status=Channel.Status.ENABLED, input_price=0, output_price=0)
            .exclude(groups=None)
            .filter(model_prices=None)  # priced per model only: not free
        )
    except DatabaseError:
        return []
    return [
        checks.Warning(
            f"Channel '{channel.name}' has no price (input and output are 0): every request "
            "it serves costs nothing (pricing TBD).",
            hint="Set its input and output price per 1M tokens in the admin or with "
            f"`manage.py create_channel {channel.name} --input-price D --output-price D`.",
            obj=channel,
            id="airouter.W004",
        )
        for channel in free
    ]
