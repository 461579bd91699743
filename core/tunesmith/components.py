"""Base classes for the five component kinds a plugin can register.

A component is a class with a unique ``name``, a docstring (shown by ``tunesmith plugins show``) and a
nested ``Config`` dataclass whose fields carry defaults and help text (use :func:`option`). In a run
config a component is chosen by ``name`` with its options beside it, e.g. ``method: {name: lora, r: 16}``.

This module must stay importable without torch: the CLI lists components from it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tunesmith.evaluation import EvalContext
    from tunesmith.training import TrainContext

KINDS = ("data_source", "formatter", "method", "objective", "evaluator", "reward")


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A ``Config`` field with help text; mutable defaults (lists, dicts) are copied per instance."""
    metadata = {"help": help}
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


class Component:
    """Common behaviour of every component: a name, a docstring, a ``Config`` and an instance of it."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring, for listings."""
        return cls.description().split("\n\n")[0]

    @classmethod
    def description(cls) -> str:
        """The docstring with paragraphs re-flowed (one line each) and RST literals made plain."""
        paragraphs = inspect.cleandoc(cls.__doc__ or "").split("\n\n")
        text = "\n\n".join(" ".join(p.split()) for p in paragraphs)
        return text.replace("``", "`")

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls.Config))


# --------------------------------------------------------------------------------------------- data


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

    - ``chat``: ``messages`` (turns; loss on assistant turns);
    - ``text``: ``text`` (plain text; loss on every token);
    - ``preference``: ``prompt`` (turns) + ``chosen`` + ``rejected`` (answers), for DPO-style objectives;
    - ``unpaired``: ``prompt`` + ``completion`` + ``label`` (desirable or not), for KTO;
    - ``prompt``: ``prompt`` alone (optionally ``completion`` as a reference answer), for online RL.
    """

    messages: list[dict[str, str]] | None = None
    text: str | None = None
    prompt: list[dict[str, str]] | None = None
    chosen: str | None = None
    rejected: str | None = None
    completion: str | None = None
    label: bool | None = None
    origin: str = ""
    #: Answer options for multiple-choice evaluation (the reference is one of them); any kind may carry it.
    choices: list[str] | None = None

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
    def prompt_messages(self) -> list[dict[str, str]] | None:
        """The conversation the model answers: up to (not including) the last assistant turn."""
        if self.messages and self.messages[-1].get("role") == "assistant":
            return self.messages[:-1]
        return self.prompt


class DataSource(Component):
    """Reads raw records for one split. Yield a :class:`RecordProblem` for a record that cannot be read."""

    kind: ClassVar[str] = "data_source"

    def read(self) -> Iterator[Record | RecordProblem]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        """A short human description of where the data comes from (used in messages and the manifest)."""
        return self.name


class Formatter(Component):
    """Turns one :class:`Record` into an :class:`Example`; raises :class:`InvalidRecord` for bad records."""

    kind: ClassVar[str] = "formatter"

    def format(self, record: Record) -> Example:  # pragma: no cover - interface
        raise NotImplementedError


# -------------------------------------------------------------------------------------- training


class Method(Component):
    """Decides which parameters train: may change how the base model loads, then wraps it.

    ``default_learning_rate`` and ``usual_learning_rates`` drive method-aware defaults and warnings.
    """

    kind: ClassVar[str] = "method"
    default_learning_rate: ClassVar[float] = 2e-4
    usual_learning_rates: ClassVar[tuple[float, float]] = (1e-5, 1e-3)
    #: True when the saved artifact is a PEFT adapter loadable by ``PeftModel.from_pretrained``.
    produces_adapter: ClassVar[bool] = True

    def model_load_kwargs(self, device: str) -> dict[str, Any]:
        """Extra keyword arguments for ``from_pretrained`` (e.g. a quantization config)."""
        return {}

    def apply(self, model: Any) -> Any:  # pragma: no cover - interface
        """Return the model to train (wrapped or with parameters frozen)."""
        raise NotImplementedError

    def report(self, model: Any) -> tuple[list[str], list[str]]:
        """``(notes, warnings)`` worth showing once :meth:`apply` returned ``model``: what the method
        adapted, and what it left out or changed (e.g. targets that matched only part of the network).
        The run prints them; the default says nothing."""
        return [], []

    def save(self, model: Any, path: str) -> None:
        """Write the trained artifact in Hugging Face format."""
        model.save_pretrained(path)

    def load(self, base_model: Any, path: str) -> Any:  # pragma: no cover - interface
        """Load a saved artifact onto a fresh base model (for ``tunesmith eval``)."""
        raise NotImplementedError

    def merge(self, model: Any) -> Any:
        """Fold the trained weights into the base model and return a plain transformers model.

        Methods that cannot merge (prefix tuning, ...) keep this default, which says so.
        """
        from tunesmith.errors import TunesmithError

        raise TunesmithError(f"method '{self.name}' cannot be merged into the base model")


class Objective(Component):
    """Trains the wrapped model.

    ``example_kinds`` lists the :class:`Example` kinds it trains on (checked before any model loads).
    With ``tokenized = True`` it receives the core's tokenized, masked (and packed) rows in
    ``ctx.train_rows``; with False it receives ``ctx.train_examples`` and tokenizes itself (TRL trainers).
    """

    kind: ClassVar[str] = "objective"
    example_kinds: ClassVar[tuple[str, ...]] = ("chat", "text")
    tokenized: ClassVar[bool] = True
    #: What to load the base model as: "causal-lm", or "sequence-classification" (reward models).
    model_kind: ClassVar[str] = "causal-lm"

    def check_method(self, method: Method) -> str | None:
        """Why this objective cannot train with ``method`` (None when it can). Checked at config time."""
        return None

    def check(self, plugins: Any) -> list[str]:
        """Config-time problems with this objective's options that need the plugin registry (e.g. reward
        names); each message is listed with the other config errors before anything loads."""
        return []

    def train(self, ctx: TrainContext) -> Mapping[str, float] | None:  # pragma: no cover - interface
        """Train ``ctx.model`` in place; may return training metrics (runtime, final loss, ...)."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------ evaluation


class Evaluator(Component):
    """Scores a model on evaluation examples; returns ``{metric name: number}``.

    The :class:`tunesmith.evaluation.EvalContext` gives the model, the tokenizer, the examples (each with
    ``prompt`` and ``reference``), a batched ``generate(prompts) -> list[str]``, ``score(prompts,
    completions)`` for log-likelihoods, and this evaluator's ``config``.
    """

    kind: ClassVar[str] = "evaluator"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- rewards


class Reward(Component):
    """A reward function for online RL objectives (GRPO): scores completions of prompts.

    ``score`` receives the prompts (as rendered text), the generated completions and the examples they
    came from (reference answers in ``example.reference``) and returns one float per completion.
    """

    kind: ClassVar[str] = "reward"

    def score(
        self, prompts: list[str], completions: list[str], examples: list[Example]
    ) -> list[float]:  # pragma: no cover - interface
        raise NotImplementedError


BASES: dict[str, type[Component]] = {
    "data_source": DataSource,
    "formatter": Formatter,
    "method": Method,
    "objective": Objective,
    "evaluator": Evaluator,
    "reward": Reward,
}

RegisterCallback = Callable[[type[Component]], None]
__all__ = [
    "BASES",
    "Component",
    "DataSource",
    "Evaluator",
    "Example",
    "Formatter",
    "InvalidRecord",
    "KINDS",
    "Method",
    "Objective",
    "Record",
    "RecordProblem",
    "Reward",
    "RegisterCallback",
    "option",
]
