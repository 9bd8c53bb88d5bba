"""/healthz, /readyz and /metrics: for load balancers, orchestrators and Prometheus.

Outside /v1, plain Django views: no session, no CSRF, no redirect (SECURE_REDIRECT_EXEMPT
names the two probes), GET and HEAD only. /healthz never touches the database; /readyz asks
the database (and Redis when REDIS_URL is set) with a short deadline; /metrics needs
`Authorization: Bearer <METRICS_TOKEN>` when METRICS_TOKEN is set.
"""

import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from airouter import observability, shared_state

logger = logging.getLogger(__name__)

# Seconds /readyz waits for the database and Redis together: load balancers give up after a
# few seconds, and a check that hangs should say "unavailable" before they do.
READY_TIMEOUT = 2.0

# The checks run here, so that a database that hangs costs a probe at most READY_TIMEOUT;
# two threads: a hung database holds at most these, and later probes time out in the queue.
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")


@require_safe
@never_cache
def healthz(request):
    """The process answers: nothing else is asked."""
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
def readyz(request):
    """Ready for traffic: the database answers (and Redis, when REDIS_URL is set)."""
    pending = {"database": _checks.submit(database_answers)}
    if settings.REDIS_URL:
        pending["redis"] = _checks.submit(redis_answers)
    checks = {}
    for name, future in pending.items():
        try:
            future.result(timeout=READY_TIMEOUT)
        except FutureTimeout:
            logger.warning("readyz: %s did not answer in %s s", name, READY_TIMEOUT)
            checks[name] = "timeout"
        except Exception as exc:  # the detail (hosts, users) goes to the log, not the probe
            logger.warning("readyz: %s unavailable: %s", name, exc)
            checks[name] = "unavailable"
        else:
            checks[name] = "ok"
    if all(state == "ok" for state in checks.values()):
        return JsonResponse({"status": "ok"})
    return JsonResponse({"status": "unavailable", "checks": checks}, status=503)


def database_answers() -> None:
    """One round trip on this thread's connection (persistent or pooled, as configured)."""
    connection.close_if_unusable_or_obsolete()  # what Django does around each request
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close_if_unusable_or_obsolete()


def redis_answers() -> None:
    shared_state.client().ping()  # the client's own timeouts: shared_state.TIMEOUT


@require_safe
@never_cache
def metrics(request):
    """Prometheus' text format; the sums of every worker under gunicorn."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            response = JsonResponse({"error": "a valid METRICS_TOKEN bearer is required"})
            response.status_code = 401
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(observability.registry()), content_type=CONTENT_TYPE_LATEST)
