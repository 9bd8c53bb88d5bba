"""The API formats: one object per /v1 endpoint a client can call (and an upstream answer).

A format knows its own wire format and nothing else: it parses and validates a client's body
(a 400 in the client's own envelope for what the API would refuse), gives the bounds the hold
needs (an upper bound of the prompt's tokens and of the completion's), reads usage from its
answers and stream events, says which stream events end a stream, and writes events and the
in-band failure event in its framing. Conversions between formats live in `convert/`, the
loop that streams in `streaming`, the error envelopes in `errors`.
"""

import json
import re

from django.conf import settings

from airouter.relay import usage
from airouter.relay.convert.responses import failed_response
from airouter.relay.errors import anthropic_envelope, bad_request, envelope
from airouter.relay.usage import MAX_TOKENS
from airouter.text import storable

MEDIA_PART_TOKENS = 2000  # held for one image or audio part, whatever its size
# Parts held at MEDIA_PART_TOKENS. Documents and files are not among them: a text or PDF
# document may hold any number of tokens, so its bytes count like text.
MEDIA_TYPES = frozenset({"image_url", "input_audio", "image", "input_image"})
MAX_CHOICES = 128  # OpenAI's own limit of n
# Keys whose strings are not text a model reads or writes (for text_chars).
SKIP_KEYS = frozenset(
    {
        "model",
        "id",
        "type",
        "role",
        "object",
        "status",
        "finish_reason",
        "stop_reason",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "signature",
        "data",
        "url",
        "image_url",
        "media_type",
        "file_data",
        "encrypted_content",
        "stream",
        "stream_options",
        "metadata",
        "user",
        "include",
    }
)


def load_object(raw: bytes) -> dict:
    """The body as a JSON object, or the 400 every format answers otherwise."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        body = None
    if not isinstance(body, dict):
        raise bad_request(
            "We could not parse the JSON body of your request. The body must be a JSON object."
        )
    return body


MAX_MODEL_LENGTH = 200  # what a usage record keeps


def _model(body: dict) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter (a string).", "model")
    if len(model) > MAX_MODEL_LENGTH or not model.isprintable() or storable(model) != model:
        raise bad_request(
            f"Invalid 'model': a model name is at most {MAX_MODEL_LENGTH} printable characters.",
            "model",
        )


def _type(body: dict, name: str, types: tuple, what: str) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, types):
        raise bad_request(f"Invalid type for '{name}': expected {what}.", name)


def _count(body: dict, name: str, maximum: int = MAX_TOKENS, *, required=False) -> None:
    """A positive whole number up to `maximum` (more than any model takes: a bigger one would
    only overflow the hold's arithmetic)."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"Missing required parameter: '{name}'.", name)
        return
    if type(value) is not int or not 1 <= value <= maximum:
        raise bad_request(f"Invalid '{name}': expected an integer from 1 to {maximum}.", name)


def _stream_flag(body: dict) -> None:
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise bad_request("Invalid type for 'stream': expected a boolean.", "stream")


def media_parts(value, depth=0) -> tuple[int, int]:
    """(media parts, their bytes of strings) found in content lists: images, audio and
    documents are held at MEDIA_PART_TOKENS each instead of their (base64) size."""
    if depth > 6:
        return 0, 0
    parts = size = 0
    if isinstance(value, list):
        for item in value:
            p, s = media_parts(item, depth + 1)
            parts, size = parts + p, size + s
    elif isinstance(value, dict):
        if isinstance(value.get("type"), str) and value["type"] in MEDIA_TYPES:
            return 1, _strings_length(value)
        for key in ("messages", "content", "input", "output"):
            if key in value:
                p, s = media_parts(value[key], depth + 1)
                parts, size = parts + p, size + s
    return parts, size


def _strings_length(value, depth=0) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict) and depth < 4:
        return sum(_strings_length(v, depth + 1) for v in value.values())
    return 0


