"""A conformance kit for objective plugins: every objective, built-in or third party, runs it on itself.

In a plugin's own tests (pytest collects the ``test_*`` checks of the base class)::

    from tunesmith.testing import ObjectiveConformance

    class TestMyObjective(ObjectiveConformance):
        objective = MyObjective        # the Objective subclass (or an instance, for nested components)
        options = {"beta": 0.1}        # its Config options
        method = Lora                  # optional: a Method class to wrap the model with (default: none,
        method_options = {"r": 4}      # the whole tiny model trains), and its options
        skip = {"deterministic": "samples with an unseeded sampler by design"}   # check name -> reason
        xfail = {"checkpoints_in_run_dir": "upstream bug #123"}                  # check name -> reason

Outside pytest (a CLI command, a notebook)::

    from tunesmith.testing import check_objective, format_results
    results = check_objective(MyObjective, {"beta": 0.1})
    print(format_results(results))
    assert all(r.ok for r in results)

Every training runs ``objective.train(ctx)`` on a :class:`tunesmith.TrainContext` built the way the run
builds it: a small random Llama from :mod:`tunesmith.testing.models` (saved once, loaded with the
objective's ``model_kind`` head — a one-output sequence classifier for reward models — and the
method's ``model_load_kwargs``, then wrapped by ``method.apply``), ``tunesmith.Device("cpu")``, a
:class:`tunesmith.schema.TrainingConfig` (``max_steps`` steps of ``batch_size`` rows, a constant
``learning_rate`` with no warm-up, ``logging_steps`` 1), ``train_examples`` always and, for a
``tokenized`` objective, ``train_rows`` tokenized, masked and packed by :mod:`tunesmith.data`, with
the run's :class:`tunesmith.data.Collator`. The examples are ``examples(seed)`` if given, else
generated for the objective's first ``example_kinds`` entry (:func:`task_examples`).

The checks, in order (``OBJECTIVE_CHECKS``):

``trains``
    ``train(ctx)`` returns ``None`` or a mapping of ``str`` to finite numbers, leaves every trainable
    parameter finite, and changes at least one of them (training happened, in place on ``ctx.model``).
``frozen_unchanged``
    Every parameter with ``requires_grad`` False before training is bit-for-bit the same after it
    (skipped when nothing is frozen: set ``method`` to an adapter method such as lora to check it).
``reports_through_callbacks``
    A recording ``transformers.TrainerCallback`` placed in ``ctx.callbacks`` saw ``on_log`` at least
    once and ``on_train_end``: the trainer reports through the run's callbacks (training log,
    TensorBoard, progress, plugin hooks).
``checkpoints_in_run_dir``
    With ``save_steps`` 1 and ``max_steps`` 2, a ``checkpoint-*`` directory holding the Trainer's
    ``trainer_state.json`` appears under ``ctx.checkpoint_dir`` (``ctx.run_dir / "checkpoints"``):
    where, and in the form, ``tunesmith train --resume`` looks for one.
``deterministic``
    A second training from the same seeded model, data and config gives bit-for-bit identical
    trainable parameters (``torch.equal``).

``trains``, ``frozen_unchanged`` and ``reports_through_callbacks`` share one training; ``deterministic``
repeats it; ``checkpoints_in_run_dir`` is one more, short, training.

This module imports torch, transformers and the data pipeline only inside functions; pytest is needed
only for :class:`ObjectiveConformance`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tunesmith.components import Method, Objective
from tunesmith.examples import Example
from tunesmith.testing.kit import CheckFailed, CheckResult, CheckSkipped, Kit, format_results, pytest_check
from tunesmith.testing.methods import SMALL_MODEL

#: The check names, in the order they run.
OBJECTIVE_CHECKS = (
    "trains",
    "frozen_unchanged",
    "reports_through_callbacks",
    "checkpoints_in_run_dir",
    "deterministic",
)

#: A save interval no test training reaches: the main trainings write no checkpoint.
NO_CHECKPOINTS = 1_000_000


@dataclass
class ObjectiveSettings:
    """Knobs of the kit; :class:`ObjectiveConformance` reads them from class attributes of the same name."""

    model_overrides: dict[str, Any] = field(default_factory=lambda: dict(SMALL_MODEL))
    seed: int = 0
    max_steps: int = 3
    batch_size: int = 4
    learning_rate: float = 1e-3
    num_examples: int = 8  # examples generated when no ``examples`` callable is given
    max_length: int = 128  # data.max_length for tokenizing and packing
    packing: bool = True  # tokenized objectives: pack rows, as the default data.packing does
    #: Other :class:`tunesmith.schema.TrainingConfig` fields, e.g. ``{"gradient_accumulation_steps": 2}``.
    training: dict[str, Any] = field(default_factory=dict)
    threads: int | None = 1  # torch threads while a check runs (a tiny model is fastest on one)


# ------------------------------------------------------------------------------------- examples


def task_examples(kind: str, seed: int = 0, n: int = 8) -> list[Example]:
    """``n`` small examples of ``kind``, deterministic from ``seed``: a copy task on random words.

    ``chat``: user "Repeat: w", assistant "w". ``text``: "w w w w". ``preference``: the prompt with
    chosen = the right answer, rejected = a wrong one. ``unpaired``: the prompt with the right answer
    (label True) or a wrong one (label False), alternating. ``prompt``: the prompt alone, with the right
    answer as its reference ``completion``.
    """
    rng = random.Random(seed)

    def word(alphabet: str) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 6)))

    out = []
    for i in range(n):
        right, wrong = word("abcdefghij"), word("klmnopqrst")  # disjoint alphabets: never equal
        prompt = [{"role": "user", "content": f"Repeat: {right}"}]
        origin = f"conformance:{i + 1}"
        if kind == "chat":
            example = Example(messages=[*prompt, {"role": "assistant", "content": right}], origin=origin)
        elif kind == "text":
            example = Example(text=" ".join([right] * 4), origin=origin)
        elif kind == "preference":
            example = Example(prompt=prompt, chosen=right, rejected=wrong, origin=origin)
        elif kind == "unpaired":
            good = i % 2 == 0
            example = Example(prompt=prompt, completion=right if good else wrong, label=good, origin=origin)
        elif kind == "prompt":
            example = Example(prompt=prompt, completion=right, origin=origin)
        else:
            raise ValueError(f"unknown example kind {kind!r}: chat, text, preference, unpaired or prompt")
        out.append(example)
    return out


# -------------------------------------------------------------------------------- shared machinery


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _build(component: Any, base: type, options: Mapping[str, Any] | None, what: str) -> Any:
    """An instance of ``component`` (a class, built with ``Config(**options)``, or an instance)."""
    if isinstance(component, base):
        if options:
            raise TypeError(f"pass options only with {what} class, not an instance")
        return component
    if not (isinstance(component, type) and issubclass(component, base)):
        raise TypeError(f"expected {what} class or instance, got {component!r}")
    cls: Any = component
    return cls(cls.Config(**dict(options or {})))


def _problems(component: Any) -> None:
    """Refuse a component whose options its own ``validate()`` rejects: the kit cannot test it."""
    problems = [f"{option or '(component)'}: {message}" for option, message in component.validate()]
    if problems:
        raise ValueError(f"{component.kind} '{component.name}' rejects its options: " + "; ".join(problems))


def number_problems(
    metrics: Any, what: str, *, allow_none: bool = False, allow_empty: bool = True
) -> list[str]:
    """Why ``metrics`` is not a mapping of ``str`` to finite numbers (empty when it is).

    ``allow_none``: ``metrics`` itself may be ``None`` (an objective's ``train`` may return nothing).
    A number is anything ``float()`` takes except a string.
    """
    if metrics is None and allow_none:
        return []
    if not isinstance(metrics, Mapping):
        return [f"{what} returned {type(metrics).__name__}, not a mapping of metric name -> number"]
    if not metrics and not allow_empty:
        return [f"{what} returned an empty mapping: no metric"]
    problems = []
    for key, value in metrics.items():
        if not isinstance(key, str):
            problems.append(f"key {key!r} is a {type(key).__name__}, not a str")
            continue
        if isinstance(value, (str, bytes)):
            problems.append(f"{key!r} is a {type(value).__name__} ({value!r}), not a number")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            problems.append(f"{key!r} is a {type(value).__name__} ({value!r}), not a number")
            continue
        if not math.isfinite(number):
            problems.append(f"{key!r} is {number} (not finite)")
    return problems


def _show(metrics: Mapping[str, Any] | None, limit: int = 6) -> str:
    if not metrics:
        return "{}"
    items = list(metrics.items())
    shown = ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v!r}" for k, v in items[:limit])
    return "{" + shown + (", ..." if len(items) > limit else "") + "}"


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


# ------------------------------------------------------------------------------------ the kit


@dataclass
class _Training:
    """One training's outcome: what train() returned, and the parameters before and after."""

    ctx: Any
    metrics: Any
    trainable: list[tuple[str, Any, Any]]  # (name, parameter, copy before training)
    frozen: list[tuple[str, Any, Any]]
    recorder: Any


class ObjectiveChecker(Kit):
    """Runs the checks for one objective; builds the base model once and caches what checks share.

    ``objective`` is an :class:`~tunesmith.Objective` subclass (built with ``Config(**options)``) or an
    instance (for options holding nested components, built e.g. with
    ``tunesmith.config.build_component``). ``method`` likewise, with ``method_options``; ``None`` trains
    the whole model. ``examples`` is a callable ``seed -> list[tunesmith.Example]``. ``workdir`` holds
    the saved base model and the run directories (a temporary directory if omitted; :meth:`close`
    removes it).
    """

    checks = OBJECTIVE_CHECKS
    what = "objective"

    def __init__(
        self,
        objective: type[Objective] | Objective,
        options: Mapping[str, Any] | None = None,
        *,
        method: type[Method] | Method | None = None,
        method_options: Mapping[str, Any] | None = None,
        examples: Callable[[int], list[Example]] | None = None,
        settings: ObjectiveSettings | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        self.objective = _build(objective, Objective, options, "an Objective")
        _problems(self.objective)
        self.method = None if method is None else _build(method, Method, method_options, "a Method")
        if self.method is not None:
            _problems(self.method)
            refused = self.objective.check_method(self.method)
            if refused:
                raise ValueError(
                    f"objective '{self.objective.name}' cannot train with method '{self.method.name}': {refused}"
                )
        self.examples_fn = examples
        super().__init__(settings or ObjectiveSettings(), workdir)

    # ----------------------------------------------------------------------------------- pieces

    @property
    def tokenizer(self) -> Any:
        from tunesmith.testing.models import build_tokenizer

        return self._once("tokenizer", build_tokenizer)

    @property
    def base_dir(self) -> Path:
        def build() -> Path:
            from tunesmith.testing.models import build_random_model

            path = self.workdir / "base"
            s = self.settings
            build_random_model(self.tokenizer, seed=s.seed, **s.model_overrides).save_pretrained(path)
            self.tokenizer.save_pretrained(path)
            return path

        return self._once("base_dir", build)

    @property
    def train_examples(self) -> list[Example]:
        def build() -> list[Example]:
            s = self.settings
            if self.examples_fn is not None:
                examples = list(self.examples_fn(s.seed))
            else:
                kind = self.objective.example_kinds[0]
                examples = task_examples(kind, s.seed, s.num_examples)
            if not examples:
                raise ValueError("the examples callable returned no examples")
            wanted = self.objective.example_kinds
            wrong = sorted({ex.kind for ex in examples} - set(wanted))
            if wrong:
                raise ValueError(
                    f"objective '{self.objective.name}' trains on {' or '.join(wanted)} examples, but the "
                    f"kit's examples include {', '.join(wrong)} examples"
                )
            return examples

        return self._once("train_examples", build)

    @property
    def train_rows(self) -> list[dict[str, Any]]:
        """The examples tokenized, masked and (with ``packing``) packed, as the run builds them."""

        def build() -> list[dict[str, Any]]:
            from tunesmith.chat import ChatFormat
            from tunesmith.data import pack, tokenize_split

            s = self.settings
            tokenized, problems, _ = tokenize_split(
                self.train_examples, self.tokenizer, max_length=s.max_length, chat=ChatFormat(self.tokenizer)
            )
            if problems:
                raise ValueError("the kit's examples do not tokenize: " + "; ".join(str(p) for p in problems))
            if s.packing:
                return pack(tokenized, s.max_length)
            return [{"input_ids": t.input_ids, "labels": t.labels} for t in tokenized]

        return self._once("train_rows", build)

    def fresh_model(self) -> Any:
        """The base model loaded with the objective's head the method's way, then wrapped by the method."""
        import torch
        import transformers
        from transformers import set_seed

        from tunesmith.hf import HEADS

        head = self.objective.model_kind
        kwargs: dict[str, Any] = {"dtype": torch.float32}
        if self.method is not None:
            kwargs.update(self.method.model_load_kwargs("cpu"))
        if head == "sequence-classification":
            kwargs["num_labels"] = 1
        base_dir = self.base_dir  # built (which draws random numbers) before seeding
        seed = self.training_config().seed
        set_seed(seed)  # as the run does: a new head (a reward model's score) is initialised from it
        model = getattr(transformers, HEADS[head]).from_pretrained(base_dir, **kwargs)
        if self.method is not None:
            set_seed(seed)
            model = self.method.apply(model)
        return model

    def training_config(self, **overrides: Any) -> Any:
        from tunesmith.schema import TrainingConfig

        s = self.settings
        values: dict[str, Any] = dict(
            max_steps=s.max_steps,
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            lr_scheduler="constant",
            warmup_ratio=0.0,
            logging_steps=1,
            save_steps=NO_CHECKPOINTS,
            seed=s.seed,
        )
        values.update(s.training)
        values.update(overrides)
        return TrainingConfig(**values)

    def context(self, model: Any, run_dir: Path, callbacks: list[Any], **training: Any) -> Any:
        """A :class:`tunesmith.TrainContext` as ``tunesmith train`` builds it, for ``model`` in ``run_dir``."""
        from tunesmith.contexts import Device, TrainContext
        from tunesmith.data import Collator

        run_dir.mkdir(parents=True, exist_ok=True)
        return TrainContext(
            model=model,
            tokenizer=self.tokenizer,
            training=self.training_config(**training),
            train_rows=self.train_rows if self.objective.tokenized else [],
            train_examples=self.train_examples,
            collator=Collator(self.tokenizer.pad_token_id, packed=self.settings.packing),
            device=Device("cpu"),
            run_dir=run_dir,
            callbacks=callbacks,
        )

    def train(self, stem: str, **training: Any) -> _Training:
        """A fresh model trained by the objective in a new run directory."""
        model = self.fresh_model()
        trainable = [(n, p, p.detach().clone()) for n, p in model.named_parameters() if p.requires_grad]
        frozen = [(n, p, p.detach().clone()) for n, p in model.named_parameters() if not p.requires_grad]
        recorder = _recorder()
        ctx = self.context(model, self.fresh_dir(stem), [recorder], **training)
        metrics = self.objective.train(ctx)
        return _Training(ctx, metrics, trainable, frozen, recorder)

    @property
    def trained(self) -> _Training:
        """The main training (shared by trains, frozen_unchanged, reports_through_callbacks, deterministic)."""
        return self._once("trained", lambda: self.train("run"))

    # ----------------------------------------------------------------------------------- checks

    def _steps(self) -> str:
        s = self.settings
        return f"{s.max_steps} steps of batch {s.batch_size}, lr {s.learning_rate:g}"

    def check_trains(self) -> str:
        import torch

        t = self.trained
        problems = number_problems(t.metrics, "train(ctx)", allow_none=True)
        if problems:
            raise CheckFailed("train(ctx) must return None or {str: number}: " + "; ".join(problems))
        if not t.trainable:
            raise CheckFailed("no parameter requires grad before training: nothing can train")
        broken = [n for n, p, _ in t.trainable if not torch.isfinite(p.detach()).all()]
        if broken:
            raise CheckFailed(
                f"training left non-finite values in {len(broken)} parameters: {_names(broken)}"
            )
        changed = [n for n, p, before in t.trainable if not torch.equal(p.detach(), before)]
        what = f"{len(changed)} of {len(t.trainable)} trainable parameter tensors changed ({self._steps()})"
        if not changed:
            raise CheckFailed(
                f"{what}: train(ctx) did not train ctx.model in place; it returned {_show(t.metrics)}"
            )
        return f"{what}; train(ctx) returned {_show(t.metrics)}"

    def check_frozen_unchanged(self) -> str:
        import torch

        t = self.trained
        if not t.frozen:
            where = (
                "the whole model trains"
                if self.method is None
                else f"method '{self.method.name}' freezes nothing"
            )
            raise CheckSkipped(
                f"no parameter is frozen ({where}); set `method` to an adapter method (e.g. lora) to check this"
            )
        changed = [n for n, p, before in t.frozen if not torch.equal(p.detach(), before)]
        if changed:
            raise CheckFailed(
                f"{len(changed)} of {len(t.frozen)} frozen parameter tensors (requires_grad False before "
                f"training) changed: {_names(changed)}"
            )
        return f"all {len(t.frozen)} frozen parameter tensors are bit-for-bit unchanged after training"

    def check_reports_through_callbacks(self) -> str:
        t = self.trained
        seen = dict(t.recorder.seen)
        detail = f"a TrainerCallback in ctx.callbacks saw {_show(seen) if seen else 'no event'}"
        missing = [event for event in ("on_log", "on_train_end") if not seen.get(event)]
        if missing:
            raise CheckFailed(
                f"{detail}; never {' nor '.join(missing)}: pass ctx.callbacks to the trainer "
                "(callbacks=ctx.callbacks), or call each callback's hooks from your own loop"
            )
        return detail

    def check_checkpoints_in_run_dir(self) -> str:
        run = self._once("checkpointed", lambda: self.train("checkpointed", max_steps=2, save_steps=1))
        directory = run.ctx.checkpoint_dir
        found = (
            sorted(p.name for p in directory.glob("checkpoint-*") if p.is_dir()) if directory.is_dir() else []
        )
        elsewhere = sorted(
            str(p.relative_to(run.ctx.run_dir)) for p in run.ctx.run_dir.rglob("checkpoint-*") if p.is_dir()
        )
        if not found:
            extra = (
                f"; checkpoint directories elsewhere in the run dir: {_names(elsewhere)}" if elsewhere else ""
            )
            raise CheckFailed(
                f"no checkpoint-* directory under ctx.checkpoint_dir after max_steps 2 with save_steps 1{extra}: "
                "save where ctx.training_kwargs() says (output_dir=ctx.checkpoint_dir, save_steps)"
            )
        whole = [name for name in found if (directory / name / "trainer_state.json").is_file()]
        if not whole:
            raise CheckFailed(
                f"{', '.join(found)} under ctx.checkpoint_dir hold no trainer_state.json: the run marks a "
                "checkpoint resumable (tunesmith train --resume) only when the Trainer has written it"
            )
        return (
            f"max_steps 2, save_steps 1: {', '.join(found)} under ctx.checkpoint_dir, with trainer_state.json"
        )

    def check_deterministic(self) -> str:
        import torch

        first = self.trained
        second = self._once("repeated", lambda: self.train("repeated"))
        names = [n for n, _, _ in first.trainable]
        if names != [n for n, _, _ in second.trainable]:
            raise CheckFailed("the two trainings have different trainable parameters")
        differ = []
        largest = 0.0
        for (name, a, _), (_, b, _) in zip(first.trainable, second.trainable, strict=True):
            if not torch.equal(a.detach(), b.detach()):
                differ.append(name)
                if a.shape == b.shape:
                    largest = max(largest, float((a.detach().float() - b.detach().float()).abs().max()))
        if differ:
            raise CheckFailed(
                f"two trainings from the same seeded model, data and config differ in {len(differ)} of "
                f"{len(names)} trainable parameter tensors (max |diff| {largest:.3g}): {_names(differ)}; "
                "seed everything from ctx.training.seed"
            )
        return f"two trainings ({self._steps()}) give bit-for-bit identical {len(names)} trainable tensors"


def _recorder() -> Any:
    """A ``TrainerCallback`` that counts the events it sees."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.seen: dict[str, int] = {}
            self.logs: list[dict[str, Any]] = []

        def _count(self, event: str) -> None:
            self.seen[event] = self.seen.get(event, 0) + 1

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._count("on_train_begin")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._count("on_step_end")

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            self._count("on_log")
            self.logs.append(dict(logs or {}))

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._count("on_save")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._count("on_train_end")

    return Recorder()


def check_objective(
    objective: type[Objective] | Objective,
    options: Mapping[str, Any] | None = None,
    *,
    method: type[Method] | Method | None = None,
    method_options: Mapping[str, Any] | None = None,
    examples: Callable[[int], list[Example]] | None = None,
    checks: Iterable[str] | None = None,
    skip: Mapping[str, str] | None = None,
    xfail: Mapping[str, str] | None = None,
    settings: ObjectiveSettings | None = None,
    **overrides: Any,
) -> list[CheckResult]:
    """Run the conformance checks on ``objective`` (a class with ``options``, or an instance).

    ``method`` (with ``method_options``) wraps the model first (default: none, the whole model
    trains); ``examples`` is a callable ``seed -> list[Example]`` (default: :func:`task_examples` of the
    objective's first example kind). ``checks`` picks a subset (default: all of
    :data:`OBJECTIVE_CHECKS`, in order); ``skip`` / ``xfail`` map a check name to a reason; keyword
    ``overrides`` change :class:`ObjectiveSettings` fields (``max_steps=5``). Returns one
    :class:`CheckResult` per check; nothing raises for a non-conforming objective.
    """
    settings = dataclasses.replace(settings or ObjectiveSettings(), **overrides)
    with ObjectiveChecker(
        objective, options, method=method, method_options=method_options, examples=examples, settings=settings
    ) as run:
        return run.results(checks, skip=skip, xfail=xfail)


# ------------------------------------------------------------------------------------- pytest

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the class below
    pytest = None  # type: ignore[assignment]


def _settings_from(cls: type, settings_class: type) -> Any:
    values = {f.name: getattr(cls, f.name) for f in dataclasses.fields(settings_class)}
    for key, value in values.items():
        if isinstance(value, dict):
            values[key] = dict(value)
    return settings_class(**values)


if pytest is not None:

    class ObjectiveConformance:
        """Subclass as ``Test...`` and set ``objective`` (and ``options``): pytest collects one test per check.

        Class attributes: ``objective`` (an Objective class, or an instance), ``options``, ``method``
        (a Method class or instance to wrap the model with; ``None``: the whole model trains),
        ``method_options``, ``examples`` (a function ``seed -> list[tunesmith.Example]``; default:
        :func:`task_examples` of the objective's first example kind), ``skip`` / ``xfail`` (check name
        -> reason; an xfail check that passes fails, so stale entries are noticed), and every
        :class:`ObjectiveSettings` field (``model_overrides``, ``seed``, ``max_steps``, ``batch_size``,
        ``learning_rate``, ``num_examples``, ``max_length``, ``packing``, ``training``, ``threads``).
        The base model is built once per class and the trainings are shared by the checks (the
        class-scoped ``objective_kit`` fixture).
        """

        objective: ClassVar[type[Objective] | Objective | None] = None
        options: ClassVar[Mapping[str, Any]] = {}
        method: ClassVar[type[Method] | Method | None] = None
        method_options: ClassVar[Mapping[str, Any]] = {}
        examples: ClassVar[Callable[[int], list[Example]] | None] = None
        skip: ClassVar[Mapping[str, str]] = {}
        xfail: ClassVar[Mapping[str, str]] = {}

        model_overrides: ClassVar[dict[str, Any]] = SMALL_MODEL
        seed: ClassVar[int] = ObjectiveSettings.seed
        max_steps: ClassVar[int] = ObjectiveSettings.max_steps
        batch_size: ClassVar[int] = ObjectiveSettings.batch_size
        learning_rate: ClassVar[float] = ObjectiveSettings.learning_rate
        num_examples: ClassVar[int] = ObjectiveSettings.num_examples
        max_length: ClassVar[int] = ObjectiveSettings.max_length
        packing: ClassVar[bool] = ObjectiveSettings.packing
        training: ClassVar[dict[str, Any]] = {}
        threads: ClassVar[int | None] = ObjectiveSettings.threads

        @classmethod
        def conformance_settings(cls) -> ObjectiveSettings:
            return _settings_from(cls, ObjectiveSettings)

        @pytest.fixture(scope="class")
        @classmethod
        def objective_kit(cls, tmp_path_factory: Any) -> Any:
            if cls.objective is None:
                raise TypeError(f"{cls.__name__}: set `objective = YourObjectiveClass` on the test class")
            name = getattr(cls.objective, "name", "") or cls.__name__
            kit = ObjectiveChecker(
                cls.objective,
                cls.options,
                method=cls.method,
                method_options=cls.method_options,
                examples=cls.examples,
                settings=cls.conformance_settings(),
                workdir=tmp_path_factory.mktemp(f"objective-kit-{name}"),
            )
            yield kit
            kit.close()

        def _check(self, kit: ObjectiveChecker, name: str) -> None:
            method = f", method '{kit.method.name}'" if kit.method is not None else ""
            pytest_check(type(self), kit, name, f"objective '{kit.objective.name}'{method}")

        def test_trains(self, objective_kit: ObjectiveChecker) -> None:
            self._check(objective_kit, "trains")

        def test_frozen_unchanged(self, objective_kit: ObjectiveChecker) -> None:
            self._check(objective_kit, "frozen_unchanged")

        def test_reports_through_callbacks(self, objective_kit: ObjectiveChecker) -> None:
            self._check(objective_kit, "reports_through_callbacks")

        def test_checkpoints_in_run_dir(self, objective_kit: ObjectiveChecker) -> None:
            self._check(objective_kit, "checkpoints_in_run_dir")

        def test_deterministic(self, objective_kit: ObjectiveChecker) -> None:
            self._check(objective_kit, "deterministic")

else:  # pragma: no cover

    def __getattr__(name: str) -> Any:
        if name == "ObjectiveConformance":
            raise ImportError("tunesmith.testing.ObjectiveConformance needs pytest: pip install pytest")
        raise AttributeError(name)


__all__ = [
    "OBJECTIVE_CHECKS",
    "ObjectiveChecker",
    "ObjectiveConformance",
    "ObjectiveSettings",
    "check_objective",
    "format_results",
    "number_problems",
    "task_examples",
]
