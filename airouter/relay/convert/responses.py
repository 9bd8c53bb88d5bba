"""OpenAI Responses API (what Codex CLI speaks) <-> OpenAI Chat Completions (the hub format).

Pure functions on parsed JSON, no I/O. Odd shapes (None, a string where a list belongs, unknown
item types) are dropped or defaulted; the only exception raised is `ConversionError`.

Request, Responses -> chat/completions (`responses_request_to_chat`):
- `instructions` -> a leading system message; `input` as a string -> one user message.
- `input` items:
  - messages (`type: "message"`, or a `role` and no type), role user/assistant/system, and
    developer -> system. Content: a string, or parts: `input_text`/`output_text` (and a
    `refusal` in an assistant turn) -> text, `input_image` with an `image_url` (its `detail`
    kept) -> an `image_url` part on user messages. Text alone becomes a plain string (several
    text parts joined by newlines).
  - `function_call` {call_id, name, arguments} and `custom_tool_call` {call_id, name, input}
    -> `tool_calls` of an assistant message (a custom call's arguments are
    `{"input": <input>}` as JSON). Consecutive calls, and the assistant text just before them,
    make ONE assistant message, as chat requires.
  - `function_call_output` / `custom_tool_call_output` {call_id, output} -> a `tool` message
    (text parts joined); images in an output -> one user message after the run of tool
    messages (chat tool messages carry text only).
- tools: `function` -> a chat function; `custom` (Codex's freeform apply_patch) -> a function
  taking {"input": string} whose description carries the grammar; a `namespace`'s function and
  custom tools -> functions named `<namespace>__<name>` (or `<namespace><name>` when the
  namespace ends in "_", as Codex's `mcp__server__`), mapped back to {namespace, name} in the
  answer. tool_choice: "auto"/"none"/"required" as is, {"type": "function"|"custom", name} ->
  that function, anything else -> "auto" (sent only when tools remain).
- max_output_tokens -> max_tokens; temperature, top_p, parallel_tool_calls (with tools);
  user or safety_identifier -> user; reasoning.effort -> reasoning_effort; text.format
  json_schema/json_object -> response_format; stream -> stream + include_usage; model copied.
- `previous_response_id` is refused (ConversionError): nothing keeps the conversation here.

Dropped from the request: `reasoning` input items (their encrypted_content means nothing to
chat), `local_shell_call`, `web_search_call`, `item_reference`, `input_file`, `input_audio`,
images given only by `file_id` and any unknown item or part; built-in tools (web_search,
file_search, local_shell, computer_use, image_generation, code_interpreter, mcp, tool_search
and other non-function tools); store, include, prompt_cache_key, service_tier, truncation,
background, metadata, reasoning.summary, text.verbosity, top_logprobs, max_tool_calls.

Answer, chat -> Responses (`chat_response_to_responses`, `ChatToResponsesStream`): the
message's `reasoning_content` (or `reasoning`) -> a `reasoning` item with a summary_text,
its text -> a `message` item (output_text; a refusal -> a refusal part), each tool call -> a
`function_call` item, or a `custom_tool_call` item (input = arguments' "input") when the
request declared that tool as custom. finish_reason "length" -> status "incomplete" with
{"reason": "max_output_tokens"} ("content_filter" likewise); usage -> Responses usage
(`usage.to_responses`, plus the `cache_write_tokens` detail the openai SDK requires). The
request's settings are echoed in the response object; an item's namespace is restored.
Dropped from the answer: logprobs, annotations, audio, choices after the first,
`system_fingerprint`.
"""

import json
import time

from airouter.relay.convert import ConversionError
from airouter.relay.usage import from_chat, to_responses
from billing.pricing import Usage

PREVIOUS_RESPONSE_MESSAGE = (
    "previous_response_id is not supported through this channel: send the whole conversation "
    "in `input` (with store: false)."
)
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})
TOOL_CHOICES = frozenset({"auto", "none", "required"})
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
DEFAULT_NAMESPACE = "functions"  # Codex's namespace for top-level tools


