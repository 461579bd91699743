"""Built-in formatters: Alpaca instruction records, OpenAI-style chats, plain text, preference pairs
(DPO/ORPO/SimPO/KTO), unpaired labelled completions (KTO) and bare prompts (online RL).

Each one checks a record fully before building an :class:`Example`, and names the offending field
(``messages[2].role``) so a user can fix the data from the message alone.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from tunesmith import Example, Formatter, InvalidRecord, Record, Register, hookimpl, option
from tunesmith_plugins import openai_chat
from tunesmith_plugins.openai_chat import type_name as _type_name

ROLES = ("system", "user", "assistant", "tool")
#: Fields holding an assistant turn's reasoning (OpenAI-compatible servers and Qwen3 use these names).
REASONING_FIELDS = ("reasoning", "reasoning_content")
# Role names other chat formats use (ShareGPT, Gemini), for the did-you-mean hint.
ROLE_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "ai": "assistant",
}


def _string(fields: Any, key: str, *, required: bool = True, what: str = "content") -> str:
    """The string at ``fields[key]``; missing/empty is an error when ``required``, else ``""``."""
    if key not in fields or fields[key] is None:
        if required:
            raise InvalidRecord("missing", field=key)
        return ""
    value = fields[key]
    if not isinstance(value, str):
        raise InvalidRecord(f"expected a string, got {_type_name(value)}", field=key)
    if required and not value.strip():
        raise InvalidRecord(f"empty {what}", field=key)
    return value


class AlpacaFormatter(Formatter):
    """Alpaca records (instruction, optional input, output, optional system) as a one-turn chat.

    The user turn is the instruction, followed by a blank line and the input when there is one; the
    assistant turn is the output, which is what the model learns to produce.
    """

    name = "alpaca"
    default = True

    @dataclass
    class Config:
        instruction_field: str = option("instruction", help="Field with the instruction")
        input_field: str = option("input", help="Field with the optional input (context) for the instruction")
        output_field: str = option("output", help="Field with the expected answer (the completion)")
        system_field: str = option("system", help="Field with an optional system prompt")

    def format(self, record: Record) -> Example:
        c, fields = self.config, record.fields
        instruction = _string(fields, c.instruction_field, what="instruction")
        extra = _string(fields, c.input_field, required=False)
        output = _string(fields, c.output_field, what="completion")
        system = _string(fields, c.system_field, required=False)
        messages = [{"role": "system", "content": system}] if system.strip() else []
        user = instruction + ("\n\n" + extra if extra.strip() else "")
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        return Example(messages=messages)


class ChatFormatter(Formatter):
    """Chats in OpenAI's fine-tuning format: a list of turns ending with the assistant's answer.

    Roles are system, user, assistant and tool. Every assistant turn is trained on, except those with
    `weight: 0` (context only). A conversation must end with an assistant turn, and no turn may be empty.
    With `alternate` (the default) it is an optional system message, then user and assistant turns in
    turn, starting with the user: what every chat template accepts (Mistral, Gemma and others raise on
    anything else). An assistant turn may carry its reasoning in a `reasoning` (or `reasoning_content`)
    field, or inline as `<think>...</think>` before the answer.

    Tool calling: a `tools` list of function definitions beside the messages, assistant turns with
    `tool_calls` (arguments as a JSON string or object) and `tool` turns answering them by
    `tool_call_id`, all rendered by the model's chat template; the calls are trained, the tool results
    are not. Keys OpenAI does not know are refused, as OpenAI refuses them.
    """

    name = "chat"

    @dataclass
    class Config:
        messages_field: str = option("messages", help="Field holding the list of {role, content} turns")
        alternate: bool = option(
            True,
            help="Require an optional first system turn, then user/assistant turns in turn (tool calls "
            "answered by tool turns inside an assistant turn); turn off for templates that accept several "
            "turns of one role in a row (Llama 3, Qwen, ChatML)",
        )

    def format(self, record: Record) -> Example:
        key, fields = self.config.messages_field, record.fields
        if key not in fields:
            if "preferred_output" in fields or "non_preferred_output" in fields:
                raise InvalidRecord(
                    "missing: this is a preference pair (use the preference formatter)", field=key
                )
            raise InvalidRecord("missing", field=key)
        if "functions" in fields:
            raise openai_chat.legacy_error("functions")
        defined = openai_chat.tools(fields["tools"]) if fields.get("tools") is not None else None
        messages = _conversation(fields[key], key, defined)
        trained = [m for m in messages if m["role"] == "assistant" and m.get("trained", True)]
        if not trained:
            raise InvalidRecord("every assistant turn has weight 0: nothing to train on", field=key)
        if messages[-1]["role"] != "assistant":
            raise InvalidRecord(
                f"conversation ends with a {messages[-1]['role']} turn; it must end with an assistant turn",
                field=f"{key}[{len(messages) - 1}].role",
            )
        if self.config.alternate:
            _check_order(messages, key)
        return Example(messages=messages, tools=defined or None)


def _conversation(turns: Any, key: str, defined: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A list of turns, each checked, with at least one assistant turn and every tool call answered rightly."""
    if not isinstance(turns, list):
        raise InvalidRecord(f"expected a list of {{role, content}} turns, got {_type_name(turns)}", field=key)
    if not turns:
        raise InvalidRecord("empty conversation", field=key)
    messages = [_turn(turn, f"{key}[{i}]") for i, turn in enumerate(turns)]
    if not any(m["role"] == "assistant" for m in messages):
        raise InvalidRecord("no assistant turn to train on", field=key)
    openai_chat.check_tool_flow(messages, defined, key)
    return messages


