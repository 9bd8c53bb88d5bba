"""The error envelopes: OpenAI's `{"error": {"message", "type", "param", "code"}}` on every /v1
path, Anthropic's `{"type": "error", "error": {"type", "message"}}` on /v1/messages.

`RelayError` is the one exception family of the relay: it carries the status, type, code, param
and extra headers (Retry-After, x-should-retry). `exception_handler` renders it, DRF's own
exceptions and anything unexpected as the envelope; `RelayMiddleware` gives every /v1 response
an `x-request-id` and turns errors outside DRF (an exception in a view) into the envelope too;
on /v1/messages it rewrites every error into Anthropic's envelope (and adds `request-id`), so
the relay raises one kind of error whatever the client speaks.
"""

import json
import logging
import uuid

from django.core.exceptions import DisallowedHost
from django.http import HttpResponse
from rest_framework import exceptions

from airouter.db_checks import is_database_down
from tokens.authentication import KeyRefused

logger = logging.getLogger(__name__)

V1_PREFIX = "/v1/"


def is_v1(path: str) -> bool:
    return path.startswith(V1_PREFIX) or path == "/v1"


def is_anthropic(path: str) -> bool:
    return path.startswith("/v1/messages")


# Anthropic's error type for each status (what its SDK and Claude Code expect).
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    if status in ANTHROPIC_TYPES:
        return ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_envelope(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": anthropic_type(status), "message": message}}


def as_anthropic(response: HttpResponse) -> HttpResponse:
    """An error response in OpenAI's envelope, rewritten into Anthropic's (one already in
    Anthropic's, such as an anthropic upstream's own answer, is left as it is)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("type") == "error":
        return response
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
    elif isinstance(error, str):
        message = error
    else:
        message = f"HTTP {response.status_code}"
    rewritten = json_response(
        response.status_code, anthropic_envelope(response.status_code, message)
    )
    for name, value in response.items():
        if name.lower() not in ("content-type", "content-length"):
            rewritten[name] = value
    return rewritten


class RelayError(exceptions.APIException):
    """An error the client sees as the OpenAI envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002  (OpenAI's field name)
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return envelope(self.message, self.type, self.code, self.param)


def envelope(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def json_response(status: int, body: dict, headers: dict | None = None) -> HttpResponse:
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(exc: RelayError) -> HttpResponse:
    return json_response(exc.status_code, exc.body(), exc.headers)


def bad_request(message: str, param: str | None = None) -> RelayError:
    return RelayError(400, message, param=param)


def not_found_path(path: str) -> RelayError:
    return RelayError(404, f"Unknown API path: {path}", code="unknown_url")


def too_large(limit: int | None = None) -> RelayError:
    size = f"{limit} bytes" if limit is not None else "the size limit"
    return RelayError(413, f"The request body is larger than {size}.", code="request_too_large")


# DRF's own exceptions, mapped to what OpenAI would say.
_DRF_CODES = {
    exceptions.MethodNotAllowed: ("invalid_request_error", "method_not_allowed"),
    exceptions.NotFound: ("invalid_request_error", "unknown_url"),
    exceptions.ParseError: ("invalid_request_error", None),
    exceptions.UnsupportedMediaType: ("invalid_request_error", None),
    exceptions.NotAcceptable: ("invalid_request_error", None),
    exceptions.AuthenticationFailed: ("invalid_request_error", "invalid_api_key"),
    exceptions.NotAuthenticated: ("invalid_request_error", "invalid_api_key"),
    exceptions.PermissionDenied: ("invalid_request_error", "permission_denied"),
}


def exception_handler(exc, context):
    """DRF EXCEPTION_HANDLER: every exception of a relay view becomes the envelope."""
    if isinstance(exc, RelayError):
        return error_response(exc)
    if isinstance(exc, KeyRefused):
        body = envelope(exc.message, exc.type, exc.code)
        return json_response(exc.status_code, body, exc.headers)
    if isinstance(exc, exceptions.APIException):
        type_, code = _DRF_CODES.get(type(exc), ("invalid_request_error", None))
        if isinstance(exc, exceptions.MethodNotAllowed):
            request = context.get("request")
            message = f"Method {request.method} is not allowed on {request.path}."
        else:
            message = str(exc.detail)
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        return json_response(exc.status_code, envelope(message, type_, code), headers)
    if is_database_down(exc):
        logger.error("Database unavailable: %s", exc)
        return database_down()
    logger.exception("Unexpected error on %s", getattr(context.get("request"), "path", "?"))
    return server_error()


RETRY_AFTER_DATABASE = "5"


def database_down() -> HttpResponse:
    return json_response(
        503,
        envelope(
            "The service is briefly unavailable (its database cannot be reached). "
            "Try again in a few seconds.",
            "server_error",
            "service_unavailable",
        ),
        {"Retry-After": RETRY_AFTER_DATABASE},
    )


def server_error() -> HttpResponse:
    return json_response(
        500,
        envelope(
            "The server had an error while processing your request.", "server_error", "server_error"
        ),
    )


class RelayMiddleware:
    """Every /v1 response gets x-request-id; an exception escaping a view is a 500 envelope."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not is_v1(request.path_info):
            return self.get_response(request)
        request.request_id = request_id = uuid.uuid4().hex
        response = self.get_response(request)
        if response.status_code >= 400:
            if not response.get("Content-Type", "").startswith("application/json"):
                # Django's own 404/413/500 pages: never HTML on /v1.
                response = self.replace_html(request, response)
            if is_anthropic(request.path_info):
                response = as_anthropic(response)
        response["x-request-id"] = request_id
        if is_anthropic(request.path_info):
            response["request-id"] = request_id
        return response

    def process_exception(self, request, exception):
        if not is_v1(request.path_info):
            return None
        if is_database_down(exception):
            logger.error("Database unavailable: %s", exception)
            return database_down()
        logger.exception("Unexpected error on %s", request.path_info)
        return server_error()

    @staticmethod
    def replace_html(request, response):
        status = response.status_code
        if status == 404:
            return error_response(not_found_path(request.path_info))
        if status == 413:
            return error_response(too_large())
        if status >= 500:
            return server_error()
        if status == 400 and (host := disallowed_host(request)) is not None:
            return json_response(
                400,
                envelope(
                    f"This server does not answer for the host {host!r} (the Host header of "
                    "the request): its operator has to add it to the ALLOWED_HOSTS setting "
                    "(a comma-separated list in the environment or .env), or call the server "
                    "by a name that is listed there.",
                    "invalid_request_error",
                    "host_not_allowed",
                ),
            )
        return json_response(status, envelope(f"HTTP {status}", "invalid_request_error"))


def disallowed_host(request) -> str | None:
    """The request's Host when ALLOWED_HOSTS does not list it (Django answered 400), else None."""
    try:
        request.get_host()
    except DisallowedHost:
        return request.META.get("HTTP_HOST", "")[:200]
    return None
