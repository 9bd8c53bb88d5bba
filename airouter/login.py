"""The sign-in views: /login/ (the API keys pages) and the admin's login.

Both are Django's LoginView behind two guards:

- Failed sign-ins are throttled by django-axes (its backend comes first in
  AUTHENTICATION_BACKENDS, its failures are rows in the database, so every worker and instance
  counts them together): after LOGIN_FAILURE_LIMIT failures from one address, or for one
  username, that address or username is refused for LOGIN_COOLOFF_MINUTES, even with the right
  password, with a page that says so (429). A success resets the failures of that username and
  address. The address is the one token allowlists see (tokens.authentication.client_ip:
  X-Forwarded-For only from RELAY_TRUSTED_PROXIES). Operators unlock at once in the admin
  ("Access attempts") or with `manage.py axes_reset_username NAME`.
- What they post never reaches an error page or report: every posted value is marked sensitive,
  and a failure inside them (the database down, say) is reported with Django's safe filter
  even when DEBUG is on (Django's own is off under DEBUG), which also hides the local variables
  named like a secret (`password`, `credentials`) of every frame.
"""

from functools import wraps

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.shortcuts import render
from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_post_parameters

LOCKED_OUT_TEMPLATE = "registration/locked_out.html"


class SignInErrorFilter(SafeExceptionReporterFilter):
    """Django's safe filter, on whatever DEBUG says, and in every frame: local variables named
    like a secret, dict keys named like one, and the posted secrets (the password) wherever
    they are, in a tuple of arguments too."""

    def is_active(self, request):
        return True

    def get_traceback_frame_variables(self, request, tb_frame):
        variables = super().get_traceback_frame_variables(request, tb_frame)
        secrets = posted_secrets(request, self.hidden_settings)
        return [
            (name, self.scrub(self.cleanse_setting(name, value), secrets))
            for name, value in variables
        ]

    def scrub(self, value, secrets: frozenset, depth: int = 0):
        if isinstance(value, str):
            return self.cleansed_substitute if value in secrets else value
        if depth > 4:
            return value
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(item, secrets, depth + 1) for item in value)
        if isinstance(value, dict):
            return {k: self.scrub(v, secrets, depth + 1) for k, v in value.items()}
        return value


def posted_secrets(request, names) -> frozenset:
    """The values posted under a secret-looking name (`password`)."""
    if request is None or request.method != "POST":
        return frozenset()
    return frozenset(
        value
        for key, values in request.POST.lists()
        if names.search(key)
        for value in values
        if value
    )


ERROR_FILTER = SignInErrorFilter()


class SignInThrottle(AxesStandaloneBackend):
    """axes' backend (refuses a locked-out address or username before the password is
    checked), letting through unchecked a sign-in that has no request to count by: the test
    client's `login()`, a script's `authenticate()`."""

    def authenticate(self, request=None, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def locked_out(request):
    """The page a refused sign-in gets: why, and for how long."""
    credentials = getattr(request, "axes_credentials", None)
    cool_off = get_cool_off(request)
    minutes = max(1, round(cool_off.total_seconds() / 60)) if cool_off else None
    context = {
        "failure_limit": get_failure_limit(request, credentials),
        "username": get_client_username(request, credentials) or "",
        "minutes": minutes,
    }
    return render(request, LOCKED_OUT_TEMPLATE, context, status=429)


def sign_in(view):
    """A login view, throttled and with its posted values kept off error pages."""

    @sensitive_post_parameters()
    @wraps(view)
    def guarded(request, *args, **kwargs):
        request.exception_reporter_filter = ERROR_FILTER
        response = view(request, *args, **kwargs)
        if getattr(request, "axes_locked_out", False):
            return locked_out(request)
        return response

    return guarded


login = sign_in(LoginView.as_view(redirect_authenticated_user=True))


@sign_in
def admin_login(request, *args, **kwargs):
    return admin.site.login(request, *args, **kwargs)
