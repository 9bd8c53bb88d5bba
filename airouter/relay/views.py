"""The /v1 endpoints: authenticate, parse, plan, hold, forward with failover, respond, settle.

Each step calls the app that owns it: tokens.authentication, the client's format
(relay.formats), channels_app.routing, billing (the hold and the cost), the channel's
transport (channels_app.transports, which alone decides what an upstream answer means), the
bridges between formats (relay.bridges) and the ledger. The steady state costs three or four
database round trips (token, hold, usage record; a token with a spend limit holds on itself
too) and no transaction is open while the upstream works.
"""

import json

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from airouter import observability
from airouter.db_checks import is_database_down
from airouter.relay import bridges
from airouter.relay.convert import ConversionError
from airouter.relay.errors import (
    RelayError,
    bad_request,
    error_response,
    exception_handler,
    json_response,
    not_found_path,
    too_large,
)
from airouter.relay.exchange import Exchange, needs_estimate
from airouter.relay.formats import FORMATS, ClientFormat, dumps, text_chars
from airouter.relay.streaming import ConvertedStream, PassthroughStream, model_swap, swap_model
from billing import ledger, pricing, spool
from billing.models import UsageRecord
from channels_app import health, routing, transports, upstream
from channels_app.models import Channel
from tokens import limits as rate_limits
from tokens.authentication import TokenAuthentication

RETRY_AFTER_NO_CHANNEL = "30"
Outcome = Channel.Outcome


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
        return relay(request, FORMATS[self.endpoint])


class CountTokensView(RelayView):
    def post(self, request):
        return count_tokens(request)


class ModelListView(RelayView):
    def get(self, request):
        models = routing.reachable_models(request.auth)
        if request.META.get("HTTP_ANTHROPIC_VERSION"):  # an Anthropic client: its list shape
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}
                for m in models
            ]
            return json_response(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": models[0] if models else None,
                    "last_id": models[-1] if models else None,
                },
            )
        return json_response(200, {"object": "list", "data": [model_object(m) for m in models]})


class ModelDetailView(RelayView):
    def get(self, request, model):
        if model not in routing.reachable_models(request.auth):
            plan = routing.plan(request.auth, model, probe=False)
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


# --- the request ---------------------------------------------------------------------


def read_body(request) -> bytes:
    """The body, up to RELAY_MAX_BODY_BYTES (413 past it), with a Content-Length or without.

    Django reads `Content-Length` bytes, none without one. A chunked body (curl, `requests`
    with a generator, HTTP/2) has none: it is read from the server's own input stream, which
    gunicorn de-chunks and ends (`wsgi.input_terminated`). A server that does not say so
    (Django's runserver) hands the chunks to nobody: 411, send a Content-Length.
    """
    limit = settings.RELAY_MAX_BODY_BYTES
    meta = request.META
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise too_large(limit)
    if length:
        stream = request._request
    elif meta.get("wsgi.input_terminated"):
        stream = meta["wsgi.input"]
    elif "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        raise RelayError(
            411,
            "This server cannot read a chunked request body: send it with a Content-Length.",
            code="length_required",
        )
    else:
        return b""
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise too_large(limit)
    return raw


def checked_model(token, body: dict) -> str:
    model = body["model"]
    if not token.model_allowed(model):
        raise RelayError(
            403,
            f"This API key may not use model '{model}'.",
            code="model_not_allowed",
            param="model",
        )
    return model


