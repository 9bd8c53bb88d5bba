"""The /v1 endpoints: authenticate, plan, hold, forward with failover, respond, settle.

Each step calls the app that owns it: tokens.authentication, channels_app.routing,
billing.ledger, channels_app.upstream. The steady state costs three or four database round
trips (token, hold, usage record; a token with a spend limit holds on itself too) and no
transaction is open while the upstream works.
"""

import json
import time

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from airouter.relay.errors import (
    RelayError,
    bad_request,
    error_response,
    exception_handler,
    json_response,
    not_found_path,
    too_large,
)
from airouter.relay.exchange import Exchange, completion_text, prompt_bound
from airouter.relay.streaming import EventStream, model_swap, swap_model
from billing import ledger, pricing
from billing.models import UsageRecord
from channels_app import health, routing, upstream
from tokens.authentication import TokenAuthentication

# endpoint -> the field that must carry the prompt, and its accepted types
ENDPOINTS = {
    "chat/completions": ("messages", (list,)),
    "completions": ("prompt", (str, list)),
    "embeddings": ("input", (str, list)),
}
RETRY_AFTER_NO_CHANNEL = "30"


class IgnoreClientContentNegotiation(BaseContentNegotiation):
    """The relay answers JSON (or the upstream's event stream) whatever the client's Accept
    says: `Accept: text/event-stream` on a stream request must not be a 406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class RelayView(APIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = []
    renderer_classes = [JSONRenderer]
    parser_classes = []
    content_negotiation_class = IgnoreClientContentNegotiation

    def get_exception_handler(self):
        return exception_handler

    def initial(self, request, *args, **kwargs):
        # A wrong method is a 405 whoever asks: check it before authenticating.
        if not hasattr(self, request.method.lower()):
            raise exceptions.MethodNotAllowed(request.method)
        if request.method == "OPTIONS":
            return  # asking what a path allows needs no key
        super().initial(request, *args, **kwargs)

    def options(self, request, *args, **kwargs):
        return HttpResponse(status=204)  # DRF adds the Allow header to every response


class ProxyView(RelayView):
    endpoint = ""

    def post(self, request):
        return relay(request, self.endpoint)


class ModelListView(RelayView):
    def get(self, request):
        models = routing.reachable_models(request.auth)
        return json_response(200, {"object": "list", "data": [model_object(m) for m in models]})


class ModelDetailView(RelayView):
    def get(self, request, model):
        if model not in routing.reachable_models(request.auth):
            plan = routing.plan(request.auth, model)
            raise group_not_allowed(plan) if plan.closed else model_not_found(plan)
        return json_response(200, model_object(model))


@csrf_exempt
def unknown_path(request, *args, **kwargs):
    return error_response(not_found_path(request.path))


def model_object(model: str) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": "airouter"}


def no_route(plan) -> RelayError:
    """Why a plan has no attempt, as the client is told."""
    if plan.closed:
        return group_not_allowed(plan)
    if plan.unavailable:
        return RelayError(
            503,
            f"Model '{plan.model}' has channels in group '{plan.group_label}', but none is "
            "usable right now. Try again later.",
            type="server_error",
            code="no_available_channel",
            headers={"Retry-After": RETRY_AFTER_NO_CHANNEL},
        )
    return model_not_found(plan)


def group_not_allowed(plan) -> RelayError:
    return RelayError(403, plan.no_group, code="group_not_allowed")


def model_not_found(plan) -> RelayError:
    message = plan.no_group or (
        f"No channel of group '{plan.group_label}' serves model '{plan.model}'. Review the "
        "group assignments on the token and on the channels (or pick another model)."
    )
    return RelayError(404, message, code="model_not_found", param="model")


# --- the request --------------------------------------------------------------------


def read_body(request) -> bytes:
    limit = settings.RELAY_MAX_BODY_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise too_large(limit)
    raw = request._request.read(limit + 1)
    if len(raw) > limit:
        raise too_large(limit)
    return raw


def parse(raw: bytes, endpoint: str) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        body = None
    if not isinstance(body, dict):
        raise bad_request(
            "We could not parse the JSON body of your request. The body must be a JSON object."
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter (a string).", "model")
    field, types = ENDPOINTS[endpoint]
    value = body.get(field)
    if value is None:
        raise bad_request(f"Missing required parameter: '{field}'.", field)
    if not isinstance(value, types) or (field == "messages" and not value):
        kind = " or ".join("a string" if t is str else "an array" for t in types)
        raise bad_request(f"Invalid type for '{field}': expected {kind}.", field)
    if "stream" in body and not isinstance(body["stream"], bool) and body["stream"] is not None:
        raise bad_request("Invalid type for 'stream': expected a boolean.", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request(
            "Invalid type for 'stream_options': expected an object.", "stream_options"
        )
    for name in ("max_tokens", "max_completion_tokens"):
        limit = body.get(name)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise bad_request(f"Invalid '{name}': expected a non-negative integer.", name)
    for name in ("n", "best_of"):
        count = body.get(name)
        if count is not None and (type(count) is not int or count < 1):
            raise bad_request(f"Invalid '{name}': expected a positive integer.", name)
    return body


def completion_bound(body: dict, endpoint: str) -> int:
    """The most completion tokens the answer may hold: the per-choice limit times the choices
    generated (`n`, or `best_of` on /v1/completions, which generates that many)."""
    if endpoint == "embeddings":
        return 0
    per_choice = settings.RELAY_DEFAULT_MAX_TOKENS
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            per_choice = body[name]
            break
    choices = body.get("n") or 1
    if endpoint == "completions":
        choices = max(choices, body.get("best_of") or 1)
    return per_choice * choices


def relay(request, endpoint: str):
    token = request.auth
    raw = read_body(request)
    body = parse(raw, endpoint)
    model = body["model"]
    if not token.model_allowed(model):
        raise RelayError(
            403,
            f"This API key may not use model '{model}'.",
            code="model_not_allowed",
            param="model",
        )
    stream = endpoint != "embeddings" and body.get("stream") is True
    plan = routing.plan(token, model)
    attempts = plan.attempts[: settings.RELAY_MAX_ATTEMPTS]
    if not attempts:
        raise no_route(plan)

    # The hold: an upper bound of the prompt plus every completion token allowed, at the
    # dearest of the planned attempts.
    prompt_limit = prompt_bound(len(raw), body)
    completion_limit = completion_bound(body, endpoint)
    hold_amount = max(
        pricing.cost(prompt_limit, completion_limit, a.input_rate, a.output_rate, a.multiplier)
        for a in attempts
    )
    try:
        hold = ledger.reserve(
            token,
            hold_amount,
            request_id=request.request_id,
            endpoint=endpoint,
            model=model,
            stream=stream,
        )
    except ledger.InsufficientQuota as exc:
        raise RelayError(
            429,
            exc.message,
            type="insufficient_quota",
            code="insufficient_quota",
            headers={"x-should-retry": "false"},
        ) from None

    exchange = Exchange(request.request_id, token, endpoint, model, body, stream, hold)
    try:
        response = forward(exchange, raw, body, attempts, stream)
    except BaseException as exc:
        if not exchange.settled:
            error = exc.message if isinstance(exc, RelayError) else f"{type(exc).__name__}"
            exchange.settle(UsageRecord.Status.UPSTREAM_ERROR, None, error=error)
        raise
    return response


def upstream_body(raw: bytes, body: dict, upstream_model: str, stream: bool) -> bytes:
    """What goes upstream: the client's body, with the mapped model and usage asked for."""
    if not stream and upstream_model == body["model"]:
        return raw
    changed = dict(body, model=upstream_model)
    if stream:
        changed["stream_options"] = dict(body.get("stream_options") or {}, include_usage=True)
    return json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()