def _check_order(messages: list[dict[str, Any]], key: str) -> None:
    """An optional first system turn, then user, assistant, user, ... (the order templates accept); an
    assistant turn that calls tools is followed by their results (tool turns), then the assistant again."""
    start = 1 if messages[0]["role"] == "system" else 0
    expected: tuple[str, ...] = ("user",)
    for i, message in enumerate(messages[start:], start=start):
        role = message["role"]
        if role in expected:
            if role == "user":
                expected = ("assistant",)
            elif role == "assistant":
                expected = ("tool",) if message.get("tool_calls") else ("user",)
            else:
                expected = ("tool", "assistant")
            continue
        if role == "system":
            problem = "a system turn is only allowed first"
        elif i == start:
            problem = f"the conversation starts with an {role} turn; the user speaks first"
        elif expected == ("tool",):
            problem = (
                f"turn {i - 1} calls tools, so their results (tool turns) must follow it, not a {role} turn"
            )
        elif role == "tool":
            problem = "a tool turn must follow an assistant turn with tool_calls (or another tool turn)"
        else:
            problem = f"two {role} turns in a row; user and assistant turns must alternate"
        raise InvalidRecord(
            f"{problem} (set the chat formatter's alternate: false if your template accepts it)",
            field=f"{key}[{i}].role",
        )


def _turn(turn: Any, where: str) -> dict[str, Any]:
    """One message, checked and normalised: role and content, plus what OpenAI's format adds (reasoning,
    ``weight: 0`` as ``trained: False``, tool calls with parsed arguments, the tool call a result answers)."""
    if not isinstance(turn, dict):
        raise InvalidRecord(f"expected an object with role and content, got {_type_name(turn)}", field=where)
    try:
        openai_chat.check_keys(turn)
        role = _string(turn, "role", what="role")
        if role not in ROLES:
            if role == "function":
                raise openai_chat.legacy_error("function_call")
            match = ROLE_ALIASES.get(role.lower()) or next(
                iter(difflib.get_close_matches(role.lower(), ROLES, n=1, cutoff=0.5)), None
            )
            hint = f"; did you mean '{match}'?" if match else ""
            raise InvalidRecord(
                f"unknown role '{role}' (expected one of {', '.join(ROLES)}){hint}", field="role"
            )
        calls = (
            _field(turn, "tool_calls", openai_chat.tool_calls) if turn.get("tool_calls") is not None else []
        )
        if calls and role != "assistant":
            raise InvalidRecord("only assistant messages make tool calls", field="tool_calls")
        content = _content(turn, role, optional=bool(calls))
        reasoning = ""
        for key in REASONING_FIELDS:
            if key in turn and turn[key] is not None:
                if role != "assistant":
                    raise InvalidRecord("only assistant turns carry reasoning", field=key)
                reasoning = _string(turn, key, what="reasoning")
        weight = openai_chat.weight(turn)
        if role == "tool":
            call_id = _string(turn, "tool_call_id", what="tool_call_id")
        elif turn.get("tool_call_id") is not None:
            raise InvalidRecord("only tool messages answer a tool call", field="tool_call_id")
    except InvalidRecord as e:
        raise InvalidRecord(e.message, field=f"{where}.{e.field}" if e.field else where) from None
    message: dict[str, Any] = {"role": role, "content": content}
    if reasoning:
        message["reasoning"] = reasoning  # rendered as a think block (see template.thinking)
    if calls:
        message["tool_calls"] = calls
    if role == "tool":
        message["tool_call_id"] = call_id
    if weight == 0:
        message["trained"] = False  # context only: the loss masking skips this turn
    return message


