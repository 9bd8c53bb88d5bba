"""Anthropic Messages <-> OpenAI Chat Completions (the router's hub format), both directions,
for requests, whole answers and streams. Pure functions on parsed JSON; odd shapes (None, a
string where a list belongs, unknown block types) are dropped or defaulted, and the only
exception raised is `ConversionError` (no body object, no message left to send).

Messages request -> chat request (`messages_request_to_chat`)
  system (string or text blocks)     -> one leading system message, texts joined by a blank line
  text blocks of a turn              -> content string (joined by a blank line); a list of parts
                                        when the turn has images
  image (base64 / url source)        -> image_url part (`data:<media_type>;base64,...` / the URL)
  document with a text source        -> text; other documents (PDF, file) are dropped
  assistant tool_use                 -> tool_calls (arguments = compact JSON of input)
  assistant thinking                 -> reasoning_content
  user tool_result                   -> role "tool" messages placed before the rest of that
                                        turn; text joined, `is_error` prefixed "Error: ", images
                                        moved into the user message that follows
  tools (custom)                     -> function tools; tool_choice auto/any/tool/none ->
                                        "auto"/"required"/{function}/"none";
                                        disable_parallel_tool_use -> parallel_tool_calls false
  max_tokens, temperature, top_p, model -> same; stop_sequences -> stop (at most 4, OpenAI's cap)
  metadata.user_id -> user; stream -> stream + stream_options.include_usage
  Dropped: top_k, thinking (not mapped to reasoning_effort: many OpenAI-compatible models
  refuse that parameter), redacted_thinking, server tools (web search, bash, text editor...)
  and their blocks, PDFs, cache_control, citations, tool `strict`, container, mcp_servers,
  context_management, service_tier and any other field.

chat request -> Messages request (`chat_request_to_messages`)
  system / developer messages        -> `system` string (joined by a blank line, wherever they
                                        stood)
  user / assistant turns             -> turns; consecutive same-role turns merged, empty ones
                                        dropped; a leading assistant turn gets a "." user turn
                                        before it (Anthropic: "first message must use the user
                                        role"); the final assistant text is right-stripped
  text / image_url parts             -> text / image blocks (data: URL -> base64 source,
                                        http(s) -> url source); whitespace-only text dropped
  assistant tool_calls               -> tool_use (input = parsed arguments, {} if not an object)
  tool messages                      -> tool_result blocks at the start of the next user turn
  tool call ids                      -> characters outside [A-Za-z0-9_-] become "_"
  tools / tool_choice                -> tools with input_schema; auto/required/function/none ->
                                        auto/any/tool/none; parallel_tool_calls false ->
                                        disable_parallel_tool_use (on auto if no choice given)
  max_completion_tokens | max_tokens | default -> max_tokens (Anthropic requires it)
  temperature (clamped to [0, 1]), top_p, stop -> stop_sequences, user -> metadata.user_id
  reasoning_effort low/medium/high (xhigh/max) -> thinking with budget 1024/4096/16384 (32768),
    capped below max_tokens (not under 1024); temperature and top_p removed when thinking is on.
    Not enabled for minimal/none, with a forced tool_choice (any/tool), for an assistant
    prefill, or inside a tool-use loop (the last user turn carries tool_result blocks: Anthropic
    wants a signed thinking block opening that assistant turn, which chat history cannot carry).
  Dropped: reasoning_content of history (no signature), name, audio / file parts, legacy
  function_call / function messages, n, logprobs, top_logprobs, response_format, seed,
  frequency/presence_penalty, logit_bias, stream_options, metadata, store, modalities and any
  other field.

Answers: Anthropic message <-> chat.completion (first choice only), text joined, tool calls
  both ways, thinking <-> reasoning_content (`reasoning` also read; a thinking block made from
  chat carries signature ""), usage through `airouter.relay.usage`. Stop reasons:
  end_turn/stop_sequence/pause_turn -> stop, max_tokens/model_context_window_exceeded -> length,
  tool_use -> tool_calls, refusal -> content_filter; back: stop -> end_turn (which stop sequence
  matched is unknowable), length -> max_tokens, tool_calls/function_call -> tool_use,
  content_filter -> refusal; "stop" (or none) with tool calls -> tool_use.
  Dropped: citations, server tool blocks, redacted_thinking, signatures, logprobs, choices but
  the first.

Streams: `ChatToMessagesStream` (OpenAI chunks in, Anthropic events out) and
`MessagesToChatStream` (Anthropic events in, OpenAI chunks out); see their docstrings.
"""

