"""A conformance kit for evaluator plugins: every evaluator, built-in or third party, runs it on itself.

In a plugin's own tests (pytest collects the ``test_*`` checks of the base class)::

    from tunesmith.testing import EvaluatorConformance

    class TestMyEvaluator(EvaluatorConformance):
        evaluator = MyEvaluator        # the Evaluator subclass (or an instance, for nested components)
        options = {"max_new_tokens": 8}
        needs_base_pass = False        # True: run label="base" before label="tuned" (human-review)
        skip = {"batch_size_invariant": "samples by design"}    # optional: check name -> reason
        xfail = {"deterministic": "upstream bug #123"}          # optional: check name -> reason (strict)

Outside pytest (a CLI command, a notebook)::

    from tunesmith.testing import check_evaluator, format_results
    results = check_evaluator(MyEvaluator, {"max_new_tokens": 8})
    print(format_results(results))
    assert all(r.ok for r in results)

Every evaluation calls ``evaluator.evaluate(ctx)`` on a real :class:`tunesmith.EvalContext`, built the
way the run builds it: a small random Llama from :mod:`tunesmith.testing.models` (built once, shared by
every evaluation, as the run shares its model), the examples rendered by
:func:`tunesmith.evaluation.to_eval_examples` (``examples(seed)`` if given, else chat copy tasks from
:func:`tunesmith.testing.objectives.task_examples`), the chat template's stop tokens, ``split`` "test",
``max_new_tokens`` 8 and, unless a check says otherwise, ``batch_size`` 4 and an ``output_dir`` that
does not exist yet (the run passes ``<run dir>/review``: create it when you write). With
``needs_base_pass`` every evaluation is two calls, ``label="base"`` then ``label="tuned"`` on the same
output directory, and the tuned call's metrics are the ones checked. Evaluations run with a temporary
working directory.

The checks, in order (``EVALUATOR_CHECKS``):

``returns_numbers``
    ``evaluate(ctx)`` returns a non-empty mapping of ``str`` to finite numbers (anything ``float()``
    takes except a string).
``deterministic``
    A second evaluation of the same model on the same examples returns exactly the same metrics.
``batch_size_invariant``
    ``batch_size`` 1 and 4 give the same metrics within ``atol`` (1e-6, absolute or relative).
``writes_only_to_output_dir``
    With ``output_dir=None`` the evaluation creates or changes no file (in the working directory or
    the kit's work directory); with an ``output_dir`` it writes only inside it.
``no_reference_is_clear``
    On examples without reference answers (the same prompts, answers removed) the evaluator returns
    numbers or raises :class:`tunesmith.TunesmithError` (a message the user can act on), never another
    exception.

This module imports torch, transformers and the evaluation helpers only inside functions; pytest is
needed only for :class:`EvaluatorConformance`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tunesmith.components import Evaluator
from tunesmith.errors import TunesmithError
from tunesmith.examples import Example
from tunesmith.testing.kit import CheckFailed, CheckResult, Kit, format_results, pytest_check
from tunesmith.testing.methods import SMALL_MODEL
from tunesmith.testing.objectives import (
    _build,
    _names,
    _problems,
    _settings_from,
    _show,
    number_problems,
    task_examples,
)

#: The check names, in the order they run.
EVALUATOR_CHECKS = (
    "returns_numbers",
    "deterministic",
    "batch_size_invariant",
    "writes_only_to_output_dir",
    "no_reference_is_clear",
)


@dataclass
class EvaluatorSettings:
    """Knobs of the kit; :class:`EvaluatorConformance` reads them from class attributes of the same name."""

    model_overrides: dict[str, Any] = field(default_factory=lambda: dict(SMALL_MODEL))
    seed: int = 0
    num_examples: int = 6  # examples generated when no ``examples`` callable is given
    batch_size: int = 4  # compared with batch size 1 by batch_size_invariant
    max_new_tokens: int = 8
    atol: float = 1e-6  # batch_size_invariant: |a - b| <= atol, or <= atol * max(|a|, |b|)
    threads: int | None = 1  # torch threads while a check runs (a tiny model is fastest on one)


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and directory (None) under ``root``, by relative path."""
    found: dict[str, tuple[int, int] | None] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        for name in dirs:
            found[str((here / name).relative_to(root))] = None
        for name in files:
            path = here / name
            try:
                stat = path.stat()
            except OSError:
                continue
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Paths created, changed or removed between two snapshots."""
    return sorted(p for p in set(before) | set(after) if before.get(p, "absent") != after.get(p, "absent"))


def _floats(metrics: Any, what: str) -> dict[str, float]:
    problems = number_problems(metrics, what)
    if problems:
        raise CheckFailed(f"{what} does not return numbers (see returns_numbers): " + "; ".join(problems))
    return {k: float(v) for k, v in metrics.items()}


class EvaluatorChecker(Kit):
    """Runs the checks for one evaluator; builds the model once and caches what checks share.

    ``evaluator`` is an :class:`~tunesmith.Evaluator` subclass (built with ``Config(**options)``) or an
    instance (for options holding nested components, built e.g. with
    ``tunesmith.config.build_component``). ``examples`` is a callable ``seed -> list[tunesmith.Example]``;
    ``needs_base_pass`` runs a ``label="base"`` evaluation before every ``label="tuned"`` one.
    ``workdir`` holds the working directory and the output directories (a temporary directory if
    omitted; :meth:`close` removes it).
    """

    checks = EVALUATOR_CHECKS
    what = "evaluator"

    def __init__(
        self,
        evaluator: type[Evaluator] | Evaluator,
        options: Mapping[str, Any] | None = None,
        *,
        examples: Callable[[int], list[Example]] | None = None,
        needs_base_pass: bool = False,
        settings: EvaluatorSettings | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        self.evaluator = _build(evaluator, Evaluator, options, "an Evaluator")
        _problems(self.evaluator)
        self.examples_fn = examples
        self.needs_base_pass = needs_base_pass
        super().__init__(settings or EvaluatorSettings(), workdir)
        self.cwd = self.workdir / "cwd"
        self.cwd.mkdir(exist_ok=True)

    # ----------------------------------------------------------------------------------- pieces

    @property
    def tokenizer(self) -> Any:
        from tunesmith.testing.models import build_tokenizer

        return self._once("tokenizer", build_tokenizer)

    @property
    def model(self) -> Any:
        def build() -> Any:
            from tunesmith.testing.models import build_random_model

            s = self.settings
            return build_random_model(self.tokenizer, seed=s.seed, **s.model_overrides).eval()

        return self._once("model", build)

    @property
    def chat(self) -> Any:
        from tunesmith.chat import ChatFormat

        return self._once("chat", lambda: ChatFormat(self.tokenizer))

    @property
    def examples(self) -> list[Example]:
        def build() -> list[Example]:
            s = self.settings
            if self.examples_fn is not None:
                examples = list(self.examples_fn(s.seed))
            else:
                examples = task_examples("chat", s.seed, s.num_examples)
            if not examples:
                raise ValueError("the examples callable returned no examples")
            return examples

        return self._once("examples", build)

    def render(self, examples: list[Example]) -> list[Any]:
        from tunesmith.evaluation import to_eval_examples

        return to_eval_examples(examples, self.tokenizer, self.chat)

    @property
    def eval_examples(self) -> list[Any]:
        return self._once("eval_examples", lambda: self.render(self.examples))

    @property
    def unreferenced(self) -> list[Any]:
        """The examples with their answers removed: the prompts alone (plain texts stay as they are)."""

        def build() -> list[Any]:
            stripped = []
            for ex in self.examples:
                prompt = ex.prompt_messages
                if prompt:
                    stripped.append(Example(prompt=prompt, origin=ex.origin, choices=ex.choices))
                elif ex.text is not None:
                    stripped.append(Example(text=ex.text, origin=ex.origin))
            return self.render(stripped)

        return self._once("unreferenced", build)

    def evaluate(
        self, examples: list[Any] | None = None, *, batch_size: int | None = None, output_dir: Path | None
    ) -> Any:
        """``evaluate(ctx)`` (after a ``label="base"`` pass with ``needs_base_pass``) in the kit's cwd."""
        from tunesmith.contexts import EvalContext

        s = self.settings
        examples = self.eval_examples if examples is None else examples
        model, tokenizer = self.model, self.tokenizer
        stop = self.chat.stop_token_ids(model)
        labels = ("base", "tuned") if self.needs_base_pass else ("tuned",)
        metrics = None
        with _working_directory(self.cwd):
            for label in labels:
                ctx = EvalContext(
                    model,
                    tokenizer,
                    list(examples),
                    split="test",
                    label=label,
                    batch_size=s.batch_size if batch_size is None else batch_size,
                    max_new_tokens=s.max_new_tokens,
                    output_dir=output_dir,
                    stop_token_ids=stop,
                    final_answer=self.chat.final_answer,
                )
                metrics = self.evaluator.evaluate(ctx)
        return metrics

    @property
    def metrics(self) -> Any:
        """The first evaluation (default batch size, a fresh output directory), shared by the checks."""
        return self._once("metrics", lambda: self.evaluate(output_dir=self.fresh_dir("output")))

    # ----------------------------------------------------------------------------------- checks

    def check_returns_numbers(self) -> str:
        metrics = self.metrics
        problems = number_problems(metrics, "evaluate(ctx)", allow_empty=False)
        if problems:
            raise CheckFailed(
                "evaluate(ctx) must return a non-empty {str: finite number}: " + "; ".join(problems)
            )
        return f"evaluate(ctx) on {len(self.eval_examples)} examples returned {_show(metrics)}"

    def check_deterministic(self) -> str:
        first = _floats(self.metrics, "evaluate(ctx)")
        second = _floats(self.evaluate(output_dir=self.fresh_dir("output")), "evaluate(ctx)")
        if first != second:
            differ = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
            raise CheckFailed(
                f"two evaluations of the same model on the same examples differ in {_names(differ)}: "
                f"{_show(first)} then {_show(second)}"
            )
        return f"two evaluations return the same {len(first)} metrics"

    def check_batch_size_invariant(self) -> str:
        s = self.settings
        batched = _floats(self.metrics, "evaluate(ctx)")
        single = _floats(self.evaluate(batch_size=1, output_dir=self.fresh_dir("output")), "evaluate(ctx)")
        differ = []
        for key in sorted(set(batched) | set(single)):
            a, b = batched.get(key), single.get(key)
            if a is None or b is None or not math.isclose(a, b, rel_tol=s.atol, abs_tol=s.atol):
                differ.append(f"{key}: {a!r} vs {b!r}")
        if differ:
            raise CheckFailed(
                f"batch_size {s.batch_size} and 1 give different metrics (atol {s.atol:g}): {'; '.join(differ[:5])}"
            )
        gap = max((abs(batched[k] - single[k]) for k in batched), default=0.0)
        return f"batch_size {s.batch_size} vs 1: {len(batched)} metrics agree (max |diff| {gap:.2g}, atol {s.atol:g})"

    def check_writes_only_to_output_dir(self) -> str:
        before = _snapshot(self.workdir)
        self.evaluate(output_dir=None)
        written = _changed(before, _snapshot(self.workdir))
        if written:
            raise CheckFailed(
                f"with ctx.output_dir None the evaluator wrote {len(written)} path(s): {_names(written)} "
                "(relative to the kit's work directory; cwd/ is the working directory); write nothing then"
            )
        out = self.fresh_dir("output")
        before = _snapshot(self.workdir)
        self.evaluate(output_dir=out)
        written = _changed(before, _snapshot(self.workdir))
        inside = out.relative_to(self.workdir)
        outside = [p for p in written if p != str(inside) and not Path(p).is_relative_to(inside)]
        if outside:
            raise CheckFailed(
                f"with ctx.output_dir set the evaluator wrote {len(outside)} path(s) outside it: {_names(outside)} "
                "(relative to the kit's work directory; cwd/ is the working directory)"
            )
        files = [p for p in written if (self.workdir / p).is_file()]
        what = f"{len(files)} file(s) inside it" if files else "nothing"
        return f"output_dir None: wrote nothing; output_dir set: wrote {what}"

    def check_no_reference_is_clear(self) -> str:
        examples = self.unreferenced
        try:
            metrics = self.evaluate(examples, output_dir=self.fresh_dir("output"))
        except TunesmithError as exc:
            return f"on {len(examples)} examples without references it raises TunesmithError: {exc}"
        except Exception as exc:  # noqa: BLE001 - the check is about which exception it is
            raise CheckFailed(
                f"on {len(examples)} examples without references it raised {type(exc).__name__}: {exc}; "
                "raise tunesmith.TunesmithError with a message saying what the examples lack"
            ) from None
        problems = number_problems(metrics, "evaluate(ctx)")
        if problems:
            raise CheckFailed(
                f"on {len(examples)} examples without references evaluate(ctx) returned no numbers: "
                + "; ".join(problems)
            )
        return f"on {len(examples)} examples without references it returns {_show(metrics)}"