def _field(turn: dict[str, Any], key: str, parse: Any) -> Any:
    try:
        return parse(turn[key])
    except InvalidRecord as e:
        raise InvalidRecord(e.message, field=f"{key}{e.field or ''}") from None


def _content(turn: dict[str, Any], role: str, *, optional: bool) -> str:
    """The message's text; an assistant turn that makes tool calls may have none."""
    value = turn.get("content")
    if value is None:
        if optional:
            return ""
        raise InvalidRecord("missing", field="content")
    text = _field(turn, "content", openai_chat.content_text)
    if not text.strip() and not optional:
        raise InvalidRecord(f"empty {'completion' if role == 'assistant' else 'content'}", field="content")
    return text


class TextFormatter(Formatter):
    """Plain text for continued pre-training: every token is trained on."""

    name = "text"

    @dataclass
    class Config:
        text_field: str = option("text", help="Field holding the text")

    def format(self, record: Record) -> Example:
        return Example(text=_string(record.fields, self.config.text_field, what="text"))


# ------------------------------------------------------------------------------ preference data


def _prompt(fields: Any, key: str, system_key: str) -> list[dict[str, str]]:
    """A prompt given as a string (one user turn) or as a list of {role, content} turns ending with a user
    turn; an optional system prompt field is put first."""
    if key not in fields or fields[key] is None:
        raise InvalidRecord("missing", field=key)
    value = fields[key]
    system = _string(fields, system_key, required=False)
    if isinstance(value, str):
        messages = [{"role": "user", "content": _string(fields, key, what="prompt")}]
    elif isinstance(value, list):
        if not value:
            raise InvalidRecord("empty conversation", field=key)
        messages = [_turn(turn, f"{key}[{i}]") for i, turn in enumerate(value)]
        for message in messages:
            message.pop("trained", None)  # a prompt is context: nothing in it is trained
        openai_chat.check_tool_flow(messages, None, key)
        if messages[-1]["role"] != "user":
            raise InvalidRecord(
                f"prompt ends with a {messages[-1]['role']} turn; it must end with a user turn "
                "(the answers go in their own fields)",
                field=f"{key}[{len(messages) - 1}].role",
            )
        if system.strip() and messages[0]["role"] == "system":
            raise InvalidRecord(
                "a system prompt is given both here and as the prompt's first turn", field=system_key
            )
    else:
        raise InvalidRecord(
            f"expected a string or a list of {{role, content}} turns, got {_type_name(value)}", field=key
        )
    return ([{"role": "system", "content": system}] if system.strip() else []) + messages


def _answer(fields: Any, key: str) -> str:
    """An answer given as a string, or as a one-turn list ``[{"role": "assistant", "content": ...}]``."""
    if key not in fields or fields[key] is None:
        raise InvalidRecord("missing", field=key)
    value = fields[key]
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidRecord(
                f"expected one assistant turn, got a list of {len(value)} turns (multi-turn context belongs "
                "in the prompt)",
                field=key,
            )
        turn = _turn(value[0], f"{key}[0]")
        if turn["role"] != "assistant":
            raise InvalidRecord(
                f"expected an assistant turn, got a {turn['role']} turn", field=f"{key}[0].role"
            )
        if turn.get("tool_calls"):
            raise InvalidRecord(
                "preference answers with tool calls are not supported", field=f"{key}[0].tool_calls"
            )
        return turn["content"]
    if not isinstance(value, str):
        raise InvalidRecord(
            f"expected a string or a one-turn list of {{role: assistant, content}}, got {_type_name(value)}",
            field=key,
        )
    return _string(fields, key, what="completion")


class PreferenceFormatter(Formatter):
    """Preference pairs: a prompt with a chosen (better) and a rejected (worse) answer, for DPO-style
    objectives (dpo, orpo, simpo, kto).

    The prompt is a string (one user turn) or a list of {role, content} turns ending with a user turn
    (TRL's conversational format); each answer is a string or a one-turn list
    `[{role: assistant, content: ...}]`. An optional system field is put first. A pair whose answers are
    identical is refused: it carries no preference. OpenAI's preference layout is read as well:
    `{input: {messages: [...]}, preferred_output: [...], non_preferred_output: [...]}`.
    """

    name = "preference"

    @dataclass
    class Config:
        prompt_field: str = option(
            "prompt", help="Field with the prompt: a string or a list of {role, content} turns"
        )
        chosen_field: str = option("chosen", help="Field with the preferred answer")
        rejected_field: str = option("rejected", help="Field with the dispreferred answer")
        system_field: str = option("system", help="Field with an optional system prompt")

    def format(self, record: Record) -> Example:
        c, fields = self.config, record.fields
        if c.prompt_field not in fields and ("input" in fields or "preferred_output" in fields):
            return _openai_pair(fields)
        prompt = _prompt(fields, c.prompt_field, c.system_field)
        return _pair(prompt, fields, c.chosen_field, c.rejected_field)