import hashlib
import json
import math
import re
import time
import uuid
from collections import deque
from types import MappingProxyType

from airouter.relay import usage as usage_io
from airouter.relay.convert import ConversionError
from billing.pricing import Usage

_EMPTY = MappingProxyType({})
_JSON = {"ensure_ascii": False, "separators": (",", ":")}
_TOOL_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")
MAX_OPENAI_STOP = 4

THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768, "max": 32768}
MIN_THINKING_BUDGET = 1024

TO_CHAT_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
TO_MESSAGES_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# ---------------------------------------------------------------------------- small readers


def _dict(value):
    return value if isinstance(value, dict) else _EMPTY


def _list(value):
    return value if isinstance(value, list) else ()


def _str(value) -> str:
    return value if isinstance(value, str) else ""


def _number(value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _dumps(value) -> str:
    return json.dumps(value if isinstance(value, dict) else {}, **_JSON)


def _loads_object(text) -> dict:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _texts(content) -> list[str]:
    """The texts of a string or of a list of text blocks/parts."""
    if isinstance(content, str):
        return [content] if content else []
    out = []
    for block in _list(content):
        if isinstance(block, dict) and block.get("type") == "text":
            text = _str(block.get("text"))
            if text:
                out.append(text)
    return out


def _chat_finish(stop_reason) -> str:
    return TO_CHAT_FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _messages_stop(finish_reason, has_tools: bool) -> str:
    stop = (
        TO_MESSAGES_STOP.get(finish_reason, "end_turn")
        if isinstance(finish_reason, str)
        else "end_turn"
    )
    return "tool_use" if has_tools and stop == "end_turn" else stop


# ------------------------------------------------------------ Messages request -> chat request


def _image_part(block) -> dict | None:
    source = _dict(block.get("source"))
    kind = source.get("type")
    if kind == "base64":
        data, media = _str(source.get("data")), _str(source.get("media_type"))
        if data and media:
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    elif kind == "url":
        url = _str(source.get("url"))
        if url:
            return {"type": "image_url", "image_url": {"url": url}}
    return None


def _document_text(block) -> str:
    source = _dict(block.get("source"))
    kind = source.get("type")
    if kind == "text":
        return _str(source.get("data"))
    if kind == "content":
        return "\n\n".join(_texts(source.get("content")))
    return ""


def _user_content(parts: list):
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _user_turn_to_chat(content, out: list) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    tools, parts = [], []
    for block in _list(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text = _str(block.get("text"))
            if text:
                parts.append({"type": "text", "text": text})
        elif kind == "image":
            part = _image_part(block)
            if part:
                parts.append(part)
        elif kind == "document":
            text = _document_text(block)
            if text:
                parts.append({"type": "text", "text": text})
        elif kind == "tool_result":
            result = block.get("content")
            texts = _texts(result)
            for item in _list(result):
                if isinstance(item, dict) and item.get("type") == "image":
                    part = _image_part(item)
                    if part:
                        parts.append(part)
            text = "\n\n".join(texts)
            if block.get("is_error") is True:
                text = f"Error: {text}" if text else "Error"
            tool_id = _str(block.get("tool_use_id"))
            tools.append({"role": "tool", "tool_call_id": tool_id, "content": text})
    out.extend(tools)
    if parts:
        out.append({"role": "user", "content": _user_content(parts)})


def _assistant_turn_to_chat(content, out: list) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    texts, reasoning, calls = [], [], []
    for block in _list(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text = _str(block.get("text"))
            if text:
                texts.append(text)
        elif kind == "tool_use":
            calls.append(
                {
                    "id": _str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": _str(block.get("name")),
                        "arguments": _dumps(block.get("input")),
                    },
                }
            )
        elif kind == "thinking":
            text = _str(block.get("thinking"))
            if text:
                reasoning.append(text)
    if not (texts or calls or reasoning):
        return
    message = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    out.append(message)


def _tools_to_chat(tools) -> list:
    out = []
    for tool in _list(tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            continue  # a server tool (web search, bash, text editor...): the upstream has none
        name = _str(tool.get("name"))
        if not name:
            continue
        function = {"name": name}
        description = _str(tool.get("description"))
        if description:
            function["description"] = description
        schema = tool.get("input_schema")
        function["parameters"] = (
            schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        )
        out.append({"type": "function", "function": function})
    return out


def messages_request_to_chat(body: dict) -> dict:
    """An Anthropic Messages request -> a chat/completions request."""
    if not isinstance(body, dict):
        raise ConversionError("The request body must be a JSON object.")
    messages = []
    system = "\n\n".join(_texts(body.get("system")))
    if system:
        messages.append({"role": "system", "content": system})
    for message in _list(body.get("messages")):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "user":
            _user_turn_to_chat(message.get("content"), messages)
        elif role == "assistant":
            _assistant_turn_to_chat(message.get("content"), messages)
        elif role == "system":  # a system message mid-conversation (Claude Code sends them)
            text = "\n\n".join(_texts(message.get("content")))
            if text:
                messages.append({"role": "system", "content": text})
    if all(message["role"] == "system" for message in messages):
        raise ConversionError("messages: at least one message is required.", "messages")

    model = body.get("model")
    out = {"model": model} if isinstance(model, str) else {}
    out["messages"] = messages
    max_tokens = usage_io.count(body.get("max_tokens"))
    if max_tokens:
        out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        value = _number(body.get(name))
        if value is not None:
            out[name] = value
    stop = [s for s in _list(body.get("stop_sequences")) if isinstance(s, str) and s]
    if stop:
        out["stop"] = stop[:MAX_OPENAI_STOP]
    user_id = _str(_dict(body.get("metadata")).get("user_id"))
    if user_id:
        # OpenAI takes at most 64 characters; Claude Code sends a longer JSON string.
        out["user"] = (
            user_id if len(user_id) <= 64 else hashlib.sha256(user_id.encode()).hexdigest()
        )
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    tools = _tools_to_chat(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = _dict(body.get("tool_choice"))
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool" and _str(choice.get("name")):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        if choice.get("disable_parallel_tool_use") is True and kind != "none":
            out["parallel_tool_calls"] = False
    return out


# ------------------------------------------------------------ chat request -> Messages request


def _tool_id(value) -> str:
    """A tool call id as Anthropic accepts it (^[A-Za-z0-9_-]+$), the same for the call and
    its result."""
    text = _str(value)
    return _TOOL_ID_BAD.sub("_", text) if text else "toolu_missing"


def _image_block(part) -> dict | None:
    image = part.get("image_url")
    url = _str(_dict(image).get("url")) if not isinstance(image, str) else image
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if data and media_type and encoding == "base64":
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            }
    elif url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def _text_block(text) -> dict | None:
    if isinstance(text, str) and text and not text.isspace():
        return {"type": "text", "text": text}
    return None


def _content_blocks(content) -> list:
    """Text and image blocks of a chat message's content (string or parts)."""
    if isinstance(content, str):
        block = _text_block(content)
        return [block] if block else []
    blocks = []
    for part in _list(content):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            block = _text_block(part.get("text"))
        elif kind == "refusal":
            block = _text_block(part.get("refusal"))
        elif kind == "image_url":
            block = _image_block(part)
        else:
            continue  # input_audio, file...
        if block:
            blocks.append(block)
    return blocks


def _tool_use_blocks(tool_calls, tool_id=_tool_id) -> list:
    blocks = []
    for call in _list(tool_calls):
        if not isinstance(call, dict) or call.get("type") not in (None, "function"):
            continue
        function = _dict(call.get("function"))
        name = _str(function.get("name"))
        if name:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": tool_id(call.get("id")),
                    "name": name,
                    "input": _loads_object(function.get("arguments")),
                }
            )
    return blocks


def _tools_to_messages(tools) -> list:
    out = []
    for tool in _list(tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "function"):
            continue
        function = _dict(tool.get("function"))
        name = _str(function.get("name"))
        if not name:
            continue
        schema = function.get("parameters")
        if not isinstance(schema, dict):
            schema = {"type": "object", "properties": {}}
        elif "type" not in schema:
            schema = {"type": "object", **schema}
        entry = {"name": name}
        description = _str(function.get("description"))
        if description:
            entry["description"] = description
        entry["input_schema"] = schema
        out.append(entry)
    return out


def _tool_choice_to_messages(choice) -> dict | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    name = _str(_dict(_dict(choice).get("function")).get("name"))
    return {"type": "tool", "name": name} if name else None


def _turns(messages) -> tuple[list, list]:
    """(system texts, merged user/assistant turns as [role, blocks])."""
    system, turns = [], []
    for message in _list(messages):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_texts(content))
            continue
        if role == "user":
            blocks = _content_blocks(content)
        elif role == "assistant":
            blocks = _content_blocks(content) + _tool_use_blocks(message.get("tool_calls"))
        elif role == "tool":
            role = "user"
            text = "\n\n".join(_texts(content))
            result = {"type": "tool_result", "tool_use_id": _tool_id(message.get("tool_call_id"))}
            if text:
                result["content"] = text
            blocks = [result]
        else:
            continue  # legacy "function" messages and unknown roles
        if not blocks:
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append([role, blocks])
    return system, turns


