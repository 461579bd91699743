"""What data sources, formatters and objectives pass along: raw records, their problems, and examples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Record:
    """One raw record as read by a data source; ``origin`` is where it came from (``file:line``)."""

    fields: Mapping[str, Any]
    origin: str


@dataclass
class RecordProblem:
    """A record that could not be read or formatted: where, which field, and what is wrong."""

    origin: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}{what}{self.message}"


class InvalidRecord(Exception):
    """Raised by a formatter for a record it cannot use; the pipeline adds the record's origin."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Example:
    """A formatted training/evaluation example. Its ``kind`` follows from which fields are set:

    - ``chat``: ``messages`` (turns; loss on assistant turns, except those marked ``"trained": False``),
      with ``tools`` (function definitions the chat template renders) when the turns call tools;
    - ``text``: ``text`` (plain text; loss on every token);
    - ``preference``: ``prompt`` (turns) + ``chosen`` + ``rejected`` (answers), for DPO-style objectives;
    - ``unpaired``: ``prompt`` + ``completion`` + ``label`` (desirable or not), for KTO;
    - ``prompt``: ``prompt`` alone (optionally ``completion`` as a reference answer), for online RL.
    """

    messages: list[dict[str, Any]] | None = None
    text: str | None = None
    prompt: list[dict[str, Any]] | None = None
    chosen: str | None = None
    rejected: str | None = None
    completion: str | None = None
    label: bool | None = None
    origin: str = ""
    #: Answer options for multiple-choice evaluation (the reference is one of them); any kind may carry it.
    choices: list[str] | None = None
    #: Function definitions (OpenAI's ``tools``) passed to the chat template beside ``messages``.
    tools: list[dict[str, Any]] | None = None

    @property
    def kind(self) -> str:
        if self.messages is not None:
            return "chat"
        if self.text is not None:
            return "text"
        if self.chosen is not None and self.rejected is not None:
            return "preference"
        if self.label is not None:
            return "unpaired"
        return "prompt"

    @property
    def reference(self) -> str | None:
        """The expected answer: the last assistant turn, the chosen answer, or a reference completion."""
        if self.messages and self.messages[-1].get("role") == "assistant":
            return self.messages[-1]["content"]
        if self.chosen is not None:
            return self.chosen
        if self.completion is not None and self.label is not False:
            return self.completion
        return None

    @property
    def prompt_messages(self) -> list[dict[str, Any]] | None:
        """The conversation the model answers: up to (not including) the last assistant turn."""
        if self.messages and self.messages[-1].get("role") == "assistant":
            return self.messages[:-1]
        return self.prompt


__all__ = ["Example", "InvalidRecord", "Record", "RecordProblem"]