def _pair(prompt: list[dict[str, Any]], fields: Any, chosen_key: str, rejected_key: str) -> Example:
    chosen = _answer(fields, chosen_key)
    rejected = _answer(fields, rejected_key)
    if chosen.strip() == rejected.strip():
        raise InvalidRecord(
            f"identical to {chosen_key}: a pair with the same answer twice teaches no preference",
            field=rejected_key,
        )
    return Example(prompt=prompt, chosen=chosen, rejected=rejected)


def _openai_pair(fields: Any) -> Example:
    """OpenAI's preference layout: ``{"input": {"messages": [...]}, "preferred_output": [assistant turn],
    "non_preferred_output": [assistant turn]}``."""
    given = fields.get("input")
    if not isinstance(given, dict):
        raise InvalidRecord(
            f"expected an object with a messages list, got {_type_name(given)}", field="input"
        )
    if given.get("tools"):
        raise InvalidRecord("preference pairs with tools are not supported", field="input.tools")
    unknown = [k for k in given if k not in ("messages", "tools", "parallel_tool_calls")]
    if unknown:
        raise InvalidRecord(
            "unrecognized key (input has messages, tools, parallel_tool_calls)", field=f"input.{unknown[0]}"
        )
    try:
        prompt = _prompt(given, "messages", "system")
    except InvalidRecord as e:
        raise InvalidRecord(e.message, field=f"input.{e.field}" if e.field else "input") from None
    return _pair(prompt, fields, "preferred_output", "non_preferred_output")


class UnpairedFormatter(Formatter):
    """Unpaired feedback (KTO): a prompt, one completion, and a boolean label (true = desirable).

    The prompt and completion take the same forms as in the preference formatter. The label must be a
    JSON boolean: numbers and strings ("yes", 1, 0.7) are refused rather than guessed at, since a score
    threshold is a modelling decision the data should make explicit.
    """

    name = "unpaired"

    @dataclass
    class Config:
        prompt_field: str = option(
            "prompt", help="Field with the prompt: a string or a list of {role, content} turns"
        )
        completion_field: str = option("completion", help="Field with the answer being judged")
        label_field: str = option("label", help="Field with the judgement: true (desirable) or false")
        system_field: str = option("system", help="Field with an optional system prompt")

    def format(self, record: Record) -> Example:
        c, fields = self.config, record.fields
        prompt = _prompt(fields, c.prompt_field, c.system_field)
        completion = _answer(fields, c.completion_field)
        if c.label_field not in fields or fields[c.label_field] is None:
            raise InvalidRecord("missing", field=c.label_field)
        label = fields[c.label_field]
        if not isinstance(label, bool):
            raise InvalidRecord(
                f"expected true or false, got {_type_name(label)} {label!r}", field=c.label_field
            )
        return Example(prompt=prompt, completion=completion, label=label)


class PromptFormatter(Formatter):
    """Prompts alone, for online RL (grpo): the model generates and reward functions score.

    The prompt is a string or a list of {role, content} turns ending with a user turn; an optional
    reference answer is kept for rewards and evaluators that compare against it.
    """

    name = "prompt"

    @dataclass
    class Config:
        prompt_field: str = option(
            "prompt", help="Field with the prompt: a string or a list of {role, content} turns"
        )
        answer_field: str = option("answer", help="Field with an optional reference answer")
        system_field: str = option("system", help="Field with an optional system prompt")

    def format(self, record: Record) -> Example:
        c, fields = self.config, record.fields
        prompt = _prompt(fields, c.prompt_field, c.system_field)
        answer = _string(fields, c.answer_field, required=False)
        return Example(prompt=prompt, completion=answer if answer.strip() else None)


@hookimpl
def register_formatters(register: Register[Formatter]) -> None:
    for cls in (
        AlpacaFormatter,
        ChatFormatter,
        TextFormatter,
        PreferenceFormatter,
        UnpairedFormatter,
        PromptFormatter,
    ):
        register(cls)