def _not_tool_result(block: dict) -> bool:
    return block["type"] != "tool_result"


def _thinking_budget(effort, max_tokens: int) -> int | None:
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        return None
    if max_tokens > budget:
        return budget
    return max_tokens - 1 if max_tokens - 1 >= MIN_THINKING_BUDGET else None


def chat_request_to_messages(body: dict, default_max_tokens: int) -> dict:
    """A chat/completions request -> an Anthropic Messages request."""
    if not isinstance(body, dict):
        raise ConversionError("The request body must be a JSON object.")
    system, turns = _turns(body.get("messages"))
    if not turns:
        raise ConversionError(
            "messages: at least one user or assistant message is required.", "messages"
        )
    for role, blocks in turns:
        if role == "user":  # Anthropic wants a turn's tool results before anything else in it
            blocks.sort(key=_not_tool_result)
    if turns[0][0] == "assistant":
        turns.insert(0, ["user", [{"type": "text", "text": "."}]])
    last_role, last_blocks = turns[-1]
    if last_role == "assistant" and last_blocks[-1]["type"] == "text":
        text = last_blocks[-1]["text"].rstrip()  # a prefill may not end with whitespace
        last_blocks[-1] = {"type": "text", "text": text}

    out = {"model": body.get("model") if isinstance(body.get("model"), str) else ""}
    max_tokens = (
        usage_io.count(body.get("max_completion_tokens"))
        or usage_io.count(body.get("max_tokens"))
        or default_max_tokens
    )
    out["max_tokens"] = max_tokens
    out["messages"] = [{"role": role, "content": blocks} for role, blocks in turns]
    if system:
        out["system"] = "\n\n".join(system)
    temperature = _number(body.get("temperature"))
    if temperature is not None:
        out["temperature"] = min(max(temperature, 0), 1)
    top_p = _number(body.get("top_p"))
    if top_p is not None:
        out["top_p"] = top_p
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else _list(stop)
    stop = [s for s in stop if isinstance(s, str) and s and not s.isspace()]
    if stop:
        out["stop_sequences"] = stop
    user = _str(body.get("user")) or _str(body.get("safety_identifier"))
    if user:
        out["metadata"] = {"user_id": user}
    if body.get("stream") is True:
        out["stream"] = True

    tools = _tools_to_messages(body.get("tools"))
    choice = None
    if tools:
        out["tools"] = tools
        choice = _tool_choice_to_messages(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False and (choice or _EMPTY).get("type") != "none":
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice:
            out["tool_choice"] = choice

    budget = _thinking_budget(body.get("reasoning_effort"), max_tokens)
    if (
        budget
        and (choice is None or choice["type"] in ("auto", "none"))
        and last_role == "user"
        and not any(block["type"] == "tool_result" for block in last_blocks)
    ):
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        out.pop("temperature", None)
        out.pop("top_p", None)
    return out


# ---------------------------------------------------------------------------- whole answers


def messages_response_to_chat(resp: dict, model: str) -> dict:
    """A non-stream Anthropic message -> a chat.completion object."""
    if not isinstance(resp, dict):
        raise ConversionError("The upstream answer is not a JSON object.")
    texts, reasoning, calls = [], [], []
    for block in _list(resp.get("content")):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(_str(block.get("text")))
        elif kind == "thinking":
            reasoning.append(_str(block.get("thinking")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": _str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": _str(block.get("name")),
                        "arguments": _dumps(block.get("input")),
                    },
                }
            )
    text = "".join(texts)
    message = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    found = usage_io.from_messages(resp.get("usage"))
    return {
        "id": _str(resp.get("id")) or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _chat_finish(resp.get("stop_reason")),
            }
        ],
        "usage": usage_io.to_chat(found or Usage()),
    }


