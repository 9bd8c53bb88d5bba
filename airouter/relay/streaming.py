"""Server-sent event streams, passed through as bytes or converted event by event.

`PassthroughStream` (the client speaks the channel's format): the upstream's bytes go to the
client as they arrive, cut only at event boundaries (`\\n\\n`) so an event is never split by
us. Per read the work is a couple of C-level byte searches: only events carrying a `usage`
object are parsed (for billing), a chat usage-only event is dropped when the client did not ask
for it, and a bytes replace shows the client's model name when the channel maps it.

`ConvertedStream`: each upstream event is parsed once, fed through `bridges.StreamConverter`
and the resulting events written once in the client's framing.

Both: any failure after the first byte (the upstream's, or a bug of ours) ends the stream with
the client format's own well-framed error event (chat: `data: {"error": ...}` then
`data: [DONE]`; Messages: `event: error`; Responses: `response.failed`); an upstream that ends
without its format's final event (`[DONE]`, `message_stop`, `response.completed`) is such a
failure. The `finally` settles the bill whatever happens, a client disconnect included (Django
closes the generator when the response closes).
"""

import json
import logging
import re
import time

from django.conf import settings

from airouter.relay.exchange import needs_estimate
from airouter.relay.formats import FORMATS, text_chars
from billing.models import UsageRecord
from billing.pricing import estimate_tokens
from channels_app import health, upstream
from channels_app.models import Channel

logger = logging.getLogger(__name__)

USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# An "event" this long without a boundary is passed on as it is. Responses streams repeat the
# whole answer in one event (response.completed), generated images are megabytes of base64.
MAX_PENDING = 32 << 20
KEEP_FOR_ESTIMATE = 4 << 20  # characters counted to estimate tokens if no usage comes
STREAM_ERROR = UsageRecord.Status.STREAM_ERROR


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


def split_event(event: bytes) -> tuple[str, str]:
    """(event name, data) of one SSE event; data lines joined by newlines."""
    name, data = "", []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, b"\n".join(data).decode("utf-8", "replace")


def _event_json(event: bytes):
    _, data = split_event(event)
    try:
        return json.loads(data)
    except ValueError:
        return None