def relay(request, fmt: ClientFormat):
    token = request.auth
    limits = rate_limits.of(token)  # None: no rate limit applies to this key
    lease = exchange = None
    try:
        raw = read_body(request)
        body = fmt.parse(raw)
        model = checked_model(token, body)
        stream = fmt.is_stream(body)
        plan = routing.plan(token, model, endpoint=fmt.endpoint)
        attempts = plan.attempts[: settings.RELAY_MAX_ATTEMPTS]
        if not attempts:
            raise no_route(plan)

        # The hold: an upper bound of the prompt plus every completion token allowed, at the
        # dearest of the planned attempts. The rate limits count these tokens first: a request
        # over a limit is refused (429) with nothing held, forwarded or recorded.
        prompt_bound, completion_bound = (
            fmt.prompt_bound(len(raw), body),
            fmt.completion_bound(body),
        )
        if limits is not None:
            # TPM counts like OpenAI's: an estimate of the prompt plus every token allowed
            tokens = pricing.estimate_tokens(len(raw)) + completion_bound
            lease = limits.take(tokens, model, request.request_id)
        hold_amount = pricing.hold_amount(
            prompt_bound, completion_bound, [(a.rates, a.multiplier) for a in attempts]
        )
        try:
            hold = ledger.reserve(
                token,
                hold_amount,
                request_id=request.request_id,
                endpoint=fmt.endpoint,
                model=model,
                stream=stream,
            )
        except DatabaseError as exc:
            if is_database_down(exc):  # the hold may have been committed all the same
                spool.keep_release(request.request_id)
            raise
        except ledger.InsufficientQuota as exc:
            raise RelayError(
                429,
                exc.message,
                type="insufficient_quota",
                code="insufficient_quota",
                headers={"x-should-retry": "false"},
            ) from None

        exchange = Exchange(request.request_id, token, fmt.endpoint, model, body, stream, hold)
        if lease is not None:  # its settle settles the lease: tokens corrected, slot given back
            exchange.on_settle = lease.settled
        try:
            response = forward(exchange, request, raw, attempts)
        except BaseException as exc:
            if not exchange.settled:
                error = exc.message if isinstance(exc, RelayError) else f"{type(exc).__name__}"
                exchange.settle(UsageRecord.Status.UPSTREAM_ERROR, None, error=error)
            raise
    except BaseException as exc:
        if lease is not None and exchange is None:
            lease.settle(0)  # refused before the hold: the slot and the tokens go back now
        if limits is not None:
            limits.add_headers(exc, lease)
        raise
    return response if lease is None else lease.apply(response)


def release_db_connection() -> None:
    """Give a pooled database connection back while the upstream works (seconds, or minutes
    for a stream): a thousand open streams must not hold a thousand connections. Settling
    takes one from the pool again. Persistent connections (SQLite) stay with their thread."""
    if connection.settings_dict["OPTIONS"].get("pool") and not connection.in_atomic_block:
        connection.close()


CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")


def client_headers(request, fmt_endpoint: str) -> dict:
    """What a Messages client says to Anthropic itself, passed on to anthropic channels."""
    if not fmt_endpoint.startswith(bridges.MESSAGES):
        return {}
    meta = request.META
    found = {}
    for name in CLIENT_HEADERS:
        value = meta.get("HTTP_" + name.upper().replace("-", "_"))
        if value:
            found[name] = value
    return found


class UpstreamBodies:
    """The upstream body of each (bridge, upstream model), built once per request: converted
    and serialised when the formats differ, the client's bytes when nothing changes."""

    def __init__(self, raw: bytes, body: dict, stream: bool):
        self.raw, self.body, self.stream = raw, body, stream
        self.built: dict = {}
        self.converted: dict = {}

    def get(self, b: bridges.Bridge, upstream_model: str) -> bytes:
        key = (b, upstream_model)
        if key not in self.built:
            self.built[key] = self._build(b, upstream_model)
        return self.built[key]

    def _build(self, b, upstream_model) -> bytes:
        body, stream = self.body, self.stream
        usage_asked = stream and b.upstream in ("chat/completions", "completions")
        if b.native and upstream_model == body["model"] and not usage_asked:
            return self.raw
        if b.native:
            changed = dict(body, model=upstream_model)
            if usage_asked:
                options = dict(body.get("stream_options") or {}, include_usage=True)
                changed["stream_options"] = options
            return dumps(changed)
        if b not in self.converted:  # ConversionError: this channel cannot serve the request
            self.converted[b] = bridges.request_body(b, body, stream)
        return dumps(dict(self.converted[b], model=upstream_model))


