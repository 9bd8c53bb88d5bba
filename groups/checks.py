from django.core import checks
from django.db import DatabaseError

from airouter.db_checks import database_reachable


@checks.register()
def pricing_confirmed(app_configs, **kwargs):
    """airouter.W001: a group users can reach still has pricing TBD."""
    from groups.models import Group

    if not database_reachable():
        return []
    try:
        pending = list(Group.objects.reachable().filter(pricing_confirmed=False))
    except DatabaseError:
        return []  # not migrated yet: nothing to say about pricing
    return [
        checks.Warning(
            f"Group '{group.name}' is reachable by users but its pricing is not confirmed "
            f"(multiplier {group.multiplier}).",
            hint="Confirm the rates and the multiplier, then tick 'pricing confirmed' on the "
            "group (System Settings > Groups) or run "
            f"`manage.py create_group {group.name} --pricing-confirmed`.",
            obj=group,
            id="airouter.W001",
        )
        for group in pending
    ]


@checks.register(checks.Tags.security, deploy=True)
def secret_key_from_environment(app_configs, **kwargs):
    """airouter.E002: production runs on the key a developer's checkout made for itself."""
    from django.conf import settings

    if settings.SECRET_KEY_FROM_ENV:
        return []
    return [
        checks.Error(
            "SECRET_KEY is not set in the environment: the key generated into .secret_key "
            "for development is in use.",
            hint="Set SECRET_KEY (the same long random value on every instance) and "
            "CHANNEL_KEY_ENCRYPTION_KEYS; see .env.example.",
            id="airouter.E002",
        )
    ]
