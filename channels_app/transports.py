"""One transport per channel kind: how to call the upstream and what its answer means.

A transport builds the URL and headers for an upstream endpoint, sends the body through
`channels_app.upstream` (the one module that does HTTP) and turns the attempt into a typed
`Result` whose `outcome` is all the relay's failover loop looks at:

- SUCCESS: a valid answer of the endpoint's format (for a stream: the first bytes of an event
  stream; the rest is read by the caller).
- FAILURE: the channel, not the request, is the problem (no connection, a timeout, 408, 429, a
  5xx, or a 200 that is no valid answer: not JSON of the format, an error object, a 204, a 3xx,
  a Content-Encoding we did not ask for): try the next channel.
- KEY_REFUSED: the upstream refused the channel's own key (401, 403): every request would fail
  alike, so the channel is disabled automatically, and the next one tried.
- REFUSED: any other 4xx: the upstream refused this request; the client gets the answer.

The endpoint names are the upstream's paths below the base URL ("chat/completions",
"messages", "responses", ...). Which kinds serve which client endpoint: `serves()`.

A `mock` channel has no upstream: `MockTransport` answers every endpoint itself
(`channels_app.mock`), with the same typed `Result`.
"""

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from django.conf import settings

from channels_app import mock, upstream
from channels_app.models import Channel

Outcome = Channel.Outcome

ANTHROPIC_VERSION = "2023-06-01"
# Client endpoints (the /v1 path) only some kinds can serve, even by conversion.
ONLY_KINDS = {
    "completions": {Channel.Kind.OPENAI, Channel.Kind.MOCK},
    "embeddings": {Channel.Kind.OPENAI, Channel.Kind.MOCK},
}
# A JSON key every valid answer of the upstream endpoint holds: checked on the bytes, so a
# passed-through answer is never parsed.
ANSWER_KEYS = {
    "chat/completions": b'"choices"',
    "completions": b'"choices"',
    "embeddings": b'"data"',
    "messages": b'"content"',
    "messages/count_tokens": b'"input_tokens"',
    "responses": b'"output"',
}
# How an event stream that starts with an error looks, per upstream endpoint.
STREAM_ERROR_STARTS = (b'data: {"error"', b'data:{"error"', b"event: error", b"event:error")
# What the client is told when a channel failure was the last attempt: a refused channel key
# is our gateway's fault (502), an upstream 408 is a timeout (504, as when we time out).
CLIENT_STATUS = {401: 502, 403: 502, 408: 504}


def serves(kind: str, client_endpoint: str) -> bool:
    """Whether a channel of this kind can serve the client endpoint (natively or converted)."""
    kinds = ONLY_KINDS.get(client_endpoint)
    return kinds is None or kind in kinds


@dataclass(slots=True)
class Result:
    outcome: str
    status: int = 0  # the upstream's HTTP status; 0 when it never answered
    message: str = ""  # what went wrong: key scrubbed, no host names (clients may see it)
    client_status: int = 502  # what the client is told if this was the last attempt
    response: object = None  # SUCCESS: the urllib3 response (a stream still being read)
    data: bytes = b""  # the whole body, or a stream's first bytes
    content_type: str = ""
    latency_ms: int = 0
    retry_after: float | None = None  # a 429 or 503's Retry-After, in seconds (the breaker's)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.SUCCESS


