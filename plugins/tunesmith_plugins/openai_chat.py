"""What OpenAI's chat fine-tuning format adds to plain {role, content} turns, checked as OpenAI checks it.

- ``weight`` on an assistant message: 1 (the default) trains the turn, 0 keeps it as context only. The
  turn reaches the engine with ``"trained": False``, and the loss masking skips it.
- ``tools`` (function definitions) beside ``messages``, assistant ``tool_calls`` and ``tool`` messages
  answering them by ``tool_call_id``. Calls are converted to the message format Hugging Face chat
  templates read: ``{"type": "function", "id": ..., "function": {"name": ..., "arguments": {...}}}``
  with the arguments as an object (OpenAI sends them as a JSON string, which templates would quote
  a second time).

Errors name the field (``messages[3].tool_calls[0].function.arguments``) and cover the error kinds of
OpenAI's data-preparation checks (missing messages list, unrecognised role or key, missing content, no
assistant message) and of its API validation (weights other than 0/1, malformed tool calls, arguments
that are not JSON, tool results that answer no call).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from tunesmith import InvalidRecord

#: Keys OpenAI's fine-tuning format allows in a message, plus the reasoning fields tunesmith reads.
MESSAGE_KEYS = (
    "role",
    "content",
    "name",
    "weight",
    "tool_calls",
    "tool_call_id",
    "reasoning",
    "reasoning_content",
)
#: OpenAI's deprecated function-calling fields and what replaced them.
LEGACY = {
    "function_call": "tool_calls",
    "functions": "tools",
}


def type_name(value: Any) -> str:
    names = {
        str: "a string",
        list: "a list",
        dict: "an object",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def legacy_error(key: str) -> InvalidRecord:
    return InvalidRecord(
        f"OpenAI's deprecated function-calling format: give '{LEGACY[key]}' instead of '{key}' "
        "(tool calls and tool messages answering them by tool_call_id)",
        field=key,
    )


def check_keys(message: dict[str, Any]) -> None:
    """Refuse keys OpenAI does not know (a misspelt ``weight`` would silently train a context turn)."""
    for key in message:
        if key in MESSAGE_KEYS:
            continue
        if key in LEGACY:
            raise legacy_error(key)
        close = difflib.get_close_matches(str(key), MESSAGE_KEYS, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise InvalidRecord(f"unrecognized key (a message has {', '.join(MESSAGE_KEYS)}){hint}", field=key)


def content_text(value: Any) -> str:
    """Message content: a string, or a list of text parts ``[{"type": "text", "text": ...}]`` joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else None
                what = f"a '{kind}' part" if kind else type_name(part)
                raise InvalidRecord(f"only text parts are supported, got {what}", field=f"[{i}]")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRecord(f"expected a string, got {type_name(value)}")


def weight(message: dict[str, Any]) -> int:
    """The message's training weight: 1 unless it says 0."""
    if "weight" not in message:
        return 1
    value = message["weight"]
    if message.get("role") != "assistant":
        raise InvalidRecord("only assistant messages carry a weight", field="weight")
    if isinstance(value, bool) or value not in (0, 1) or not isinstance(value, int):
        raise InvalidRecord(f"weight must be 0 or 1, got {value!r}", field="weight")
    return value


def tool_calls(value: Any) -> list[dict[str, Any]]:
    """An assistant message's tool calls in the Hugging Face message format, arguments parsed."""
    if not isinstance(value, list) or not value:
        raise InvalidRecord(f"expected a non-empty list of tool calls, got {type_name(value)}")
    return [_tool_call(call, f"[{i}]") for i, call in enumerate(value)]


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise InvalidRecord(
            f"expected an object with id, type and function, got {type_name(call)}", field=where
        )
    if call.get("type", "function") != "function":
        raise InvalidRecord(
            f"only function tool calls are supported, got {call.get('type')!r}", field=f"{where}.type"
        )
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRecord(
            "missing (every tool call has an id its tool message answers)", field=f"{where}.id"
        )
    function = call.get("function")
    if not isinstance(function, dict):
        raise InvalidRecord(
            f"expected an object with name and arguments, got {type_name(function)}",
            field=f"{where}.function",
        )
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRecord("missing", field=f"{where}.function.name")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise InvalidRecord(f"not valid JSON: {e}", field=f"{where}.function.arguments") from None
    if not isinstance(arguments, dict):
        raise InvalidRecord(
            f"expected a JSON object of arguments, got {type_name(arguments)}",
            field=f"{where}.function.arguments",
        )
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tools(value: Any) -> list[dict[str, Any]]:
    """Function definitions as OpenAI gives them (and chat templates read them)."""
    if not isinstance(value, list):
        raise InvalidRecord(f"expected a list of function definitions, got {type_name(value)}", field="tools")
    out = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRecord(
                "expected {type: function, function: {name, description, parameters}}", field=where
            )
        function = tool.get("function")
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise InvalidRecord("missing", field=f"{where}.function.name")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRecord(
                f"expected a JSON schema object, got {type_name(parameters)}",
                field=f"{where}.function.parameters",
            )
        out.append({"type": "function", "function": dict(function)})
    return out


def check_tool_flow(messages: list[dict[str, Any]], defined: list[dict[str, Any]] | None, key: str) -> None:
    """Every call names a defined function (when tools are given) and every tool message answers a call."""
    names = [t["function"]["name"] for t in defined or []]
    pending: dict[str, str] = {}
    for i, message in enumerate(messages):
        for j, call in enumerate(message.get("tool_calls", [])):
            name = call["function"]["name"]
            where = f"{key}[{i}].tool_calls[{j}]"
            if defined is not None and name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise InvalidRecord(
                    f"calls '{name}', which tools does not define (defined: {', '.join(names) or 'none'}){hint}",
                    field=f"{where}.function.name",
                )
            if call["id"] in pending:
                raise InvalidRecord(f"tool call id '{call['id']}' is used twice", field=f"{where}.id")
            pending[call["id"]] = name
        if message["role"] == "tool":
            call_id = message["tool_call_id"]
            if call_id not in pending:
                known = f" (open calls: {', '.join(pending)})" if pending else ""
                raise InvalidRecord(
                    f"'{call_id}' matches no earlier tool call{known}", field=f"{key}[{i}].tool_call_id"
                )
            del pending[call_id]
