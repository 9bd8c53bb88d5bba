from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from airouter import health_views, login
from airouter.favicon import favicon
from airouter.relay import views as relay_views
from billing.views import pricing, usage

urlpatterns = [
    # The admin's own login, throttled (airouter/login.py); its URL name stays admin:login.
    path("admin/login/", login.admin_login),
    path("admin/", admin.site.urls),
    path("v1", relay_views.unknown_path),  # not an APPEND_SLASH redirect: the 404 envelope
    path("v1/", include("airouter.relay.urls")),
    path("login/", login.login, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("keys/", include("tokens.urls")),
    path("usage/", usage, name="usage"),
    path("pricing/", pricing, name="pricing"),
    # For load balancers, orchestrators and Prometheus (no trailing slash: no redirect).
    path("healthz", health_views.healthz, name="healthz"),
    path("readyz", health_views.readyz, name="readyz"),
    path("metrics", health_views.metrics, name="metrics"),
    # Browsers ask every site for /favicon.ico (the admin's pages too): the router's icon.
    path("favicon.ico", favicon, name="favicon"),
    path("", RedirectView.as_view(pattern_name="keys"), name="home"),
]