def text_chars(value, depth=0) -> int:
    """Characters of text in a request or an answer, for estimating tokens when an upstream
    reports no usage: every string, but names, ids and media data (SKIP_KEYS)."""
    if isinstance(value, str):
        return len(value)
    if depth > 10:
        return 0
    if isinstance(value, list):
        return sum(text_chars(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return sum(text_chars(v, depth + 1) for k, v in value.items() if k not in SKIP_KEYS)
    return 0


def dumps(body: dict) -> bytes:
    """Compact JSON in UTF-8 (CJK stays 3 bytes a character, not a 6-byte escape); a body
    holding a lone surrogate (valid JSON, not UTF-8) is written with escapes instead."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()


EVENT_LINE = re.compile(rb"^event:\s*(\S+)", re.MULTILINE)
DONE = b"data: [DONE]\n\n"


class ClientFormat:
    """A client API. `endpoint` is its path below /v1 and the name the rest of the relay
    uses for it."""

    endpoint = ""
    read_usage = staticmethod(usage.from_chat)  # the usage object of a whole answer
    # Stream events that end a stream of this format (the first one: how to name them).
    final_events: tuple = (b"[DONE]",)
    usage_only_events = True  # a usage-only chunk the client did not ask for is dropped

    # --- streams: what the relay reads in them and how it writes them ---
    def ends(self, out: bytes) -> bool:
        """Whether these complete events hold the stream's final one."""
        return b"[DONE]" in out and (b"data: [DONE]" in out or b"data:[DONE]" in out)

    def stream_usage(self, payload: dict):
        """The usage object a stream event carries, if any."""
        found = payload.get("usage")
        return found if isinstance(found, dict) else None

    def merge_usage(self, running, found: dict) -> dict:
        return found  # each report is the whole so far

    def in_band_error(self, out: bytes) -> bool:
        """Whether these events hold an error event the upstream sent mid-stream."""
        return b'data: {"error"' in out or b'data:{"error"' in out

    def frame(self, event: dict) -> bytes:
        return b"data: " + dumps(event) + b"\n\n"

    def end_of_stream(self) -> bytes:
        """What follows the last converted event."""
        return DONE

    def failure_event(self, message: str, code: str, status: int, exchange) -> bytes:
        """The event that ends a stream that failed after it started."""
        body = envelope(message, code, code)
        body["error"]["status"] = status
        return self.frame(body) + DONE

    def parse(self, raw: bytes) -> dict:
        body = load_object(raw)
        _model(body)
        _stream_flag(body)
        self.validate(body)
        return body

    def validate(self, body: dict) -> None:
        raise NotImplementedError

    def is_stream(self, body: dict) -> bool:
        return body.get("stream") is True

    def prompt_bound(self, raw_length: int, body: dict) -> int:
        """An upper bound of the prompt's tokens: text never takes more than one token per
        two bytes of JSON (CJK included); media parts count MEDIA_PART_TOKENS each."""
        parts, size = media_parts(body)
        return max(0, raw_length - size) // 2 + parts * MEDIA_PART_TOKENS + 1

    def completion_bound(self, body: dict) -> int:
        raise NotImplementedError


class Chat(ClientFormat):
    endpoint = "chat/completions"
    field, types, what = "messages", (list,), "an array"

    def validate(self, body):
        value = body.get(self.field)
        if value is None:
            raise bad_request(f"Missing required parameter: '{self.field}'.", self.field)
        if not isinstance(value, self.types):
            raise bad_request(f"Invalid type for '{self.field}': expected {self.what}.", self.field)
        if self.field == "messages" and not value:
            raise bad_request(
                "Invalid 'messages': the array must not be empty (give at least one message).",
                "messages",
            )
        _type(body, "stream_options", (dict,), "an object")
        for name in ("max_tokens", "max_completion_tokens"):
            _count(body, name)
        for name in ("n", "best_of"):
            _count(body, name, MAX_CHOICES)

    def completion_bound(self, body):
        """The per-choice limit times the choices generated (`n`, or `best_of` on
        /v1/completions, which generates that many)."""
        per_choice = settings.RELAY_DEFAULT_MAX_TOKENS
        for name in ("max_completion_tokens", "max_tokens"):
            if body.get(name) is not None:
                per_choice = body[name]
                break
        choices = body.get("n") or 1
        if self.endpoint == "completions":
            choices = max(choices, body.get("best_of") or 1)
        return per_choice * choices


class Completions(Chat):
    endpoint = "completions"
    field, types, what = "prompt", (str, list), "a string or an array"


class Embeddings(Chat):
    endpoint = "embeddings"
    field, types, what = "input", (str, list), "a string or an array"

    def is_stream(self, body):
        return False

    def completion_bound(self, body):
        return 0


ROLES = ("user", "assistant", "system")


class NamedEvents(ClientFormat):
    """Streams of `event: <type>` / `data: <json>` pairs (Anthropic's, Responses')."""

    usage_only_events = False

    def ends(self, out):
        if not any(mark in out for mark in self.final_events):
            return False
        names = set(EVENT_LINE.findall(out))
        return any(mark in names for mark in self.final_events) or any(
            b'"type":"' + mark + b'"' in out or b'"type": "' + mark + b'"' in out
            for mark in self.final_events
        )

    def in_band_error(self, out):
        return bool(set(EVENT_LINE.findall(out)) & self.error_events)

    def frame(self, event):
        return b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n"

    def end_of_stream(self):
        return b""


class Messages(NamedEvents):
    """Anthropic's Messages API."""

    endpoint = "messages"
    requires_max_tokens = True
    read_usage = staticmethod(usage.from_messages)
    final_events = (b"message_stop",)
    error_events = frozenset({b"error"})

    def stream_usage(self, payload):
        """message_start has the input counts (in its message), message_delta the output."""
        message = payload.get("message")
        found = message.get("usage") if isinstance(message, dict) else payload.get("usage")
        return found if isinstance(found, dict) else None

    def merge_usage(self, running, found):
        return usage.merge_messages_event(running or {}, found)

    def failure_event(self, message, code, status, exchange):
        body = anthropic_envelope(status, message)
        body["error"]["type"] = "overloaded_error" if status in (503, 529) else "api_error"
        return b"event: error\ndata: " + dumps(body) + b"\n\n"

    def validate(self, body):
        if self.requires_max_tokens:
            _count(body, "max_tokens", required=True)
        messages = body.get("messages")
        if messages is None:
            raise bad_request("messages: Field required", "messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages: expected a non-empty array of messages", "messages")
        for n, message in enumerate(messages):
            # "system" mid-conversation: Anthropic's beta that Claude Code uses
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise bad_request(
                    f"messages.{n}: expected an object with role 'user' or 'assistant'",
                    "messages",
                )
            if not isinstance(message.get("content"), str | list):
                raise bad_request(
                    f"messages.{n}.content: expected a string or an array of content blocks",
                    "messages",
                )
        _type(body, "system", (str, list), "a string or an array of text blocks")
        _type(body, "tools", (list,), "an array")
        _type(body, "metadata", (dict,), "an object")
        _type(body, "stop_sequences", (list,), "an array of strings")

    def completion_bound(self, body):
        return body.get("max_tokens") or settings.RELAY_DEFAULT_MAX_TOKENS


class CountTokens(Messages):
    endpoint = "messages/count_tokens"
    requires_max_tokens = False

    def is_stream(self, body):
        return False

    def completion_bound(self, body):
        return 0


STORED_STATE = ("previous_response_id", "conversation", "prompt")


class Responses(NamedEvents):
    """OpenAI's Responses API."""

    endpoint = "responses"
    read_usage = staticmethod(usage.from_responses)
    final_events = (b"response.completed", b"response.incomplete", b"response.failed")
    error_events = frozenset({b"error", b"response.failed"})

    def stream_usage(self, payload):
        """The final event's response object has it."""
        response = payload.get("response")
        found = response.get("usage") if isinstance(response, dict) else None
        return found if isinstance(found, dict) else None

    def failure_event(self, message, code, status, exchange):
        response = failed_response(exchange.body, "resp_" + exchange.request_id, message, code)
        return self.frame({"type": "response.failed", "sequence_number": 0, "response": response})

    def validate(self, body):
        value = body.get("input")
        if value is None:
            raise bad_request("Missing required parameter: 'input'.", "input")
        if not isinstance(value, str | list):
            raise bad_request("Invalid type for 'input': expected a string or an array.", "input")
        _type(body, "instructions", (str,), "a string")
        _type(body, "tools", (list,), "an array")
        _type(body, "reasoning", (dict,), "an object")
        _type(body, "text", (dict,), "an object")
        _count(body, "max_output_tokens")
        for name in STORED_STATE:
            if body.get(name) is not None:
                raise bad_request(
                    f"'{name}' is not supported: the router keeps no conversations or prompts "
                    "(upstreams it may fail over to would not know them, and the hold could not "
                    "bound them). Send the whole conversation in 'input', with store: false.",
                    name,
                )

    def completion_bound(self, body):
        return body.get("max_output_tokens") or settings.RELAY_DEFAULT_MAX_TOKENS


FORMATS = {
    f.endpoint: f
    for f in (Chat(), Completions(), Embeddings(), Messages(), CountTokens(), Responses())
}