def _answer_tool_id(value) -> str:
    """An answer's tool call id, kept as it is: the client sends it back in its tool result."""
    return value if isinstance(value, str) and value else f"toolu_{uuid.uuid4().hex}"


def chat_response_to_messages(resp: dict, model: str) -> dict:
    """A non-stream chat.completion -> an Anthropic message object (first choice only)."""
    if not isinstance(resp, dict):
        raise ConversionError("The upstream answer is not a JSON object.")
    choices = _list(resp.get("choices"))
    choice = _dict(choices[0]) if choices else _EMPTY
    message = _dict(choice.get("message"))
    content = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = "".join(_texts(message.get("content"))) or _str(message.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    tools = _tool_use_blocks(message.get("tool_calls"), _answer_tool_id)
    content.extend(tools)
    resp_id = _str(resp.get("id")) or uuid.uuid4().hex
    found = usage_io.from_chat(resp.get("usage"))
    return {
        "id": resp_id if resp_id.startswith("msg_") else f"msg_{resp_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _messages_stop(choice.get("finish_reason"), bool(tools)),
        "stop_sequence": None,
        "usage": usage_io.to_messages(found or Usage()),
    }


# ---------------------------------------------------------------------------- streams

_PENDING, _OPEN, _CLOSED = 0, 1, 2


class _Block:
    """One Anthropic content block being built from a chat stream."""

    __slots__ = ("kind", "parts", "id", "name", "state", "index", "done")

    def __init__(self, kind: str, parts: list):
        self.kind = kind  # "text", "thinking" or "tool"
        self.parts = parts  # text not sent yet; for a tool, every argument fragment
        self.id = ""
        self.name = ""
        self.state = _PENDING
        self.index = -1
        self.done = False  # a tool's arguments form a whole JSON object


class ChatToMessagesStream:
    """chat.completion.chunk dicts in (as parsed from each `data:` line of an OpenAI stream),
    Anthropic stream events out (dicts, each with its "type"; the caller frames them as
    `event: <type>\\ndata: <json>\\n\\n`).

    Blocks are sequential: one is open at a time, each closed (content_block_stop) before the
    next starts. Reasoning deltas (`reasoning_content` or `reasoning`) make thinking blocks,
    content makes text blocks, and each tool call index a tool_use block. A tool call that
    streams while another one's block is open (upstreams that interleave parallel calls) is
    buffered: its block opens, with the buffered arguments in one delta, once the open call's
    arguments form a whole JSON object, or at `finish()`. Text arriving while an unfinished
    tool call is open waits the same way. A call that never got a name is dropped.
    """

    def __init__(self, model: str, message_id: str):
        self.model = model
        self.message_id = message_id
        self.usage: Usage | None = None
        self._started = False
        self._finished = False
        self._finish_reason = None
        self._open: _Block | None = None
        self._pending: deque[_Block] = deque()
        self._tools: dict[int, _Block] = {}
        self._last_tool = 0
        self._next_index = 0
        self._has_tool = False

    def _start_message(self) -> dict:
        self._started = True
        return {
            "type": "message_start",
            "message": {
                "id": self.message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage_io.to_messages(self.usage or Usage()),
            },
        }

    def feed(self, chunk: dict) -> list[dict]:
        if self._finished or not isinstance(chunk, dict):
            return []
        found = usage_io.from_chat(chunk.get("usage"))
        if found is not None:
            self.usage = found
        out = [] if self._started else [self._start_message()]
        for choice in _list(chunk.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    self._text("thinking", reasoning, out)
                content = delta.get("content") or delta.get("refusal")
                if isinstance(content, str) and content:
                    self._text("text", content, out)
                calls = delta.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        if isinstance(call, dict):
                            self._tool(call, out)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self._finish_reason = reason
        return out

    def finish(self) -> list[dict]:
        if self._finished:
            return []
        self._finished = True
        out = [] if self._started else [self._start_message()]
        while self._pending:
            block = self._pending.popleft()
            if block.kind != "tool" or block.name:
                self._close(out)
                self._begin(block, out)
        self._close(out)
        out.append(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _messages_stop(self._finish_reason, self._has_tool),
                    "stop_sequence": None,
                },
                "usage": usage_io.to_messages(self.usage or Usage()),
            }
        )
        out.append({"type": "message_stop"})
        return out

    # -- blocks

    def _text(self, kind: str, text: str, out: list) -> None:
        block = self._open
        if block is not None and block.kind == kind and not self._pending:
            out.append(self._delta(block.index, kind, text))
            return
        if self._pending or (block is not None and block.kind == "tool" and not self._done(block)):
            last = self._pending[-1] if self._pending else None
            if last is not None and last.kind == kind:
                last.parts.append(text)
            else:
                self._pending.append(_Block(kind, [text]))
            return
        self._close(out)
        self._begin(_Block(kind, [text]), out)

    def _tool(self, call: dict, out: list) -> None:
        function = _dict(call.get("function"))
        call_id = _str(call.get("id"))
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            known = any(b.id == call_id for b in self._tools.values())
            index = max(self._tools, default=-1) + 1 if call_id and not known else self._last_tool
        self._last_tool = index
        block = self._tools.get(index)
        if block is None or (call_id and block.id and call_id != block.id):
            block = self._tools[index] = _Block("tool", [])
            self._pending.append(block)
        if block.state == _PENDING:
            if call_id and not block.id:
                block.id = call_id
            name = function.get("name")
            if isinstance(name, str) and name and not block.name:
                block.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, **_JSON)
        if isinstance(arguments, str) and arguments:
            if block.state == _OPEN:
                out.append(self._delta(block.index, "tool", arguments))
                block.parts.append(arguments)
            elif block.state == _PENDING:
                block.parts.append(arguments)
            # a closed call's arguments were whole already: nothing can follow them
        if self._pending:
            self._advance(out)

    def _advance(self, out: list) -> None:
        """Open the waiting blocks that may open now, in the order they came."""
        while self._pending:
            head = self._pending[0]
            if head.kind == "tool" and not head.name:
                return
            block = self._open
            if block is not None and block.kind == "tool" and not self._done(block):
                return
            self._pending.popleft()
            self._close(out)
            self._begin(head, out)

    @staticmethod
    def _done(block: _Block) -> bool:
        """Whether a tool call's arguments are a whole JSON object (checked only when something
        waits behind it, and only when the last fragment ends with "}")."""
        if block.done:
            return True
        for part in reversed(block.parts):
            tail = part.rstrip()
            if tail:
                if tail[-1] != "}":
                    return False
                break
        else:
            return False
        try:
            json.loads("".join(block.parts))
        except (ValueError, RecursionError):
            return False
        block.done = True
        return True

    def _begin(self, block: _Block, out: list) -> None:
        block.index = index = self._next_index
        self._next_index += 1
        block.state = _OPEN
        self._open = block
        kind = block.kind
        if kind == "tool":
            self._has_tool = True
            content = {
                "type": "tool_use",
                "id": block.id or f"toolu_{self.message_id}_{index}",
                "name": block.name,
                "input": {},
            }
        elif kind == "text":
            content = {"type": "text", "text": ""}
        else:
            content = {"type": "thinking", "thinking": "", "signature": ""}
        out.append({"type": "content_block_start", "index": index, "content_block": content})
        if block.parts:
            text = "".join(block.parts)
            out.append(self._delta(index, kind, text))
            block.parts = [text] if kind == "tool" else []

    def _close(self, out: list) -> None:
        block = self._open
        if block is not None:
            block.state = _CLOSED
            if block.kind != "tool":
                block.parts = []
            self._open = None
            out.append({"type": "content_block_stop", "index": block.index})

    @staticmethod
    def _delta(index: int, kind: str, text: str) -> dict:
        if kind == "text":
            delta = {"type": "text_delta", "text": text}
        elif kind == "tool":
            delta = {"type": "input_json_delta", "partial_json": text}
        else:
            delta = {"type": "thinking_delta", "thinking": text}
        return {"type": "content_block_delta", "index": index, "delta": delta}


