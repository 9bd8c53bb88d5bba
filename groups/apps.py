from django.apps import AppConfig


class GroupsConfig(AppConfig):
    name = "groups"
    verbose_name = "System Settings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from groups import checks  # noqa: F401  (registers the pricing checks)
