"""The operator admin site: Django's, with the custom User shown under "User Management".

The User model lives in the `groups` app (verbose name "System Settings") because it carries the
default group; operators look for it under "User Management", so the index and the side bar move
it into a section of its own. Installed through `AdminConfig` in INSTALLED_APPS.

The index is the operator's dashboard (billing/dashboard.py: usage of the last 24 hours and 30
days read from the hourly rollups, and the channels needing attention), the app list below it.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig

USER_MANAGEMENT = "User Management"


class AIRouterAdminSite(admin.AdminSite):
    site_header = "AI Router"
    site_title = "AI Router admin"
    index_title = "Operations"
    index_template = "admin/airouter_index.html"

    def index(self, request, extra_context=None):
        from billing import dashboard  # the admin site loads before the apps' models

        context = {"dashboard": dashboard.build(request.user), **(extra_context or {})}
        return super().index(request, context)

    def get_app_list(self, request, app_label=None):
        app_list = super().get_app_list(request, app_label)
        for app in app_list:
            users = [m for m in app["models"] if m["object_name"] == "User"]
            if app["app_label"] != "groups" or not users:
                continue
            app["models"] = [m for m in app["models"] if m["object_name"] != "User"]
            app_list.append(
                {
                    "name": USER_MANAGEMENT,
                    "app_label": app["app_label"],
                    "app_url": users[0]["admin_url"] or app["app_url"],
                    "has_module_perms": app["has_module_perms"],
                    "models": users,
                }
            )
            break
        app_list = [app for app in app_list if app["models"]]
        return sorted(app_list, key=lambda app: app["name"].lower())


class AdminConfig(DjangoAdminConfig):
    default_site = "groups.admin_site.AIRouterAdminSite"
