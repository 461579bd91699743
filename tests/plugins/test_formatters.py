"""Formatters: records become chats or text, and every bad record names its field."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith import Example, InvalidRecord, Record
from tunesmith_plugins.formatters import AlpacaFormatter, ChatFormatter, TextFormatter, register_formatters


def fmt(formatter: Any, fields: dict) -> Example:
    return formatter.format(Record(fields, "f.jsonl:1"))


def test_alpaca_with_input_and_system() -> None:
    example = fmt(
        AlpacaFormatter(), {"instruction": "Add.", "input": "2 2", "output": "4", "system": "Be terse."}
    )
    assert example.messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Add.\n\n2 2"},
        {"role": "assistant", "content": "4"},
    ]
    assert example.reference == "4" and example.prompt_messages == example.messages[:2]


def test_alpaca_without_input_and_with_renamed_fields() -> None:
    formatter = AlpacaFormatter(AlpacaFormatter.Config(instruction_field="q", output_field="a"))
    example = fmt(formatter, {"q": "Hi?", "input": "", "a": "Hello"})
    assert example.messages == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"output": "x"}, "instruction", "missing"),
        ({"instruction": "x"}, "output", "missing"),
        ({"instruction": "x", "output": "  "}, "output", "empty completion"),
        ({"instruction": 3, "output": "x"}, "instruction", "expected a string, got a number"),
        ({"instruction": "x", "input": ["a"], "output": "y"}, "input", "expected a string, got a list"),
    ],
)
def test_alpaca_errors(fields: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        fmt(AlpacaFormatter(), fields)
    assert (info.value.field, info.value.message) == (field, message)


def test_chat_keeps_role_and_content_only() -> None:
    turns = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": "bob"},
        {"role": "assistant", "content": "a"},
    ]
    assert fmt(ChatFormatter(), {"messages": turns}).messages == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]


def user(text: str = "q") -> dict:
    return {"role": "user", "content": text}


def bot(text: str = "a") -> dict:
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"role": "user"}, "messages", "expected a list of {role, content} turns, got an object"),
        ([], "messages", "empty conversation"),
        ([user(), "hi"], "messages[1]", "expected an object with role and content, got a string"),
        ([user(), {"content": "a"}], "messages[1].role", "missing"),
        ([user(), {"role": "gpt", "content": "a"}], "messages[1].role", "did you mean 'assistant'?"),
        ([{"role": "Sytem", "content": "s"}, user(), bot()], "messages[0].role", "did you mean 'system'?"),
        ([user(), {"role": "assistant"}], "messages[1].content", "missing"),
        ([user(), bot(7)], "messages[1].content", "expected a string, got a number"),
        ([user(""), bot()], "messages[0].content", "empty content"),
        ([user(), bot("")], "messages[1].content", "empty completion"),
        ([user(), user()], "messages", "no assistant turn to train on"),
        ([user(), bot(), user()], "messages[2].role", "must end with an assistant turn"),
    ],
)
def test_chat_errors(value: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        fmt(ChatFormatter(), {"messages": value})
    assert info.value.field == field
    assert message in info.value.message


def test_chat_missing_field_and_custom_name() -> None:
    with pytest.raises(InvalidRecord) as info:
        fmt(ChatFormatter(), {"conversations": [user(), bot()]})
    assert (info.value.field, info.value.message) == ("messages", "missing")
    example = fmt(
        ChatFormatter(ChatFormatter.Config(messages_field="conversations")),
        {"conversations": [user(), bot()]},
    )
    assert example.reference == "a"


def test_text() -> None:
    assert fmt(TextFormatter(), {"text": "Once upon a time"}) == Example(text="Once upon a time")
    with pytest.raises(InvalidRecord) as info:
        fmt(TextFormatter(), {"text": ""})
    assert (info.value.field, info.value.message) == ("text", "empty text")


def test_registration() -> None:
    registered: list[type] = []
    register_formatters(registered.append)
    assert [c.name for c in registered] == ["alpaca", "chat", "text", "preference", "unpaired", "prompt"]
    assert all(c.summary() and all(f.metadata["help"] for f in c.options()) for c in registered)