def check_evaluator(
    evaluator: type[Evaluator] | Evaluator,
    options: Mapping[str, Any] | None = None,
    *,
    examples: Callable[[int], list[Example]] | None = None,
    needs_base_pass: bool = False,
    checks: Iterable[str] | None = None,
    skip: Mapping[str, str] | None = None,
    xfail: Mapping[str, str] | None = None,
    settings: EvaluatorSettings | None = None,
    **overrides: Any,
) -> list[CheckResult]:
    """Run the conformance checks on ``evaluator`` (a class with ``options``, or an instance).

    ``examples`` is a callable ``seed -> list[Example]`` (default: chat copy tasks);
    ``needs_base_pass`` runs ``label="base"`` before each ``label="tuned"`` evaluation. ``checks``
    picks a subset (default: all of :data:`EVALUATOR_CHECKS`, in order); ``skip`` / ``xfail`` map a
    check name to a reason; keyword ``overrides`` change :class:`EvaluatorSettings` fields
    (``max_new_tokens=4``). Returns one :class:`CheckResult` per check; nothing raises for a
    non-conforming evaluator.
    """
    settings = dataclasses.replace(settings or EvaluatorSettings(), **overrides)
    with EvaluatorChecker(
        evaluator, options, examples=examples, needs_base_pass=needs_base_pass, settings=settings
    ) as run:
        return run.results(checks, skip=skip, xfail=xfail)