class Transport:
    """The shared send-and-judge logic; subclasses give the headers of their kind."""

    counts_tokens = False  # whether the upstream answers messages/count_tokens

    def __init__(self, channel):
        self.channel = channel  # a routing-table ChannelEntry or a Channel model

    def headers(self, key: str, client_headers) -> dict:
        raise NotImplementedError  # every kind says how it presents its key

    def url(self, endpoint: str, query: str = "") -> str:
        url = f"{self.channel.base_url.rstrip('/')}/{endpoint}"
        return f"{url}?{query}" if query else url

    def send(
        self,
        endpoint: str,
        body: bytes,
        *,
        stream: bool,
        key: str,
        client_headers=None,
        query: str = "",
    ) -> Result:
        channel = self.channel
        sent = time.monotonic()
        response = None
        try:
            response = upstream.request(
                "POST",
                self.url(endpoint, query),
                headers=self.headers(key, client_headers or {}),
                body=body,
                connect_timeout=channel.connect_timeout,
                read_timeout=channel.read_timeout,
            )
            status = response.status
            content_type = response.headers.get("Content-Type", "")
            event_stream = stream and status == 200 and "event-stream" in content_type
            if event_stream:
                data = upstream.read_chunk(response, channel.read_timeout)
            else:
                data = upstream.read_all(
                    response,
                    channel.read_timeout,
                    total_timeout=channel.total_timeout,
                    limit=settings.RELAY_MAX_RESPONSE_BYTES,
                )
        except upstream.UpstreamError as exc:
            if response is not None:
                upstream.release(response, complete=False)
            return Result(Outcome.FAILURE, message=exc.message, client_status=exc.status)
        latency_ms = int((time.monotonic() - sent) * 1000)
        result = Result(
            Outcome.SUCCESS,
            status,
            response=response,
            data=data,
            content_type=content_type,
            latency_ms=latency_ms,
        )
        problem = self.judge(endpoint, result, stream, response.headers, key)
        if problem is not None:
            result.outcome, result.message = problem
            result.response = None
            upstream.release(response, complete=not event_stream)
            if result.outcome == Outcome.FAILURE and status < 400:
                result.client_status = 502
            else:
                result.client_status = CLIENT_STATUS.get(status, status)
            if status in (429, 503):
                result.retry_after = retry_after(response.headers.get("Retry-After"))
        elif not event_stream:
            upstream.release(response, complete=True)
        return result

    def judge(self, endpoint, result: Result, stream: bool, headers, key) -> tuple | None:
        """None for a valid answer, else (outcome, message)."""
        status, data = result.status, result.data
        if status >= 400:
            message = upstream.describe(status, data, key)
            if status in (401, 403):
                return Outcome.KEY_REFUSED, message
            if status >= 500 or status in (408, 429):
                return Outcome.FAILURE, message
            return Outcome.REFUSED, message
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return Outcome.FAILURE, f"HTTP {status}: a body encoded as {encoding} (not asked for)"
        if status != 200:
            return Outcome.FAILURE, f"HTTP {status}: not an answer"
        if stream and "event-stream" not in result.content_type:
            return Outcome.FAILURE, "a stream request answered without an event stream: " + (
                upstream.describe(status, data, key)
            )
        if stream:
            if not data:
                return Outcome.FAILURE, "the stream ended before any data"
            if data.lstrip().startswith(STREAM_ERROR_STARTS):
                return Outcome.FAILURE, "the stream began with an error: " + upstream.describe(
                    status, _first_data(data), key
                )
            return None
        marker = ANSWER_KEYS.get(endpoint, b"")
        body = data.strip()
        if not (body.startswith(b"{") and body.endswith(b"}") and marker in body):
            return Outcome.FAILURE, "not a valid answer: " + upstream.describe(status, data, key)
        return None


class OpenAITransport(Transport):
    def headers(self, key: str, client_headers) -> dict:
        return {"Authorization": f"Bearer {key}"}


class AnthropicTransport(Transport):
    """`x-api-key` and `anthropic-version` (never Authorization). A client that speaks
    Messages itself has its own `anthropic-version` and `anthropic-beta` passed on."""

    counts_tokens = True

    def headers(self, key: str, client_headers) -> dict:
        headers = {
            "x-api-key": key,
            "anthropic-version": client_headers.get("anthropic-version") or ANTHROPIC_VERSION,
        }
        beta = client_headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        return headers


class MockTransport(Transport):
    """Kind `mock`: no network and no key. Every endpoint is answered in its own format
    (`channels_app.mock`: a stream as an in-memory response the relay reads like any other)
    after the channel's `mock_delay_ms`; a delay longer than the channel's timeout fails as a
    silent upstream would (504), so failover can be tried too."""

    counts_tokens = True

    def headers(self, key: str, client_headers) -> dict:
        return {}

    def send(
        self,
        endpoint: str,
        body: bytes,
        *,
        stream: bool,
        key: str,
        client_headers=None,
        query: str = "",
    ) -> Result:
        channel = self.channel
        sent = time.monotonic()
        delay = channel.mock_delay_ms / 1000
        timeout = (
            channel.read_timeout if stream else min(channel.read_timeout, channel.total_timeout)
        )
        if delay > timeout:
            time.sleep(timeout)
            return Result(
                Outcome.FAILURE, message=f"sent nothing for {timeout:g}s", client_status=504
            )
        time.sleep(delay)
        try:
            data, response = mock.respond(endpoint, body, stream=stream, interval=delay / 10)
        except mock.MockError as exc:
            return Result(
                Outcome.REFUSED,
                400,
                message=f"HTTP 400: {exc}",
                client_status=400,
                data=mock.error_body(endpoint, str(exc)),
                content_type="application/json",
            )
        latency_ms = int((time.monotonic() - sent) * 1000)
        return Result(
            Outcome.SUCCESS,
            200,
            response=response,
            data=data,
            content_type="text/event-stream" if stream else "application/json",
            latency_ms=latency_ms,
        )


TRANSPORTS = {
    Channel.Kind.OPENAI: OpenAITransport,
    Channel.Kind.ANTHROPIC: AnthropicTransport,
    Channel.Kind.MOCK: MockTransport,
}


def transport(channel) -> Transport:
    return TRANSPORTS[channel.kind](channel)


def retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds from now (it gives seconds or an HTTP date); None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return seconds if seconds == seconds else None  # not NaN


def _first_data(data: bytes) -> bytes:
    """The JSON of an event's first data line (what an in-band error said)."""
    for line in data.splitlines():
        if line.startswith(b"data:"):
            return line[5:].strip()
    return data
