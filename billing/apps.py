import importlib

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        post_migrate.connect(settle_trigger_in_place, sender=self)


def settle_trigger_in_place(using="default", **kwargs):
    """SQLite drops the settle trigger (migration billing 0002) whenever a migration rebuilds a
    table it names (a column with a default added to users, tokens or usage records): make it
    again after every migrate. PostgreSQL keeps it through ALTER TABLE.

    Rebuilding the tables the trigger's body writes (groups_user, tokens_token) fails on SQLite
    while the trigger exists ("no such table" as the rebuilt table is renamed): a migration that
    does it must drop the trigger first (billing 0002's SQLITE_DROP in a RunPython step)."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    trigger = importlib.import_module("billing.migrations.0002_settle_trigger")
    with connection.cursor() as cursor:
        for sql in trigger.SQLITE_DROP + trigger.SQLITE:
            cursor.execute(sql)
