"""Server-sent events passed through as bytes.

The upstream's bytes go to the client as they arrive, cut only at event boundaries
(`\\n\\n`) so an event is never split by us. Per read the work is a couple of C-level byte
searches: events carrying a `usage` object are parsed (for billing: the last one counts, as
upstreams with continuous usage stats send running totals on every chunk), and a usage-only
event is dropped when the client did not ask for it; when the channel maps the model name, a
bytes replace shows the client's name. Any failure after the first byte (the upstream's, or a
bug of ours) ends the stream with an in-band `data: {"error": ...}` event and `data: [DONE]`;
the `finally` settles the bill whatever happens, a client disconnect included (Django closes
the generator when the response closes).
"""

import json
import logging
import re

from airouter.relay.errors import envelope
from airouter.relay.exchange import completion_text
from billing.models import UsageRecord
from channels_app import health, upstream

logger = logging.getLogger(__name__)

USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
MAX_PENDING = 1 << 20  # an "event" this long without a boundary is passed on as it is
KEEP_FOR_ESTIMATE = 4 << 20  # bytes kept to estimate tokens if the upstream sends no usage
DONE = b"data: [DONE]\n\n"
# The end of an OpenAI stream; SSE makes the space after the colon optional.
DONE_MARKS = (b"data: [DONE]", b"data:[DONE]")


def ends_stream(out: bytes) -> bool:
    return b"[DONE]" in out and any(mark in out for mark in DONE_MARKS)


def model_swap(upstream_model: str, client_model: str) -> tuple | None:
    """Byte pairs that show the client's model name in place of the upstream's."""
    if upstream_model == client_model:
        return None
    up, client = json.dumps(upstream_model).encode(), json.dumps(client_model).encode()
    return ((b'"model":' + up, b'"model":' + client), (b'"model": ' + up, b'"model": ' + client))


def swap_model(data: bytes, swap) -> bytes:
    for old, new in swap:
        data = data.replace(old, new)
    return data


def _event_bounds(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The [begin, end) of the event containing data[start:end]."""
    begin = data.rfind(b"\n\n", 0, start)
    begin = 0 if begin < 0 else begin + 2
    stop = data.find(b"\n\n", end)
    stop = len(data) if stop < 0 else stop + 2
    return begin, stop


def _event_json(event: bytes):
    for line in event.split(b"\n"):
        line = line.strip()
        if line.startswith(b"data:"):
            try:
                return json.loads(line[5:])
            except ValueError:
                return None
    return None


class EventStream:
    """Iterate the client-bound bytes of one upstream stream; settle when done."""

    def __init__(self, exchange, response, first: bytes, *, client_wants_usage: bool, swap):
        self.exchange = exchange
        self.response = response
        self.first = first
        self.client_wants_usage = client_wants_usage
        self.swap = swap
        self.usage = None
        self.kept: list[bytes] = []  # what went out, to estimate tokens if no usage comes
        self.kept_bytes = 0
        self._events = None

    def __iter__(self):
        self._events = self._run()
        return self._events

    def close(self):
        """Django calls this when the response closes, even if nothing was ever sent."""
        if self._events is not None:
            self._events.close()  # runs the generator's finally if it had started
        if not self.exchange.settled:
            upstream.release(self.response, complete=False)
            self._settle(UsageRecord.Status.CLIENT_DISCONNECTED, "client disconnected")

    def _process(self, out: bytes) -> bytes:
        if b"\r\n" in out:  # SSE allows CRLF; the client gets LF, which it allows too
            out = out.replace(b"\r\n", b"\n")
        if b'"usage"' in out:
            out = self._take_usage(out)
        if self.swap and out:
            out = swap_model(out, self.swap)
        if self.usage is None and self.kept_bytes < KEEP_FOR_ESTIMATE:
            self.kept.append(out)
            self.kept_bytes += len(out)
        return out

    def _take_usage(self, out: bytes) -> bytes:
        """Keep the last usage object of these events; drop usage-only events not asked for."""
        at = 0
        while match := USAGE_OBJECT.search(out, at):
            begin, stop = _event_bounds(out, match.start(), match.end())
            payload = _event_json(out[begin:stop])
            at = stop
            if isinstance(payload, dict) and isinstance(payload.get("usage"), dict):
                self.usage = payload["usage"]
                if not self.client_wants_usage and not payload.get("choices"):
                    out = out[:begin] + out[stop:]
                    at = begin
        return out

    def _run(self):
        exchange = self.exchange
        channel = exchange.attempt.channel
        status = UsageRecord.Status.SUCCESS
        error = ""
        complete = finished = False
        pending = b""
        data = self.first
        try:
            while data:
                buffer = pending + data if pending else data
                end = buffer.rfind(b"\n\n")
                if end >= 0:
                    cut = end + 2
                else:  # an upstream ending its lines with CRLF?
                    end = buffer.rfind(b"\r\n\r\n")
                    cut = end + 4 if end >= 0 else 0
                if not cut:
                    pending = buffer
                    if len(pending) > MAX_PENDING:
                        out, pending = pending, b""
                        yield out
                else:
                    pending = buffer[cut:]
                    out = self._process(buffer[:cut])
                    if ends_stream(out):
                        # Bill before the client hears the end: once it has [DONE], the record
                        # exists.
                        finished = True
                        self._settle(status, error)
                    if out:
                        yield out
                data = upstream.read_chunk(self.response, channel.read_timeout)
            complete = True
            if pending:  # a last event without its blank line
                out = self._process(pending)
                if ends_stream(out) and not finished:
                    finished = True
                    self._settle(status, error)
                yield out
            if not finished:  # the body ended, the stream did not: never a silent close
                status = UsageRecord.Status.STREAM_ERROR
                error = "the upstream ended the stream before [DONE]"
                health.note(channel, error)
                yield self.error_event(
                    f"The upstream failed after the stream started: {error}", "upstream_error", 502
                )
        except upstream.UpstreamError as exc:
            if finished:  # the answer was whole: what broke after [DONE] is not the client's
                return
            status = UsageRecord.Status.STREAM_ERROR
            error = f"failed mid-stream: {exc.message}"
            health.note(channel, error)
            yield self.error_event(
                f"The upstream failed after the stream started: {error}",
                "upstream_error",
                exc.status,
            )
        except Exception as exc:
            logger.exception("Stream %s failed", exchange.request_id)
            status = UsageRecord.Status.STREAM_ERROR
            error = f"relay error mid-stream: {type(exc).__name__}"
            yield self.error_event(
                "The server had an error while streaming your response.", "server_error", 500
            )
        except GeneratorExit:
            status = UsageRecord.Status.CLIENT_DISCONNECTED
            error = "client disconnected"
            raise
        finally:
            upstream.release(self.response, complete)
            self._settle(status, error)

    def _settle(self, status, error):
        try:
            self.exchange.settle(
                status,
                200,
                usage=self.usage,
                completion_text=self.streamed_text() if self.usage is None else "",
                error=error,
            )
        except Exception:
            logger.exception("Could not settle stream %s", self.exchange.request_id)

    def error_event(self, message: str, code: str, status: int) -> bytes:
        body = envelope(message, code, code)
        body["error"]["status"] = status
        return b"data: " + json.dumps(body).encode() + b"\n\n" + DONE

    def streamed_text(self) -> str:
        text = []
        for chunk in self.kept:
            for line in chunk.split(b"\n"):
                if line.startswith(b"data:") and b"[DONE]" not in line[:12]:
                    text.append(completion_text(line[5:]))
        return "".join(text)