def forward(exchange: Exchange, request, raw: bytes, attempts: list):
    """The failover loop: each attempt's transport says what its answer means."""
    fmt_endpoint, model, body, stream = (
        exchange.endpoint,
        exchange.model,
        exchange.body,
        exchange.stream,
    )
    expose = settings.RELAY_EXPOSE_CHANNEL
    bodies = UpstreamBodies(raw, body, stream)
    headers = client_headers(request, fmt_endpoint)
    query = request.META.get("QUERY_STRING", "")
    last_status, last_error = 502, ""
    unconvertible = None  # why the request could not be converted for some channel
    for attempt in attempts:
        channel = attempt.channel
        b = bridges.bridge(fmt_endpoint, channel)
        upstream_model = channel.upstream_model(model)
        try:
            payload = bodies.get(b, upstream_model)
        except ConversionError as exc:  # another channel (another format) may serve it
            unconvertible = exc
            continue
        exchange.attempts += 1
        exchange.attempt = attempt
        label = f"channel {channel.name}" if expose else f"attempt {exchange.attempts}"
        release_db_connection()  # also after a health note between attempts
        result = transports.transport(channel).send(
            b.upstream,
            payload,
            stream=stream,
            key=channel.key,
            client_headers=headers,
            query=query if b.native else "",
        )
        health.record(channel, result)
        observability.attempt_finished(channel.name, result.outcome)
        if result.outcome in (Outcome.FAILURE, Outcome.KEY_REFUSED):
            last_status, last_error = result.client_status, f"{label}: {result.message}"
            continue
        if result.outcome == Outcome.REFUSED:
            return refused(exchange, b, result, attempt, expose)
        if stream:
            exchange.ttft_ms = exchange.elapsed_ms()
            return served(stream_response(exchange, b, result, upstream_model), attempt, expose)
        return served(whole_answer(exchange, b, result, upstream_model), attempt, expose)

    if not exchange.attempts and unconvertible is not None:
        exchange.settle(UsageRecord.Status.UPSTREAM_ERROR, 400, error=unconvertible.message)
        raise bad_request(unconvertible.message, unconvertible.param)
    exchange.settle(UsageRecord.Status.UPSTREAM_ERROR, last_status, error=last_error)
    tried = exchange.attempts
    raise RelayError(
        last_status,
        f"Every upstream attempt failed ({tried} tried). The last one answered: {last_error}",
        type="upstream_error",
        code="upstream_error",
    )


def refused(exchange, b, result, attempt, expose):
    """The upstream refused the request itself: the client gets its answer, in its format."""
    status = result.status
    exchange.settle(UsageRecord.Status.UPSTREAM_ERROR, status, error=result.message)
    json_answer = result.content_type.startswith("application/json")
    if not b.native or not json_answer:
        message = f"The upstream refused the request: {result.message}"
        return served(
            error_response(RelayError(status, message, code="upstream_error")), attempt, expose
        )
    data = result.data
    if b.client != bridges.MESSAGES:  # Anthropic's answer stays as Anthropic wrote it
        data = openai_error_body(data, status)
    data = upstream.scrub(data, attempt.channel.key)
    return served(
        HttpResponse(data, status=status, content_type="application/json"), attempt, expose
    )


ENVELOPE_FIELDS = ("message", "type", "param", "code")