# --- small readers -----------------------------------------------------------------------


def _str(value, default=""):
    return value if isinstance(value, str) else default


def _bool(value, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def _number(value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _dumps(value) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return ""


def _arguments(value) -> str:
    """Tool-call arguments as the JSON string both APIs carry (some upstreams send objects)."""
    if isinstance(value, str):
        return value
    return _dumps(value) if isinstance(value, dict | list) else ""


def _text_of(content) -> str:
    """The text of chat message content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _chat_name(namespace, name: str) -> str:
    """The flat chat function name of a (namespaced) Responses tool."""
    if not isinstance(namespace, str) or namespace in ("", DEFAULT_NAMESPACE):
        return name
    return namespace + name if namespace.endswith("_") else f"{namespace}__{name}"


def _declared_tools(tools):
    """(chat name, namespace or None, tool) for each function and custom tool of a request,
    namespaces opened; the first of a duplicated name wins."""
    seen = set()
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        namespace, nested = None, (tool,)
        if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
            namespace, nested = _str(tool.get("name")) or None, tool["tools"]
            if namespace == DEFAULT_NAMESPACE:
                namespace = None
        for t in nested:
            if not isinstance(t, dict) or t.get("type") not in ("function", "custom"):
                continue  # built-in tools have no chat equivalent
            name = t.get("name")
            if isinstance(name, str) and name and _chat_name(namespace, name) not in seen:
                seen.add(_chat_name(namespace, name))
                yield _chat_name(namespace, name), namespace, t


def _tool_table(tools) -> dict:
    """chat function name -> (kind "function"|"custom", namespace or None, Responses name)."""
    return {chat: (t["type"], ns, t["name"]) for chat, ns, t in _declared_tools(tools)}


# --- request: Responses -> chat ----------------------------------------------------------


def _custom_parameters(tool: dict) -> dict:
    fmt = tool.get("format")
    definition = fmt.get("definition") if isinstance(fmt, dict) else None
    if isinstance(definition, str) and definition:
        syntax = _str(fmt.get("syntax"), "lark")
        about = (
            f"The tool's raw input, as plain text (not JSON-encoded). It must match this "
            f"{syntax} grammar:\n{definition}"
        )
    else:
        about = "The tool's raw input, as plain text."
    return {
        "type": "object",
        "properties": {"input": {"type": "string", "description": about}},
        "required": ["input"],
    }


def _chat_tools(tools) -> list:
    out = []
    for chat_name, _, tool in _declared_tools(tools):
        function = {"name": chat_name}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if tool["type"] == "custom":
            function["parameters"] = _custom_parameters(tool)
        else:
            params = tool.get("parameters")
            function["parameters"] = (
                params if isinstance(params, dict) else {"type": "object", "properties": {}}
            )
            if isinstance(tool.get("strict"), bool):
                function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice):
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return choice
    if (
        isinstance(choice, dict)
        and choice.get("type") in ("function", "custom")
        and isinstance(choice.get("name"), str)
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    return "auto"


def _image_part(part: dict):
    url = part.get("image_url")
    if isinstance(url, dict):  # chat's shape, sent by lenient clients
        url = url.get("url")
    if not isinstance(url, str) or not url:
        return None  # a file_id alone cannot reach chat
    image = {"url": url}
    if isinstance(part.get("detail"), str):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _parts(content, images: bool) -> tuple[list, list]:
    """(texts, image parts) of Responses content: a string or a list of parts."""
    if isinstance(content, str):
        return [content], []
    if isinstance(content, dict):
        content = [content]
    texts, pictures = [], []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = _str(part.get("type"))
        if kind in TEXT_PARTS:
            text = part.get("refusal") if kind == "refusal" else part.get("text")
            if isinstance(text, str):
                texts.append(text)
        elif kind == "input_image" and images:
            image = _image_part(part)
            if image:
                pictures.append(image)
    return texts, pictures


def _message_content(content, role: str):
    texts, images = _parts(content, images=role == "user")
    texts = [t for t in texts if t]
    if not images:
        return "\n".join(texts)
    return [{"type": "text", "text": t} for t in texts] + images


class _Messages:
    """Chat messages built item by item, merging what chat wants merged."""

    def __init__(self):
        self.list = []
        self.images = []  # image parts from tool outputs, sent once the tool messages end

    def add(self, message: dict) -> None:
        if self.images and message["role"] != "tool":
            self.flush()
        self.list.append(message)

    def flush(self) -> None:
        if self.images:
            self.list.append({"role": "user", "content": self.images})
            self.images = []

    def _last_assistant(self):
        last = self.list[-1] if self.list else None
        return last if last and last["role"] == "assistant" and not self.images else None

    def text(self, role: str, content) -> None:
        if not content:
            return
        last = self._last_assistant() if role == "assistant" else None
        if last is not None and last.get("tool_calls"):
            # text after calls still awaiting their outputs: chat needs it in the same message
            last["content"] = f"{last['content']}\n{content}" if last.get("content") else content
        else:
            self.add({"role": role, "content": content})

    def call(self, call_id: str, name: str, arguments: str) -> None:
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        last = self._last_assistant()
        if last is None:
            self.add({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            last.setdefault("tool_calls", []).append(call)

    def output(self, call_id: str, output) -> None:
        if isinstance(output, str):
            text, images = output, []
        elif isinstance(output, list | dict):
            texts, images = _parts(output, images=True)
            text = "\n".join(t for t in texts if t)
        else:
            text, images = ("" if output is None else _dumps(output)), []
        if images:
            text = text or "(image output: see the next message)"
            self.images.append({"type": "text", "text": f"Image output of tool call {call_id}:"})
            self.images.extend(images)
        self.add({"role": "tool", "tool_call_id": call_id, "content": text})


def _input_items(items: list, messages: _Messages) -> None:
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            role = ROLES.get(_str(item.get("role")))
            if role:
                messages.text(role, _message_content(item.get("content"), role))
        elif kind in ("function_call", "custom_tool_call"):
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str) or not name:
                continue
            if kind == "function_call":
                arguments = _arguments(item.get("arguments"))
            else:
                arguments = json.dumps({"input": _str(item.get("input"))})
            messages.call(call_id, _chat_name(item.get("namespace"), name), arguments)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if isinstance(call_id, str):
                messages.output(call_id, item.get("output"))
        # reasoning, local_shell_call, web_search_call, item_reference, ...: dropped
    messages.flush()


def _response_format(text):
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {"name": _str(fmt.get("name"), "response")}
        for key in ("description", "schema", "strict"):
            if key in fmt and fmt[key] is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    return None


def responses_request_to_chat(body: dict) -> dict:
    """A Responses request -> a chat/completions request."""
    if not isinstance(body, dict):
        raise ConversionError("The request body must be a JSON object.")
    if body.get("previous_response_id"):
        raise ConversionError(PREVIOUS_RESPONSE_MESSAGE, "previous_response_id")
    messages = _Messages()
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.add({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        _input_items(instructions, messages)
    data = body.get("input")
    if isinstance(data, str):
        messages.add({"role": "user", "content": data})
    elif isinstance(data, list):
        _input_items(data, messages)
    if not messages.list:
        raise ConversionError(
            "The request has no input: send `input` (a string or a list of items).", "input"
        )

    chat = {"messages": messages.list}
    if "model" in body:
        chat["model"] = body["model"]
    tools = _chat_tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        if "tool_choice" in body:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if type(body.get("max_output_tokens")) is int and body["max_output_tokens"] > 0:
        chat["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p"):
        if _number(body.get(key)) is not None:
            chat[key] = body[key]
    user = _str(body.get("user")) or _str(body.get("safety_identifier"))
    if user:
        chat["user"] = user
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    response_format = _response_format(body.get("text"))
    if response_format:
        chat["response_format"] = response_format
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# --- answer: chat -> Responses -----------------------------------------------------------


def _usage_out(usage: Usage | None):
    if usage is None:
        return None
    out = to_responses(usage)
    details = out.get("input_tokens_details")
    if isinstance(details, dict):  # the current SDK's model requires it
        details.setdefault("cache_write_tokens", usage.cache_write_tokens)
    return out


def _echo(request: dict) -> dict:
    """The request's settings, as a response object repeats them."""
    r = request

    def _dict(key):
        return r[key] if isinstance(r.get(key), dict) else None

    tools = r.get("tools")
    choice = r.get("tool_choice")
    max_output = r.get("max_output_tokens")
    return {
        "instructions": r["instructions"] if isinstance(r.get("instructions"), str) else None,
        "max_output_tokens": max_output if type(max_output) is int else None,
        "metadata": _dict("metadata") or {},
        "model": _str(r.get("model")),
        "parallel_tool_calls": _bool(r.get("parallel_tool_calls"), True),
        "previous_response_id": None,
        "reasoning": _dict("reasoning"),
        "store": _bool(r.get("store"), False),
        "temperature": _number(r.get("temperature")),
        "text": _dict("text") or {"format": {"type": "text"}},
        "tool_choice": choice if isinstance(choice, str | dict) else "auto",
        "tools": [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else [],
        "top_p": _number(r.get("top_p")),
        "truncation": "disabled",
        "user": r["user"] if isinstance(r.get("user"), str) else None,
    }


def _envelope(echo, response_id, created_at, status, output, usage, incomplete=None, error=None):
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        **echo,
        "output": output,
        "usage": usage,
    }


def _ids(response_id: str) -> str:
    return response_id[5:] if response_id.startswith("resp_") else response_id


def _reasoning_text(message: dict) -> str:
    text = message.get("reasoning_content")
    if not isinstance(text, str) or not text:
        text = message.get("reasoning")
    return text if isinstance(text, str) else ""


def _call_item(item_id: str, call_id: str, chat_name: str, arguments: str, table: dict) -> dict:
    kind, namespace, name = table.get(chat_name, ("function", None, chat_name))
    if kind == "custom":
        item = {"type": "custom_tool_call", "id": "ctc_" + item_id, "call_id": call_id}
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError):
            parsed = None
        value = parsed.get("input") if isinstance(parsed, dict) else None
        item.update(name=name, input=value if isinstance(value, str) else arguments)
    else:
        item = {"type": "function_call", "id": "fc_" + item_id, "call_id": call_id}
        item.update(name=name, arguments=arguments, status="completed")
    if namespace:
        item["namespace"] = namespace
    return item


def chat_response_to_responses(resp: dict, request: dict, response_id: str) -> dict:
    """A non-stream chat.completion -> a Responses `response` object."""
    resp = resp if isinstance(resp, dict) else {}
    request = request if isinstance(request, dict) else {}
    response_id = _str(response_id, "resp")
    choices = resp.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    choice = choice if isinstance(choice, dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    finish = choice.get("finish_reason")
    incomplete = INCOMPLETE.get(finish) if isinstance(finish, str) else None
    base = _ids(response_id)

    output = []
    reasoning = _reasoning_text(message)
    if reasoning:
        summary = [{"type": "summary_text", "text": reasoning}]
        output.append({"type": "reasoning", "id": f"rs_{base}_0", "summary": summary})
    parts = []
    text = _text_of(message.get("content"))
    if text:
        parts.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(
            {
                "type": "message",
                "id": f"msg_{base}_{len(output)}",
                "status": "incomplete" if incomplete else "completed",
                "role": "assistant",
                "content": parts,
            }
        )
    table = _tool_table(request.get("tools"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not _str(function.get("name")):
            continue
        item_id = f"{base}_{len(output)}"
        call_id = _str(call.get("id")) or "call_" + item_id
        args = _arguments(function.get("arguments"))
        output.append(_call_item(item_id, call_id, function["name"], args, table))

    created = resp.get("created")
    created = created if type(created) is int else int(time.time())
    usage = _usage_out(from_chat(resp.get("usage")))
    status = "incomplete" if incomplete else "completed"
    return _envelope(_echo(request), response_id, created, status, output, usage, incomplete)


def failed_response(request: dict, response_id: str, message: str, code: str) -> dict:
    """A response object with status "failed" (for response.failed)."""
    request = request if isinstance(request, dict) else {}
    error = {"code": _str(code, "server_error"), "message": _str(message)}
    echo = _echo(request)
    return _envelope(
        echo, _str(response_id, "resp"), int(time.time()), "failed", [], None, None, error
    )


class ChatToResponsesStream:
    """chat.completion.chunk dicts in (parsed from each `data:` line), Responses stream events out
    (dicts with "type" and an increasing "sequence_number"; the caller frames each as
    `event: <type>\\ndata: <json>\\n\\n`).

    Reasoning, text and tool calls become output items in the order they start. Reasoning
    closes when text or a tool call begins, text when a tool call begins (later text opens a
    new message). Function calls stream their arguments live and stay open until the end (so
    interleaved fragments of parallel calls still land in their own item); a custom tool's
    call is buffered and sent whole at the end. Every event is a fresh dict: nothing sent is
    changed afterwards.
    """

    usage: Usage | None

    def __init__(self, request: dict, response_id: str):
        self.request = request if isinstance(request, dict) else {}
        self.response_id = _str(response_id, "resp")
        self.usage = None
        self._echo = _echo(self.request)
        self._table = _tool_table(self.request.get("tools"))
        self._base = _ids(self.response_id)
        self._created_at = int(time.time())
        self._seq = 0
        self._started = False
        self._ended = False
        self._output = []  # output index -> the item as done (None while open)
        self._reasoning = None  # open reasoning: [output_index, item id, text chunks]
        self._message = None  # open message: [output_index, item id, parts [[type, chunks]]]
        self._calls = {}  # chat tool-call key -> call state
        self._keys = {}  # chat tool-call index -> its current key in _calls
        self._last_index = 0
        self._finish = None

    # events

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _response(self, status, output, usage=None, incomplete=None):
        return _envelope(
            self._echo, self.response_id, self._created_at, status, output, usage, incomplete
        )

    def _start(self, out: list) -> None:
        if not self._started:
            self._started = True
            out.append(self._event("response.created", response=self._response("in_progress", [])))
            out.append(
                self._event("response.in_progress", response=self._response("in_progress", []))
            )

    def _add(self, item: dict, out: list) -> int:
        index = len(self._output)
        self._output.append(None)
        out.append(self._event("response.output_item.added", output_index=index, item=item))
        return index

    def _done(self, index: int, item: dict, out: list) -> None:
        self._output[index] = item
        out.append(self._event("response.output_item.done", output_index=index, item=item))

    # reasoning

    def _reasoning_delta(self, text: str, out: list) -> None:
        if self._reasoning is None:
            self._close_message(out)
            item_id = f"rs_{self._base}_{len(self._output)}"
            index = self._add({"type": "reasoning", "id": item_id, "summary": []}, out)
            self._reasoning = [index, item_id, []]
            part = {"type": "summary_text", "text": ""}
            out.append(self._summary_event("response.reasoning_summary_part.added", part=part))
        self._reasoning[2].append(text)
        out.append(self._summary_event("response.reasoning_summary_text.delta", delta=text))

    def _summary_event(self, kind: str, **fields) -> dict:
        index, item_id, _ = self._reasoning
        return self._event(kind, item_id=item_id, output_index=index, summary_index=0, **fields)

    def _close_reasoning(self, out: list) -> None:
        if self._reasoning is None:
            return
        text = "".join(self._reasoning[2])
        out.append(self._summary_event("response.reasoning_summary_text.done", text=text))
        part = {"type": "summary_text", "text": text}
        out.append(self._summary_event("response.reasoning_summary_part.done", part=part))
        index, item_id, _ = self._reasoning
        self._reasoning = None
        summary = [{"type": "summary_text", "text": text}]
        self._done(index, {"type": "reasoning", "id": item_id, "summary": summary}, out)

    # message text and refusal

    def _text_delta(self, kind: str, text: str, out: list) -> None:
        self._close_reasoning(out)
        if self._message is None:
            item_id = f"msg_{self._base}_{len(self._output)}"
            item = {
                "type": "message",
                "id": item_id,
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._message = [self._add(item, out), item_id, []]
        parts = self._message[2]
        if not parts or parts[-1][0] != kind:
            if parts:
                self._close_part(out)
            parts.append([kind, []])
            out.append(self._part_event("response.content_part.added", part=_part(kind, "")))
        parts[-1][1].append(text)
        if kind == "output_text":
            out.append(self._part_event("response.output_text.delta", delta=text, logprobs=[]))
        else:
            out.append(self._part_event("response.refusal.delta", delta=text))

    def _part_event(self, kind: str, **fields) -> dict:
        index, item_id, parts = self._message
        return self._event(
            kind, item_id=item_id, output_index=index, content_index=len(parts) - 1, **fields
        )

    def _close_part(self, out: list) -> None:
        kind, chunks = self._message[2][-1]
        text = "".join(chunks)
        if kind == "output_text":
            out.append(self._part_event("response.output_text.done", text=text, logprobs=[]))
        else:
            out.append(self._part_event("response.refusal.done", refusal=text))
        out.append(self._part_event("response.content_part.done", part=_part(kind, text)))

    def _close_message(self, out: list) -> None:
        if self._message is None:
            return
        self._close_part(out)
        index, item_id, parts = self._message
        self._message = None
        item = {
            "type": "message",
            "id": item_id,
            "status": "incomplete" if self._finish in INCOMPLETE else "completed",
            "role": "assistant",
            "content": [_part(kind, "".join(chunks)) for kind, chunks in parts],
        }
        self._done(index, item, out)

    # tool calls

    def _call_delta(self, fragment: dict, out: list) -> None:
        call_id = fragment.get("id") if isinstance(fragment.get("id"), str) else None
        index = fragment.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = call_id or self._last_index
        self._last_index = index
        key = self._keys.get(index, index)
        call = self._calls.get(key)
        if call is not None and call_id and call["call_id"] and call_id != call["call_id"]:
            # a new call reusing an index (some upstreams number every call 0)
            key = self._keys[index] = (index, call_id)
            call = self._calls.get(key)
        if call is None:
            call = {"call_id": call_id, "name": "", "args": [], "index": None, "custom": False}
            self._calls[key] = call
        if call_id and not call["call_id"]:
            call["call_id"] = call_id
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        if not call["name"] and isinstance(function.get("name"), str):
            call["name"] = function["name"]
            call["custom"] = self._table.get(call["name"], ("function",))[0] == "custom"
        args = _arguments(function.get("arguments"))
        if args:
            call["args"].append(args)
        if call["custom"] or not call["name"]:
            return  # buffered until the end (a custom call) or until its name arrives
        if call["index"] is None:
            self._close_reasoning(out)
            self._close_message(out)
            item = self._call_state_item(call, "")
            item["status"] = "in_progress"
            call["index"] = self._add(item, out)
            if call["args"]:
                out.append(self._args_delta(call, "".join(call["args"])))
        elif args:
            out.append(self._args_delta(call, args))

    def _call_state_item(self, call: dict, arguments: str) -> dict:
        item_id = call.get("item_id")
        if item_id is None:
            item_id = call["item_id"] = f"{self._base}_{len(self._output)}"
        if not call["call_id"]:
            call["call_id"] = "call_" + item_id
        return _call_item(item_id, call["call_id"], call["name"], arguments, self._table)

    def _args_delta(self, call: dict, delta: str) -> dict:
        item_id = "fc_" + call["item_id"]
        kind = "response.function_call_arguments.delta"
        return self._event(kind, item_id=item_id, output_index=call["index"], delta=delta)

    def _close_calls(self, out: list) -> None:
        opened = sorted((c for c in self._calls.values() if c["index"] is not None), key=_index)
        for call in opened:
            item = self._call_state_item(call, "".join(call["args"]))
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=call["index"],
                    arguments=item["arguments"],
                )
            )
            self._done(call["index"], item, out)
        for call in self._calls.values():
            if call["index"] is None and call["custom"]:
                self._close_reasoning(out)
                self._close_message(out)
                item = self._call_state_item(call, "".join(call["args"]))
                index = call["index"] = self._add({**item, "input": ""}, out)
                fields = {"item_id": item["id"], "output_index": index}
                out.append(
                    self._event(
                        "response.custom_tool_call_input.delta", delta=item["input"], **fields
                    )
                )
                out.append(
                    self._event(
                        "response.custom_tool_call_input.done", input=item["input"], **fields
                    )
                )
                self._done(index, item, out)
            # a call that never got a name is dropped
        self._calls = {}

    # public

    def feed(self, chunk: dict) -> list[dict]:
        """Events for one chat.completion.chunk (the first call also opens the response)."""
        out = []
        if self._ended or not isinstance(chunk, dict):
            return out
        self._start(out)
        usage = from_chat(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            error = chunk.get("error")
            if isinstance(error, dict):  # an error sent as a stream chunk
                code = _str(error.get("code")) or _str(error.get("type")) or "server_error"
                out.extend(self.fail(_str(error.get("message"), "upstream error"), code))
            return out
        choice = choices[0]
        if not isinstance(choice, dict):
            return out
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = _reasoning_text(delta)
            if reasoning:
                self._reasoning_delta(reasoning, out)
            text = _text_of(delta.get("content"))
            if text:
                self._text_delta("output_text", text, out)
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                self._text_delta("refusal", delta["refusal"], out)
            calls = delta.get("tool_calls")
            for fragment in calls if isinstance(calls, list) else ():
                if isinstance(fragment, dict):
                    self._call_delta(fragment, out)
        if isinstance(choice.get("finish_reason"), str):
            self._finish = choice["finish_reason"]
        return out

    def finish(self) -> list[dict]:
        """[DONE] or the end: close open items, then response.completed (or .incomplete)."""
        if self._ended:
            return []
        out = []
        self._start(out)
        self._close_reasoning(out)
        self._close_message(out)
        self._close_calls(out)
        self._ended = True
        incomplete = INCOMPLETE.get(self._finish)
        output = [item for item in self._output if item is not None]
        response = self._response(
            "incomplete" if incomplete else "completed", output, _usage_out(self.usage), incomplete
        )
        kind = "response.incomplete" if incomplete else "response.completed"
        out.append(self._event(kind, response=response))
        return out

    def fail(self, message: str, code: str) -> list[dict]:
        """A failure mid-stream: response.failed (after response.created if nothing was sent)."""
        if self._ended:
            return []
        out = []
        self._start(out)
        self._ended = True
        response = failed_response(self.request, self.response_id, message, code)
        response["created_at"] = self._created_at
        response["usage"] = _usage_out(self.usage)
        out.append(self._event("response.failed", response=response))
        return out


def _part(kind: str, text: str) -> dict:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "refusal", "refusal": text}


def _index(call: dict) -> int:
    return call["index"]