def _event_bounds(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The [begin, end) of the event containing data[start:end]."""
    begin = data.rfind(b"\n\n", 0, start)
    begin = 0 if begin < 0 else begin + 2
    stop = data.find(b"\n\n", end)
    stop = len(data) if stop < 0 else stop + 2
    return begin, stop


class EventStream:
    """Iterate the client-bound bytes of one upstream stream; settle when done."""

    def __init__(self, exchange, response, first: bytes, bridge, *, swap=None):
        self.exchange = exchange
        self.response = response
        self.first = first
        self.bridge = bridge
        self.client = FORMATS[bridge.client]  # what the client reads
        self.upstream_format = FORMATS[bridge.upstream]  # what the channel writes
        self.swap = swap
        self.finished = False  # the upstream's final event came
        self.failed = ""  # an error the upstream reported in band
        self._events = None
        self._tail = b"\n\n"  # the end of what went out last: error events must not glue on

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

    # --- what subclasses give ---
    def process(self, out: bytes) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        """Bytes owed to the client once the upstream's final event came."""
        return b""

    def usage(self):
        raise NotImplementedError

    def output_chars(self) -> int:
        """Characters generated, to estimate tokens when the upstream sent no usage."""
        raise NotImplementedError

    def failure_events(self, message: str, code: str, status: int) -> bytes:
        """The client format's in-band error, ending its stream."""
        return self.client.failure_event(message, code, status, self.exchange)

    # --- the loop ---
    def _out(self, data: bytes) -> bytes:
        if data:
            self._tail = data[-2:]
        return data

    def _error(self, message, code, status) -> bytes:
        glue = b"" if self._tail.endswith(b"\n\n") else b"\n\n"
        return glue + self.failure_events(message, code, status)

    def _run(self):
        exchange = self.exchange
        channel = exchange.attempt.channel
        status = UsageRecord.Status.SUCCESS
        error = ""
        complete = False
        pending = b""
        data = self.first
        deadline = exchange.started + settings.RELAY_MAX_STREAM_SECONDS
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
                        yield self._out(out)
                else:
                    pending = buffer[cut:]
                    was_finished = self.finished
                    out = self.process(buffer[:cut])
                    if self.finished and not was_finished:
                        out += self.end()
                        status, error = self._outcome()
                        # Bill before the client hears the end: once it has it, the record
                        # exists.
                        self._settle(status, error)
                    if out:
                        yield self._out(out)
                if self.finished and not self.bridge.native:
                    break  # converted: nothing after the final event matters
                if time.monotonic() > deadline:
                    raise upstream.UpstreamError(
                        f"the stream ran longer than {settings.RELAY_MAX_STREAM_SECONDS:g}s",
                        status=504,
                    )
                data = upstream.read_chunk(self.response, channel.read_timeout)
            complete = not data
            if pending:  # a last event without its blank line
                was_finished = self.finished
                out = self.process(pending + b"\n\n")
                if self.finished and not was_finished:
                    out += self.end()
                    status, error = self._outcome()
                    self._settle(status, error)
                yield self._out(out)
            if not self.finished and self.failed:  # the upstream said why, in band
                status, error = self._outcome()
            elif not self.finished:  # the body ended, the stream did not: never a silent close
                status = STREAM_ERROR
                final = self.upstream_format.final_events[0].decode()
                error = f"the upstream ended the stream before {final}"
                health.note(channel, Channel.Outcome.FAILURE, error)
                yield self._error(
                    f"The upstream failed after the stream started: {error}", "upstream_error", 502
                )
        except upstream.UpstreamError as exc:
            if self.finished:  # the answer was whole: what broke after the end is not the client's
                return
            status = STREAM_ERROR
            error = f"failed mid-stream: {exc.message}"
            health.note(channel, Channel.Outcome.FAILURE, error)
            yield self._error(
                f"The upstream failed after the stream started: {exc.message}.",
                "upstream_error",
                exc.status,
            )
        except Exception as exc:
            logger.exception("Stream %s failed", exchange.request_id)
            status = STREAM_ERROR
            error = f"relay error mid-stream: {type(exc).__name__}"
            yield self._error(
                "The server had an error while streaming your response.", "server_error", 500
            )
        except GeneratorExit:
            status = UsageRecord.Status.CLIENT_DISCONNECTED
            error = "client disconnected"
            raise
        finally:
            upstream.release(self.response, complete)
            self._settle(status, error)

    def _outcome(self) -> tuple[str, str]:
        if self.failed:
            return STREAM_ERROR, f"the upstream reported an error mid-stream: {self.failed}"
        return UsageRecord.Status.SUCCESS, ""

    def _settle(self, status, error):
        try:
            usage, chars = self.usage(), 0
            if needs_estimate(usage) or not self.finished:
                # No usage (or nonsense), or a stream cut before its final usage (Anthropic's
                # message_start already reports 1 output token): the generated text counts, if
                # it says more.
                chars = self.output_chars()
                if not needs_estimate(usage) and chars:
                    usage.output_tokens = max(usage.output_tokens, estimate_tokens(chars))
            self.exchange.settle(status, 200, usage=usage, output_chars=chars, error=error)
        except Exception:
            logger.exception("Could not settle stream %s", self.exchange.request_id)


class PassthroughStream(EventStream):
    """The client speaks the channel's format: bytes pass through."""

    def __init__(self, exchange, response, first, bridge, *, swap=None, client_wants_usage=True):
        super().__init__(exchange, response, first, bridge, swap=swap)
        self.client_wants_usage = client_wants_usage
        self.raw_usage = None  # chat/Responses: the last usage object; Messages: merged
        self.kept: list[bytes] = []  # what went out, to estimate tokens if no usage comes
        self.kept_bytes = 0

    def process(self, out: bytes) -> bytes:
        if b"\r\n" in out:  # SSE allows CRLF; the client gets LF, which it allows too
            out = out.replace(b"\r\n", b"\n")
        if b'"usage"' in out:
            out = self._take_usage(out)
        if self.swap and out:
            out = swap_model(out, self.swap)
        if self.kept_bytes < KEEP_FOR_ESTIMATE:  # parsed only if the usage is missing or cut
            self.kept.append(out)
            self.kept_bytes += len(out)
        if self.client.ends(out):
            self.finished = True
        if b"error" in out and self.client.in_band_error(out):
            self.failed = "an error event"  # the client sees it as the upstream said it
        return out

    def output_chars(self) -> int:
        """Generated characters in what went out."""
        total = 0
        for chunk in self.kept:
            for line in chunk.split(b"\n"):
                if line.startswith(b"data:") and b"[DONE]" not in line[:12]:
                    try:
                        total += text_chars(_delta_text(json.loads(line[5:])))
                    except ValueError:
                        continue
        return total

    def _take_usage(self, out: bytes) -> bytes:
        """Keep the usage these events report; drop chat usage-only events not asked for."""
        at = 0
        while match := USAGE_OBJECT.search(out, at):
            begin, stop = _event_bounds(out, match.start(), match.end())
            payload = _event_json(out[begin:stop])
            at = stop
            if not isinstance(payload, dict):
                continue
            found = self.client.stream_usage(payload)
            if found is None:
                continue
            self.raw_usage = self.client.merge_usage(self.raw_usage, found)
            drop = self.client.usage_only_events and not self.client_wants_usage
            if drop and not payload.get("choices"):
                out = out[:begin] + out[stop:]
                at = begin
        return out

    def usage(self):
        return self.client.read_usage(self.raw_usage)


def _delta_text(payload):
    """What an event generated: a chat choice's delta, an Anthropic delta, a Responses delta."""
    if not isinstance(payload, dict):
        return None
    choices = payload.get("choices")
    if isinstance(choices, list):
        return [c.get("delta") or c.get("text") for c in choices if isinstance(c, dict)]
    delta = payload.get("delta")
    if isinstance(delta, dict):
        return [delta.get(k) for k in ("text", "thinking", "partial_json") if k in delta]
    return delta if isinstance(delta, str) else None


class ConvertedStream(EventStream):
    """The channel answers in another format: each event is parsed, converted, written."""

    def __init__(self, exchange, response, first, bridge, converter):
        super().__init__(exchange, response, first, bridge)
        self.converter = converter
        self.text_chars = 0  # generated characters seen, to estimate tokens if no usage comes

    def process(self, out: bytes) -> bytes:
        if self.finished:
            return b""
        if b"\r\n" in out:
            out = out.replace(b"\r\n", b"\n")
        client = self.client
        written = []
        for event in out.split(b"\n\n"):
            if not event.strip():
                continue
            name, data = split_event(event)
            if not data:
                continue
            if data.strip() == "[DONE]":
                self.finished = True
                break
            try:
                payload = json.loads(data)
            except ValueError:
                continue  # a comment or garbage between events: nothing to convert
            if not isinstance(payload, dict):
                continue
            if self.text_chars < KEEP_FOR_ESTIMATE:
                self.text_chars += text_chars(_delta_text(payload))
            if "error" in payload and (
                name == "error" or payload.get("type") == "error" or "choices" not in payload
            ):
                self.failed = _error_message(payload)
                self.finished = True
                break
            for converted in self.converter.feed(payload):
                written.append(client.frame(converted))
            if self.converter.upstream_done:
                self.finished = True
                break
        return b"".join(written)

    def end(self) -> bytes:
        if self.failed:
            return self._error(
                f"The upstream failed mid-stream: {self.failed}", "upstream_error", 502
            )
        client = self.client
        return b"".join(client.frame(e) for e in self.converter.finish()) + client.end_of_stream()

    def failure_events(self, message: str, code: str, status: int) -> bytes:
        events = self.converter.fail(message, code)
        if events:
            return b"".join(self.client.frame(event) for event in events)
        return super().failure_events(message, code, status)

    def usage(self):
        return self.converter.usage

    def output_chars(self) -> int:
        return self.text_chars


def _error_message(payload: dict) -> str:
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "error")[:300]
    return str(error)[:300]