def openai_error_body(data: bytes, status: int) -> bytes:
    """An upstream's own 4xx answer as the OpenAI envelope the SDKs parse: an `error` object
    with `message`, `type`, `param` and `code`. What the upstream wrote is kept; what it left
    out is filled in; an answer that is not an envelope is wrapped in one."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        if all(name in error for name in ENVELOPE_FIELDS) and isinstance(error["message"], str):
            return data  # already whole: byte for byte as the upstream wrote it
        filled = dict(error)
        message = error.get("message")
        filled["message"] = message if isinstance(message, str) and message else f"{_said(status)}."
        filled.setdefault("type", "invalid_request_error")
        filled.setdefault("param", None)
        filled.setdefault("code", None)
        return dumps({**parsed, "error": filled})
    # Not an envelope: {"error": "text"}, a flat {"message", "type", ...} (vLLM and others),
    # or some other JSON value.
    flat = parsed if isinstance(parsed, dict) else {}
    if isinstance(error, str) and error:
        message = error
    elif isinstance(flat.get("message"), str) and flat["message"]:
        message = flat["message"]
    elif isinstance(flat.get("detail"), str) and flat["detail"]:
        message = flat["detail"]
    else:
        text = data[:300].decode("utf-8", "replace").strip()
        message = f"{_said(status)}: {text}" if text else f"{_said(status)}."
    wrapped = {
        "message": message,
        "type": flat.get("type") if isinstance(flat.get("type"), str) else "invalid_request_error",
        "param": flat.get("param"),
        "code": flat.get("code"),
    }
    return dumps({"error": wrapped})


def _said(status: int) -> str:
    return f"The upstream refused the request (HTTP {status})"


def whole_answer(exchange, b, result, upstream_model):
    data = result.data
    if b.native:
        # Responses answers repeat request fields after usage (metadata may hold anything):
        # parsed whole; chat and Messages answers end with their usage.
        found = _answer_json(data).get("usage") if b.upstream == "responses" else find_usage(data)
        usage = FORMATS[b.upstream].read_usage(found)
        swap = model_swap(upstream_model, exchange.model)
        output_chars = text_chars(_answer_json(data)) if needs_estimate(usage) else 0
        exchange.settle(UsageRecord.Status.SUCCESS, 200, usage=usage, output_chars=output_chars)
        if swap:
            data = swap_model(data, swap)
        return HttpResponse(
            data, status=200, content_type=result.content_type or "application/json"
        )
    parsed = _answer_json(data)
    usage = FORMATS[b.upstream].read_usage(parsed.get("usage"))
    converted = bridges.answer(b, parsed, exchange.model, exchange.body, exchange.request_id)
    output_chars = text_chars(parsed) if needs_estimate(usage) else 0
    exchange.settle(UsageRecord.Status.SUCCESS, 200, usage=usage, output_chars=output_chars)
    return json_response(200, converted)


def _answer_json(data: bytes) -> dict:
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def stream_response(exchange, b, result, upstream_model):
    if b.native:
        events = PassthroughStream(
            exchange,
            result.response,
            result.data,
            b,
            swap=model_swap(upstream_model, exchange.model),
            client_wants_usage=_wants_usage(exchange.body),
        )
    else:
        converter = bridges.StreamConverter(
            b, exchange.model, exchange.body, exchange.request_id, _wants_usage(exchange.body)
        )
        events = ConvertedStream(exchange, result.response, result.data, b, converter)
    out = StreamingHttpResponse(events, content_type="text/event-stream")
    out["Cache-Control"] = "no-cache"
    out["X-Accel-Buffering"] = "no"
    release_db_connection()  # the health note may have taken one
    return out


def served(response, attempt, expose: bool):
    response["x-airouter-group"] = attempt.group.name
    if expose:
        response["x-airouter-channel"] = attempt.channel.name
    return response


def _wants_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# --- count_tokens --------------------------------------------------------------------


def count_tokens(request):
    """/v1/messages/count_tokens: asked of the first anthropic channel of the plan, estimated
    otherwise (or when that channel fails). Free: no hold, no usage record. Rate limits count
    it as a request of no tokens."""
    token = request.auth
    limits = rate_limits.of(token)  # None: no rate limit applies to this key
    lease = None
    try:
        fmt = FORMATS["messages/count_tokens"]
        raw = read_body(request)
        body = fmt.parse(raw)
        model = checked_model(token, body)
        plan = routing.plan(token, model, endpoint=fmt.endpoint, probe=False)
        attempts = plan.attempts[: settings.RELAY_MAX_ATTEMPTS]
        if not attempts:
            raise no_route(plan)
        if limits is not None:
            lease = limits.take(0, model, request.request_id)
        expose = settings.RELAY_EXPOSE_CHANNEL
        for attempt in attempts:
            channel = attempt.channel
            transport = transports.transport(channel)
            if not transport.counts_tokens:
                continue
            release_db_connection()
            payload = dumps(dict(body, model=channel.upstream_model(model)))
            result = transport.send(
                "messages/count_tokens",
                payload,
                stream=False,
                key=channel.key,
                client_headers=client_headers(request, fmt.endpoint),
            )
            health.record(channel, result, breaks=False)  # a success here closes nothing
            if result.ok or result.outcome == Outcome.REFUSED:  # the upstream's own answer
                data = result.data if result.ok else upstream.scrub(result.data, channel.key)
                response = HttpResponse(data, status=result.status, content_type="application/json")
                break
        else:
            attempt = attempts[0]
            response = json_response(
                200, {"input_tokens": pricing.estimate_tokens(text_chars(body))}
            )
        response = served(response, attempt, expose)
    except BaseException as exc:
        if limits is not None:
            limits.add_headers(exc, lease)
        raise
    finally:
        if lease is not None:
            lease.settle(0)  # its slot, at once
    return response if lease is None else lease.apply(response)


_DECODER = json.JSONDecoder()


def find_usage(data: bytes) -> dict | None:
    """The top-level `usage` object of a JSON answer, without parsing the rest of it.

    A `"usage"` key followed by `:` cannot occur inside a JSON string (its quotes would be
    escaped), and usage comes last in OpenAI's and Anthropic's answers: search from the end.
    """
    at = data.rfind(b'"usage"')
    while at >= 0:
        rest = data[at + 7 :].lstrip()
        if rest.startswith(b":") and rest[1:].lstrip().startswith(b"{"):
            try:
                usage, _ = _DECODER.raw_decode(rest[1:].lstrip().decode())
            except ValueError:
                usage = None
            if isinstance(usage, dict):
                return usage
        # a key of some other object (Responses' metadata follows usage): look further back
        at = data.rfind(b'"usage"', 0, at)
    return None