# ------------------------------------------------------------------------------------- pytest

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the class below
    pytest = None  # type: ignore[assignment]


if pytest is not None:

    class EvaluatorConformance:
        """Subclass as ``Test...`` and set ``evaluator`` (and ``options``): pytest collects one test per check.

        Class attributes: ``evaluator`` (an Evaluator class, or an instance), ``options``, ``examples``
        (a function ``seed -> list[tunesmith.Example]``; default: chat copy tasks), ``needs_base_pass``
        (run ``label="base"`` before ``label="tuned"``, for evaluators that compare the two),
        ``skip`` / ``xfail`` (check name -> reason; an xfail check that passes fails, so stale entries
        are noticed), and every :class:`EvaluatorSettings` field (``model_overrides``, ``seed``,
        ``num_examples``, ``batch_size``, ``max_new_tokens``, ``atol``, ``threads``). The model is built
        once per class (the class-scoped ``evaluator_kit`` fixture).
        """

        evaluator: ClassVar[type[Evaluator] | Evaluator | None] = None
        options: ClassVar[Mapping[str, Any]] = {}
        examples: ClassVar[Callable[[int], list[Example]] | None] = None
        needs_base_pass: ClassVar[bool] = False
        skip: ClassVar[Mapping[str, str]] = {}
        xfail: ClassVar[Mapping[str, str]] = {}

        model_overrides: ClassVar[dict[str, Any]] = SMALL_MODEL
        seed: ClassVar[int] = EvaluatorSettings.seed
        num_examples: ClassVar[int] = EvaluatorSettings.num_examples
        batch_size: ClassVar[int] = EvaluatorSettings.batch_size
        max_new_tokens: ClassVar[int] = EvaluatorSettings.max_new_tokens
        atol: ClassVar[float] = EvaluatorSettings.atol
        threads: ClassVar[int | None] = EvaluatorSettings.threads

        @classmethod
        def conformance_settings(cls) -> EvaluatorSettings:
            return _settings_from(cls, EvaluatorSettings)

        @pytest.fixture(scope="class")
        @classmethod
        def evaluator_kit(cls, tmp_path_factory: Any) -> Any:
            if cls.evaluator is None:
                raise TypeError(f"{cls.__name__}: set `evaluator = YourEvaluatorClass` on the test class")
            name = getattr(cls.evaluator, "name", "") or cls.__name__
            kit = EvaluatorChecker(
                cls.evaluator,
                cls.options,
                examples=cls.examples,
                needs_base_pass=cls.needs_base_pass,
                settings=cls.conformance_settings(),
                workdir=tmp_path_factory.mktemp(f"evaluator-kit-{name}"),
            )
            yield kit
            kit.close()

        def _check(self, kit: EvaluatorChecker, name: str) -> None:
            pytest_check(type(self), kit, name, f"evaluator '{kit.evaluator.name}'")

        def test_returns_numbers(self, evaluator_kit: EvaluatorChecker) -> None:
            self._check(evaluator_kit, "returns_numbers")

        def test_deterministic(self, evaluator_kit: EvaluatorChecker) -> None:
            self._check(evaluator_kit, "deterministic")

        def test_batch_size_invariant(self, evaluator_kit: EvaluatorChecker) -> None:
            self._check(evaluator_kit, "batch_size_invariant")

        def test_writes_only_to_output_dir(self, evaluator_kit: EvaluatorChecker) -> None:
            self._check(evaluator_kit, "writes_only_to_output_dir")

        def test_no_reference_is_clear(self, evaluator_kit: EvaluatorChecker) -> None:
            self._check(evaluator_kit, "no_reference_is_clear")

else:  # pragma: no cover

    def __getattr__(name: str) -> Any:
        if name == "EvaluatorConformance":
            raise ImportError("tunesmith.testing.EvaluatorConformance needs pytest: pip install pytest")
        raise AttributeError(name)


__all__ = [
    "EVALUATOR_CHECKS",
    "EvaluatorChecker",
    "EvaluatorConformance",
    "EvaluatorSettings",
    "check_evaluator",
    "format_results",
]