class MessagesToChatStream:
    """Anthropic stream events in (each a dict parsed from the event's data line; its "type"
    says which), chat.completion.chunk dicts out (the caller frames them as `data: <json>\\n\\n`
    and adds `data: [DONE]`).

    message_start -> a first chunk with {"role": "assistant", "content": ""}; text_delta ->
    content; thinking_delta -> reasoning_content; a tool_use block -> a tool call (index = the
    count of calls before it) with its id and name, then its input_json_delta fragments as
    arguments; message_delta -> an empty delta with the finish_reason; message_stop sets
    `done`; an `error` event sets `error` (its "error" object) and yields nothing. ping,
    signature_delta, citations_delta, redacted_thinking and server tool blocks yield nothing.
    """

    def __init__(self, model: str, chunk_id: str, include_usage: bool):
        self.model = model
        self.chunk_id = chunk_id
        self.include_usage = include_usage
        self.created = int(time.time())
        self.usage: Usage | None = None
        self.done = False
        self.error: dict | None = None
        self._usage: dict = {}
        self._tool_index: dict = {}  # content block index -> tool call index
        self._finished = False

    def _chunk(self, delta: dict, finish_reason=None) -> dict:
        chunk = {
            "id": self.chunk_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _merge_usage(self, found) -> None:
        if isinstance(found, dict):
            usage_io.merge_messages_event(self._usage, found)
            self.usage = usage_io.from_messages(self._usage)

    def feed(self, event: dict) -> list[dict]:
        if self._finished or not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = _dict(event.get("delta"))
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                text = _str(delta.get("text"))
                return [self._chunk({"content": text})] if text else []
            if delta_kind == "input_json_delta":
                index = event.get("index")
                tool = self._tool_index.get(index) if isinstance(index, int) else None
                fragment = _str(delta.get("partial_json"))
                if tool is None or not fragment:
                    return []
                call = {"index": tool, "function": {"arguments": fragment}}
                return [self._chunk({"tool_calls": [call]})]
            if delta_kind == "thinking_delta":
                text = _str(delta.get("thinking"))
                return [self._chunk({"reasoning_content": text})] if text else []
            return []
        if kind == "content_block_start":
            block = _dict(event.get("content_block"))
            block_kind = block.get("type")
            if block_kind == "tool_use":
                tool = len(self._tool_index)
                index = event.get("index")
                self._tool_index[index if isinstance(index, int) else -1 - tool] = tool
                tool_input = block.get("input")
                call = {
                    "index": tool,
                    "id": _str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": _str(block.get("name")),
                        "arguments": _dumps(tool_input) if tool_input else "",
                    },
                }
                return [self._chunk({"tool_calls": [call]})]
            if block_kind == "text":
                text = _str(block.get("text"))
                return [self._chunk({"content": text})] if text else []
            if block_kind == "thinking":
                text = _str(block.get("thinking"))
                return [self._chunk({"reasoning_content": text})] if text else []
            return []
        if kind == "message_start":
            self._merge_usage(_dict(event.get("message")).get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            self._merge_usage(event.get("usage"))
            reason = _chat_finish(_dict(event.get("delta")).get("stop_reason"))
            return [self._chunk({}, reason)]
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = event.get("error")
            self.error = (
                error
                if isinstance(error, dict)
                else {"type": "api_error", "message": "The upstream stream failed."}
            )
        return []

    def finish(self) -> list[dict]:
        if self._finished:
            return []
        self._finished = True
        if not self.include_usage:
            return []
        return [
            {
                "id": self.chunk_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_io.to_chat(self.usage or Usage()),
            }
        ]