def is_channel_failure(status: int) -> bool:
    """Answers that say the channel, not the request, is the problem: try the next one.

    5xx and 429 as the issue says; 408 is the upstream timing out, a timeout like any other;
    401 and 403 mean the upstream refused the channel's key (the client's key never goes
    upstream), which the operator must fix and another channel may not suffer from.
    """
    return status >= 500 or status in (401, 403, 408, 429)


# What the client is told when a channel failure was the last attempt: a refused channel key
# is our gateway's fault (502), an upstream 408 is a timeout (504, as when we time out).
CLIENT_STATUS = {401: 502, 403: 502, 408: 504}


def release_db_connection() -> None:
    """Give a pooled database connection back while the upstream works (seconds, or minutes
    for a stream): a thousand open streams must not hold a thousand connections. Settling
    takes one from the pool again. Persistent connections (SQLite) stay with their thread."""
    if connection.settings_dict["OPTIONS"].get("pool") and not connection.in_atomic_block:
        connection.close()


def forward(exchange: Exchange, raw: bytes, body: dict, attempts: list, stream: bool):
    endpoint = exchange.endpoint
    model = exchange.model
    expose = settings.RELAY_EXPOSE_CHANNEL
    bodies: dict[str, bytes] = {}
    last_status, last_error = 502, ""
    for attempt in attempts:
        channel = attempt.channel
        exchange.attempts += 1
        exchange.attempt = attempt
        upstream_model = channel.upstream_model(model)
        if upstream_model not in bodies:
            bodies[upstream_model] = upstream_body(raw, body, upstream_model, stream)
        sent = time.monotonic()
        label = f"channel {channel.name}" if expose else f"attempt {exchange.attempts}"
        response = None
        try:
            release_db_connection()  # also after a health note between attempts
            response = upstream.request(
                "POST",
                f"{channel.base_url}/{endpoint}",
                key=channel.key,
                body=bodies[upstream_model],
                connect_timeout=channel.connect_timeout,
                read_timeout=channel.read_timeout,
            )
            status = response.status
            if stream and status == 200:
                data = upstream.read_chunk(response, channel.read_timeout)
                if not data:
                    raise upstream.UpstreamError("the stream ended before any data")
            else:
                data = upstream.read_all(response, channel.read_timeout)
        except upstream.UpstreamError as exc:
            if response is not None:
                upstream.release(response, complete=False)
            last_status, last_error = exc.status, f"{label}: {exc.message}"
            health.note(channel, exc.message)
            continue
        latency_ms = int((time.monotonic() - sent) * 1000)

        if status >= 400:
            upstream.release(response, complete=True)
            message = upstream.describe(status, data, channel.key)
            if is_channel_failure(status):
                if status in (401, 403):  # the channel's key: every request would fail alike
                    health.refused(channel, message)
                else:
                    health.note(channel, message, latency_ms)
                last_status = CLIENT_STATUS.get(status, status)
                last_error = f"{label}: {message}"
                continue
            # The request itself was refused: pass the upstream's answer back as it said it.
            exchange.settle(UsageRecord.Status.UPSTREAM_ERROR, status, error=message)
            if not response.headers.get("Content-Type", "").startswith("application/json"):
                return error_response(RelayError(status, message, code="upstream_error"))
            data = upstream.scrub(data, channel.key)
            return served(
                HttpResponse(data, status=status, content_type="application/json"), attempt, expose
            )

        health.note(channel, "", latency_ms)
        swap = model_swap(upstream_model, model)
        if stream:
            exchange.ttft_ms = exchange.elapsed_ms()
            events = EventStream(
                exchange,
                response,
                data,
                client_wants_usage=_wants_usage(body),
                swap=swap,
            )
            out = StreamingHttpResponse(events, content_type="text/event-stream")
            out["Cache-Control"] = "no-cache"
            out["X-Accel-Buffering"] = "no"
            release_db_connection()  # the health note above may have taken one
            return served(out, attempt, expose)

        upstream.release(response, complete=True)
        usage = find_usage(data)
        exchange.settle(
            UsageRecord.Status.SUCCESS,
            status,
            usage=usage,
            completion_text=completion_text(data) if usage is None else "",
        )
        if swap:
            data = swap_model(data, swap)
        content_type = response.headers.get("Content-Type", "application/json")
        return served(HttpResponse(data, status=status, content_type=content_type), attempt, expose)

    exchange.settle(UsageRecord.Status.UPSTREAM_ERROR, last_status, error=last_error)
    tried = exchange.attempts
    raise RelayError(
        last_status,
        f"Every upstream attempt failed ({tried} tried). The last one answered: {last_error}",
        type="upstream_error",
        code="upstream_error",
    )


def served(response, attempt, expose: bool):
    response["x-airouter-group"] = attempt.group.name
    if expose:
        response["x-airouter-channel"] = attempt.channel.name
    return response


def _wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


_DECODER = json.JSONDecoder()


def find_usage(data: bytes) -> dict | None:
    """The `usage` object of a JSON answer, without parsing the rest of it.

    A `"usage"` key followed by `:` cannot occur inside a JSON string (its quotes would be
    escaped), and usage comes last in OpenAI answers: search from the end.
    """
    at = data.rfind(b'"usage"')
    while at >= 0:
        rest = data[at + 7 :].lstrip()
        if rest.startswith(b":"):
            rest = rest[1:].lstrip()
            if rest.startswith(b"{"):
                try:
                    usage, _ = _DECODER.raw_decode(rest.decode())
                except ValueError:
                    return None
                return usage if isinstance(usage, dict) else None
            return None
        at = data.rfind(b'"usage"', 0, at)
    return None
