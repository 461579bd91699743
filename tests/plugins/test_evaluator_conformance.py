"""Built-in evaluators run the shipped evaluator conformance kit; and the kit catches broken evaluators.

Each class evaluates a random ~90k-parameter Llama on six examples a handful of times (8 new tokens):
well under a second per class on a CPU.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tunesmith import EvalContext, Evaluator, Example, TunesmithError
from tunesmith.config import build_component
from tunesmith.plugins import Plugins
from tunesmith.testing import EVALUATOR_CHECKS, EvaluatorConformance, check_evaluator, task_examples
from tunesmith_plugins.evaluators.accuracy import Accuracy
from tunesmith_plugins.evaluators.bleu import Bleu
from tunesmith_plugins.evaluators.exact_match import ExactMatch
from tunesmith_plugins.evaluators.human_review import HumanReview
from tunesmith_plugins.evaluators.perplexity import Perplexity
from tunesmith_plugins.evaluators.preference_accuracy import PreferenceAccuracy
from tunesmith_plugins.evaluators.rouge import Rouge


def multiple_choice(seed: int) -> list[Example]:
    """Chat copy tasks whose answer options are the right word and two others."""
    examples = task_examples("chat", seed, 6)
    words = [ex.reference for ex in examples]
    for i, ex in enumerate(examples):
        ex.choices = [words[(i + 1) % 6], ex.reference, words[(i + 2) % 6]]
    return examples


# ------------------------------------------------------------------------- the built-in evaluators


class TestPerplexity(EvaluatorConformance):
    evaluator = Perplexity


class TestExactMatch(EvaluatorConformance):
    evaluator = ExactMatch


class TestBleu(EvaluatorConformance):
    evaluator = Bleu


class TestRouge(EvaluatorConformance):
    evaluator = Rouge


class TestAccuracy(EvaluatorConformance):
    evaluator = Accuracy


class TestAccuracyMultipleChoice(EvaluatorConformance):
    evaluator = Accuracy
    options = {"mode": "multiple-choice", "length_normalize": True}
    examples = staticmethod(multiple_choice)


class TestHumanReview(EvaluatorConformance):
    evaluator = HumanReview
    needs_base_pass = True  # the tuned pass pairs its answers with those the base pass saved


class TestPreferenceAccuracy(EvaluatorConformance):
    evaluator = PreferenceAccuracy
    examples = staticmethod(lambda seed: task_examples("preference", seed, 6))


class TestMeanReward(EvaluatorConformance):
    # Nested components (rewards): an instance built exactly as a run config builds it.
    evaluator = build_component(
        Plugins(), "evaluator", {"name": "mean-reward", "rewards": [{"name": "length"}]}
    )


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_every_builtin_evaluator_is_covered():
    """Every built-in evaluator has a conformance class, here or in its own test module."""
    import importlib

    for module in (
        "test_safety",
        "test_forgetting",
        "test_lm_eval",
    ):  # evaluators whose kit classes live beside their tests
        importlib.import_module(module)
    plugins = Plugins(strict=False)
    builtins = {n for n in plugins.components["evaluator"] if plugins.owners[("evaluator", n)].builtin}
    covered = {
        getattr(cls.evaluator, "name", None)
        for cls in _subclasses(EvaluatorConformance)
        if cls.evaluator is not None
    }
    assert builtins <= covered, f"add an EvaluatorConformance class for {sorted(builtins - covered)}"


def test_every_check_is_a_test_method():
    tests = sorted(n for n in dir(EvaluatorConformance) if n.startswith("test_"))
    assert tests == sorted(f"test_{c}" for c in EVALUATOR_CHECKS)


def test_human_review_without_its_base_pass_fails_clearly():
    """needs_base_pass is what the evaluator needs: without it the tuned pass has nothing to pair with."""
    [result] = check_evaluator(HumanReview, checks=["returns_numbers"])
    assert (
        result.status == "failed" and "TunesmithError: human-review: no base-model answers" in result.detail
    )


# --------------------------------------------------------------- the kit catches broken evaluators


def statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


class _Broken(Evaluator):
    @dataclass
    class Config:
        pass


class ReturnsText(_Broken):
    name = "broken-text"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, Any]:
        return {"score": "high"}


class ReturnsNothing(_Broken):
    name = "broken-empty"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, Any]:
        return {}


class ReturnsNaN(_Broken):
    name = "broken-nan"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, Any]:
        return {"loss": float("nan")}


class ReturnsAList(_Broken):
    name = "broken-list"

    def evaluate(self, ctx: EvalContext) -> Any:
        return [0.5]


class Unseeded(_Broken):
    """Scores a random sample of the examples, drawn anew each time."""

    name = "broken-unseeded"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        sample = random.sample(ctx.examples, k=2)
        scored = ctx.score([ex.prompt for ex in sample], [ex.completion for ex in sample])
        return {"logprob": sum(lp for lp, _ in scored) / 2}


class MeanOfBatchMeans(_Broken):
    """Averages per-batch means, so uneven batches weigh examples differently."""

    name = "broken-batching"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        lengths = [len(ex.prompt) for ex in ctx.examples]
        size = ctx.batch_size
        means = [sum(b) / len(b) for b in (lengths[i : i + size] for i in range(0, len(lengths), size))]
        return {"prompt_chars": sum(means) / len(means)}


class WritesToCwd(_Broken):
    """Always writes its predictions to a relative path."""

    name = "broken-cwd"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        Path("predictions.json").write_text(json.dumps([ex.prompt for ex in ctx.examples]))
        return {"n": len(ctx.examples)}


class WritesBesideOutputDir(_Broken):
    """Honours output_dir None, but writes next to the output directory."""

    name = "broken-beside"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        if ctx.output_dir is not None:
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            (ctx.output_dir / "inside.json").write_text("{}")
            (ctx.output_dir.parent / "beside.json").write_text("{}")
        return {"n": len(ctx.examples)}


class DividesByZero(_Broken):
    """Filters the examples with references and divides by their number."""

    name = "broken-no-reference"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        examples = [ex for ex in ctx.examples if ex.reference is not None]
        return {"mean_reference_chars": sum(len(ex.reference or "") for ex in examples) / len(examples)}


class SaysWhatIsMissing(DividesByZero):
    name = "clear-no-reference"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        if not any(ex.reference is not None for ex in ctx.examples):
            raise TunesmithError(f"{self.name}: no evaluation example has a reference answer")
        return super().evaluate(ctx)


@pytest.mark.parametrize(("evaluator", "message"), [
    (ReturnsText, "'score' is a str ('high'), not a number"),
    (ReturnsNothing, "returned an empty mapping"),
    (ReturnsNaN, "'loss' is nan (not finite)"),
    (ReturnsAList, "returned list, not a mapping"),
])  # fmt: skip
def test_metrics_that_are_not_numbers_fail_returns_numbers(evaluator: type, message: str):
    [result] = check_evaluator(evaluator, checks=["returns_numbers"])
    assert result.status == "failed" and message in result.detail


def test_an_unseeded_evaluator_fails_deterministic():
    results = check_evaluator(Unseeded, checks=["returns_numbers", "deterministic"])
    assert statuses(results) == {"returns_numbers": "passed", "deterministic": "failed"}
    assert "differ in logprob" in results[1].detail


def test_a_batch_dependent_metric_fails_batch_size_invariant():
    results = check_evaluator(MeanOfBatchMeans, checks=["deterministic", "batch_size_invariant"])
    assert statuses(results) == {"deterministic": "passed", "batch_size_invariant": "failed"}
    assert "batch_size 4 and 1 give different metrics" in results[1].detail


@pytest.mark.parametrize(("evaluator", "message"), [
    (WritesToCwd, "with ctx.output_dir None the evaluator wrote 1 path(s): cwd/predictions.json"),
    (WritesBesideOutputDir, "with ctx.output_dir set the evaluator wrote 1 path(s) outside it: beside.json"),
])  # fmt: skip
def test_files_outside_the_output_dir_fail_writes_only_to_output_dir(evaluator: type, message: str):
    [result] = check_evaluator(evaluator, checks=["writes_only_to_output_dir"])
    assert result.status == "failed" and message in result.detail


def test_a_crash_without_references_fails_no_reference_is_clear():
    results = check_evaluator(DividesByZero, checks=["returns_numbers", "no_reference_is_clear"])
    assert statuses(results) == {"returns_numbers": "passed", "no_reference_is_clear": "failed"}
    assert "raised ZeroDivisionError" in results[1].detail
    [result] = check_evaluator(SaysWhatIsMissing, checks=["no_reference_is_clear"])
    assert result.status == "passed" and "raises TunesmithError" in result.detail


# --------------------------------------------------------------------------------- the kit itself


def test_skip_and_xfail_in_the_plain_api():
    results = check_evaluator(
        Unseeded,
        checks=["deterministic", "batch_size_invariant", "returns_numbers"],
        skip={"batch_size_invariant": "not today"},
        xfail={"deterministic": "known bug", "returns_numbers": "stale entry"},
    )
    assert statuses(results) == {
        "deterministic": "xfailed",
        "batch_size_invariant": "skipped",
        "returns_numbers": "failed",
    }
    assert "expected to fail (stale entry) but passed" in results[2].detail


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown check"):
        check_evaluator(Perplexity, xfail={"determinism": "typo"})


def test_the_working_directory_is_restored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_evaluator(WritesToCwd, checks=["writes_only_to_output_dir"])
    assert Path.cwd() == tmp_path and not (tmp_path / "predictions.json").exists()
