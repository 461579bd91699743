"""Base classes for the component kinds a plugin can register.

A component is a class with a unique ``name``, a docstring (shown by ``tunesmith plugins show``) and a
nested ``Config`` dataclass whose fields carry defaults and help text (use :func:`tunesmith.option`). In
a run config a component is chosen by ``name`` with its options beside it, e.g. ``method: {name: lora,
r: 16}``. Config validation builds the ``Config`` (unknown option → did-you-mean), instantiates the
class with it, then calls :meth:`Component.validate`; every problem of every component is reported in
one list, each with its config key, before anything loads.

This module must stay importable without torch: the CLI lists components from it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tunesmith.contexts import EvalContext, TrainContext
from tunesmith.errors import TunesmithError
from tunesmith.examples import Example, Record, RecordProblem


class Component:
    """Common behaviour of every component: a name, a docstring, a ``Config`` and an instance of it."""

    #: The component kind (set by each base class: ``"method"``, ``"evaluator"``, ...).
    kind: ClassVar[str] = ""
    #: The unique name users choose it by in a run config.
    name: ClassVar[str] = ""
    #: True when this component is its kind's default: chosen when a run config leaves the kind out
    #: (for evaluators, every default evaluator runs). Declared on the class itself (subclasses do not
    #: inherit it). Built-ins declare the defaults this way; the engine names none.
    default: ClassVar[bool] = False
    #: Options every component of this kind takes besides its ``Config`` (name -> default value), e.g.
    #: a reward's ``weight``; validation sets them as attributes of the instance.
    common_options: ClassVar[Mapping[str, Any]] = {}

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any = None) -> None:
        #: The component's options: an instance of its ``Config`` (typed ``Any``: each subclass has its own).
        self.config: Any = config if config is not None else self.Config()
        for key, value in self.common_options.items():
            setattr(self, key, value)

    def validate(self) -> Iterable[tuple[str, str]]:
        """Problems with this component's options as ``(option, message)`` pairs; none by default.

        Called by config validation after the ``Config`` was built (types already checked). Check ranges
        and combinations here rather than in ``Config.__post_init__``: each message is shown with its
        config key (``method.r: must be at least 1``) in the one list of every config problem. Use ``""``
        as the option for a problem of the component as a whole. Raising :class:`tunesmith.TunesmithError`
        from ``__init__`` is reported the same way, under the component's key.
        """
        return ()

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

    The run calls, in order: :meth:`model_load_kwargs` (while loading the base model), :meth:`apply`,
    :meth:`report`; after training :meth:`save` into the run's ``final/`` directory. ``tunesmith eval``,
    ``generate`` and ``chat`` call :meth:`load` on a fresh base model; ``merge`` calls :meth:`merge`.
    PEFT-backed methods subclass :class:`tunesmith.PeftMethod`, which implements all of them from one
    ``peft_config()``.
    """

    kind: ClassVar[str] = "method"
    #: The learning rate used when ``training.learning_rate`` is not set.
    default_learning_rate: ClassVar[float] = 2e-4
    #: The usual range; a configured learning rate far outside it gets a warning.
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
        """Write the trained artifact in Hugging Face format into ``path`` (an empty directory).

        The default calls ``model.save_pretrained(path)``: a PEFT model writes its adapter, a plain
        transformers model the whole model. The run saves the tokenizer beside it.
        """
        model.save_pretrained(path)

    def load(self, base_model: Any, path: str) -> Any:  # pragma: no cover - interface
        """Load a saved artifact onto a fresh base model (for ``tunesmith eval``)."""
        raise NotImplementedError

    def merge(self, model: Any) -> Any:
        """Fold the trained weights into the base model and return a plain transformers model.

        Methods that cannot merge (prefix tuning, ...) keep this default, which says so.
        """
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
    #: True when the objective passes the validation split (``ctx.eval_rows`` / ``ctx.eval_examples``)
    #: to its trainer as ``eval_dataset``: the run then measures the validation loss while training
    #: (``training.eval_steps``) and can stop early. Objectives without a validation loss leave it False.
    validates: ClassVar[bool] = False
    #: True when ``ctx.train_rows`` may be a stream that the objective hands to its trainer as is: a
    #: ``datasets.IterableDataset`` of rows with no length (``data.streaming``; ``training.max_steps`` is
    #: then set). ``data.streaming`` is refused for objectives that leave it False.
    streams: ClassVar[bool] = False

    def check_method(self, method: Method) -> str | None:
        """Why this objective cannot train with ``method`` (None when it can). Checked at config time."""
        return None

    def train(self, ctx: TrainContext) -> Mapping[str, float] | None:  # pragma: no cover - interface
        """Train ``ctx.model`` in place; may return training metrics (runtime, final loss, ...)."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------ evaluation


class Evaluator(Component):
    """Scores a model on evaluation examples; returns ``{metric name: number}``.

    The :class:`tunesmith.EvalContext` gives the model, the tokenizer, the examples (each with ``prompt``
    and ``reference``), a batched ``generate(prompts) -> list[str]`` and ``score(prompts, completions)``
    for log-likelihoods; the evaluator's own options are ``self.config``.
    """

    kind: ClassVar[str] = "evaluator"
    #: Whether the base model's results may be reused from the evaluation cache by a later run with the
    #: same base model, data and options. Set ``False`` when the base pass must run every time (it
    #: writes files the tuned pass reads).
    cache_base: ClassVar[bool] = True

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- rewards


class Reward(Component):
    """A reward function for online RL objectives (GRPO): scores completions of prompts.

    ``score`` receives the prompts (as rendered text), the generated completions and the examples they
    came from (reference answers in ``example.reference``) and returns one float per completion.
    """

    kind: ClassVar[str] = "reward"
    #: Every reward takes ``weight``: its factor in the weighted sum an objective or evaluator uses.
    common_options: ClassVar[Mapping[str, Any]] = {"weight": 1.0}
    weight: float

    def score(
        self, prompts: list[str], completions: list[str], examples: list[Example]
    ) -> list[float]:  # pragma: no cover - interface
        raise NotImplementedError


# ----------------------------------------------------------------------------------------- judges


class Judge(Component):
    """Decides, for each answer a model gave to a request, whether the answer refuses (declines) it.

    ``judge`` receives the requests as the user wrote them (plain text, not chat-rendered) and the
    model's answers (generated text only, reasoning removed), and returns one bool per answer: True
    where the answer refuses or declines the request, False where it goes along with it. It says nothing
    about whether an answer is harmful or correct, only whether it is a refusal. Evaluators hold judges
    as nested components (``judge: {name: ...}``), e.g. the built-in ``safety`` evaluator, which turns
    the verdicts into refusal rates. A judge may be a rule, a classifier or another model; it must be
    deterministic for the same inputs, and load what it needs on first use, not at construction.
    """

    kind: ClassVar[str] = "judge"

    def judge(self, prompts: list[str], responses: list[str]) -> list[bool]:  # pragma: no cover - interface
        """One verdict per response: True where ``responses[i]`` refuses ``prompts[i]``."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- trackers


