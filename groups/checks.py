from django.core import checks
from django.db import DatabaseError


@checks.register()
def pricing_confirmed(app_configs, **kwargs):
    """airouter.W001: a group users can reach still has pricing TBD."""
    from groups.models import Group

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
