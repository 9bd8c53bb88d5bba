"""How a channel serves a client format: natively (bytes pass through) or converted.

| client calls          | openai channel    | openai, --responses-api | anthropic channel      |
|-----------------------|-------------------|-------------------------|------------------------|
| chat/completions      | native            | native                  | Messages               |
| completions, embeddings | native          | native                  | not served (routing)   |
| messages              | chat              | chat                    | native                 |
| responses             | chat              | native                  | Messages (via chat)    |

A mock channel (built in, no upstream) serves every client format natively.

Conversions go through chat completions as the hub: a Responses request for an anthropic
channel is converted Responses -> chat -> Messages, and its answer back the same way.
"""

from dataclasses import dataclass

from django.conf import settings

from airouter.relay.convert import anthropic, responses
from channels_app.models import Channel

CHAT, MESSAGES, RESPONSES = "chat/completions", "messages", "responses"


@dataclass(frozen=True, slots=True)
class Bridge:
    client: str  # the client's endpoint (its format)
    upstream: str  # the upstream endpoint, whose format the channel answers in

    @property
    def native(self) -> bool:
        return self.client == self.upstream


def bridge(client: str, channel) -> Bridge:
    if channel.kind == Channel.Kind.MOCK:  # answers every format itself
        return Bridge(client, client)
    if channel.kind == Channel.Kind.ANTHROPIC:
        return Bridge(client, MESSAGES if client in (CHAT, MESSAGES, RESPONSES) else client)
    if client == MESSAGES or (client == RESPONSES and not channel.responses_api):
        return Bridge(client, CHAT)
    return Bridge(client, client)


def request_body(b: Bridge, body: dict, stream: bool) -> dict:
    """The client's parsed body as the upstream endpoint wants it (model not mapped yet)."""
    if b.client == MESSAGES:
        return anthropic.messages_request_to_chat(body)
    chat = responses.responses_request_to_chat(body) if b.client == RESPONSES else body
    if b.upstream == MESSAGES:
        return anthropic.chat_request_to_messages(chat, settings.RELAY_DEFAULT_MAX_TOKENS)
    if stream and b.upstream == CHAT:
        chat = dict(chat, stream_options=dict(chat.get("stream_options") or {}, include_usage=True))
    return chat


def answer(b: Bridge, data: dict, model: str, body: dict, request_id: str) -> dict:
    """A whole upstream answer, converted into the client's format."""
    if b.client == MESSAGES:
        return anthropic.chat_response_to_messages(data, model)
    if b.upstream == MESSAGES:
        data = anthropic.messages_response_to_chat(data, model)
    if b.client == RESPONSES:
        return responses.chat_response_to_responses(data, body, "resp_" + request_id)
    return data


class StreamConverter:
    """Upstream stream events (parsed dicts) in, client events (dicts) out, through the hub.

    `first` reads the upstream's events (chat chunks or Anthropic events) into chat chunks,
    or straight into Anthropic events for a Messages client; `second` turns chat chunks into
    the client's events when the client speaks Responses.
    """

    def __init__(self, b: Bridge, model: str, body: dict, request_id: str, include_usage: bool):
        self.first = self.second = None
        if b.client == MESSAGES:  # from chat
            self.first = anthropic.ChatToMessagesStream(model, "msg_" + request_id)
            return
        if b.upstream == MESSAGES:
            wants_usage = include_usage or b.client == RESPONSES
            self.first = anthropic.MessagesToChatStream(
                model, "chatcmpl-" + request_id, wants_usage
            )
        if b.client == RESPONSES:
            self.second = responses.ChatToResponsesStream(body, "resp_" + request_id)

    @property
    def usage(self):
        return (self.first or self.second).usage

    @property
    def upstream_done(self) -> bool:
        """Whether the upstream's own end event (message_stop) came."""
        return getattr(self.first, "done", False)

    def feed(self, event: dict) -> list:
        out = self.first.feed(event) if self.first else [event]
        return self._then(out) if self.second else out

    def finish(self) -> list:
        out = self.first.finish() if self.first else []
        if self.second:
            return [*self._then(out), *self.second.finish()]
        return out

    def fail(self, message: str, code: str) -> list:
        """The client's in-band failure events, when its format has them as events."""
        return self.second.fail(message, code) if self.second else []

    def _then(self, chunks: list) -> list:
        second = self.second
        return [event for chunk in chunks for event in second.feed(chunk)]