class Tracker(Component):
    """Sends a run to an experiment tracker (MLflow, Weights & Biases, ...): its config, the metrics
    logged while training, the final held-out metrics and where the run directory is.

    The engine calls, on the process that owns the console only: :meth:`start` once the run directory
    exists, :meth:`log` each time training logs (training and validation metrics), :meth:`finish` once
    ``metrics.json`` and the report are written, or :meth:`abort` when the run fails. A tracker that
    raises is reported as a warning, recorded in ``metrics.json`` (``tracker_errors``) and not called
    again; the run goes on. Import the tracker's library inside these methods, never at module level.
    """

    kind: ClassVar[str] = "tracker"
    #: The module the tracker needs (checked at config time without importing it), e.g. ``"mlflow"``.
    library: ClassVar[str | None] = None
    #: What to install when :attr:`library` is missing, e.g. ``"tunesmith[mlflow]"``.
    install: ClassVar[str | None] = None

    def validate(self) -> Iterable[tuple[str, str]]:
        """Reports a missing :attr:`library` with the ``pip install`` line; subclasses extend it."""
        if self.library and not library_installed(self.library):
            install = self.install or self.library
            yield "", f"tracker '{self.name}' needs {self.library}, not installed: pip install '{install}'"

    def start(self, config: Mapping[str, Any], run_dir: Path, run_name: str) -> str | None:
        """Open the tracker's run. ``config`` is the resolved run config (``config.yaml``), ``run_dir``
        the run directory (absolute), ``run_name`` the config's ``name``. Returns a line telling the user
        where the run is tracked (shown in the console), or None."""
        raise NotImplementedError

    def log(self, step: int, metrics: Mapping[str, float]) -> None:  # pragma: no cover - interface
        """Numbers logged at optimizer step ``step``: ``loss``, ``learning_rate``, ``grad_norm``, ... and,
        when the run validates, ``eval_loss`` and the other ``eval_`` metrics."""
        raise NotImplementedError

    def finish(self, metrics: Mapping[str, Any], run_dir: Path) -> None:  # pragma: no cover - interface
        """Close the run: ``metrics`` is what ``metrics.json`` holds (:meth:`final_metrics` flattens its
        held-out scores), ``run_dir`` the complete run directory, to upload or to point at."""
        raise NotImplementedError

    def abort(self, error: str) -> None:
        """The run failed with ``error`` (or this tracker did): close the tracker's run as failed.
        Best effort; the default does nothing."""

    @staticmethod
    def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
        """Held-out scores as flat names: ``tuned/test/exact-match/exact_match``, ``base/test/...``."""
        return {
            f"{side}/{split}/{name}": float(value)
            for side in ("base", "tuned")
            for split, scores in (metrics.get(side) or {}).items()
            for name, value in scores.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }

    @staticmethod
    def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        """A nested config as ``{"training.learning_rate": 0.0003, "method.name": "lora", ...}``; lists
        of components are indexed (``evaluators.0.name``)."""
        flat: dict[str, Any] = {}
        items = config.items() if isinstance(config, Mapping) else enumerate(config)
        for key, value in items:
            name = f"{prefix}{key}"
            if isinstance(value, (Mapping, list)) and value:
                flat.update(Tracker.flat_config(value, f"{name}."))  # type: ignore[arg-type]
            else:
                flat[name] = value
        return flat


def library_installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ models


class ModelProvider(Component):
    """Supplies a base model by name: ``model: {path: <name>}`` loads the directory it returns.

    For models that are built or fetched by code rather than named by a hub id or a path: the built-in
    ``tiny`` demo model is one; a vendor could ship a licensed model behind its own download this way.
    """

    kind: ClassVar[str] = "model"

    def path(self, log: Callable[[str], None]) -> str:  # pragma: no cover - interface
        """A local directory (or hub id) holding the model and tokenizer; may build it on first use.

        ``log`` shows progress to the user (one line per call).
        """
        raise NotImplementedError

    def tokenizer_path(self, log: Callable[[str], None]) -> str:
        """Where the tokenizer alone can be loaded, for checks that need no model (``data check``).

        Defaults to :meth:`path`; override it when the model takes long to build and the tokenizer
        does not.
        """
        return self.path(log)


__all__ = [
    "Component",
    "DataSource",
    "Evaluator",
    "Example",
    "Formatter",
    "Judge",
    "Method",
    "ModelProvider",
    "Objective",
    "Record",
    "RecordProblem",
    "Reward",
    "Tracker",
]
