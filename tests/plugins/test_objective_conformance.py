"""Built-in objectives run the shipped objective conformance kit; and the kit catches broken objectives.

Each conformance class trains a ~90k-parameter random Llama for a few steps, three times (the shared
training, its repeat for ``deterministic``, and a two-step training that checkpoints): about a second
per class on a CPU once torch and TRL are imported.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from tunesmith.config import build_component
from tunesmith.plugins import Plugins
from tunesmith.testing import (
    OBJECTIVE_CHECKS,
    ObjectiveChecker,
    ObjectiveConformance,
    check_objective,
    task_examples,
)
from tunesmith_plugins.methods.lora import Lora
from tunesmith_plugins.objectives.preference import Dpo, Kto, Orpo, Simpo
from tunesmith_plugins.objectives.reward import RewardModel
from tunesmith_plugins.objectives.sft import Sft

SMALL_LORA = {"r": 4, "alpha": 8, "dropout": 0.0}

# ------------------------------------------------------------------------- the built-in objectives


class TestSft(ObjectiveConformance):
    objective = Sft


class TestSftLora(ObjectiveConformance):
    objective = Sft
    method = Lora
    method_options = SMALL_LORA


class TestSftUnpacked(ObjectiveConformance):
    objective = Sft
    packing = False
    examples = staticmethod(lambda seed: task_examples("text", seed))


class TestDpo(ObjectiveConformance):
    objective = Dpo  # full model: the reference is a frozen copy


class TestDpoLora(ObjectiveConformance):
    objective = Dpo  # PEFT: the reference is TRL's copy of the initial adapter, deleted after training
    method = Lora
    method_options = SMALL_LORA


class TestKto(ObjectiveConformance):
    objective = Kto


class TestOrpo(ObjectiveConformance):
    objective = Orpo


class TestSimpo(ObjectiveConformance):
    objective = Simpo


class TestReward(ObjectiveConformance):
    objective = RewardModel  # a sequence classifier with a new, seeded score head


class TestRewardLora(ObjectiveConformance):
    objective = RewardModel
    method = Lora
    method_options = SMALL_LORA


class TestGrpo(ObjectiveConformance):
    # Nested components (rewards): an instance built exactly as a run config builds it.
    objective = build_component(
        Plugins(),
        "objective",
        {"name": "grpo", "num_generations": 2, "max_completion_length": 8, "rewards": [{"name": "length"}]},
    )


def test_every_builtin_objective_is_covered():
    plugins = Plugins(strict=False)
    builtins = {n for n in plugins.components["objective"] if plugins.owners[("objective", n)].builtin}
    covered = {
        getattr(cls.objective, "name", None)
        for cls in globals().values()
        if isinstance(cls, type) and issubclass(cls, ObjectiveConformance) and cls.objective is not None
    }
    assert builtins <= covered, f"add an ObjectiveConformance class for {sorted(builtins - covered)}"


def test_every_check_is_a_test_method():
    tests = sorted(n for n in dir(ObjectiveConformance) if n.startswith("test_"))
    assert tests == sorted(f"test_{c}" for c in OBJECTIVE_CHECKS)


# ---------------------------------------------------------------- the kit catches broken objectives


def statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


def sft_trainer(ctx: Any, *, callbacks: list[Any] | None = None, **training: Any) -> Any:
    """What Sft.train does, with the trainer's callbacks and training arguments open to change."""
    from transformers import Trainer, TrainingArguments

    return ctx.adopt(
        Trainer(
            model=ctx.model,
            args=TrainingArguments(**ctx.training_kwargs(**training)),
            train_dataset=ctx.train_rows,
            data_collator=ctx.collator,
            processing_class=ctx.tokenizer,
            callbacks=ctx.callbacks if callbacks is None else callbacks,
        )
    )


class DoesNotTrain(Sft):
    """Returns plausible metrics without training."""

    name = "broken-no-training"

    def train(self, ctx: Any) -> dict[str, float]:
        return {"train_loss": 1.0}


class ReturnsText(Sft):
    """Trains, but reports a metric as a string."""

    name = "broken-metrics"

    def train(self, ctx: Any) -> dict[str, Any]:
        return {**super().train(ctx), "train_loss": "low"}


class TrainsACopy(Sft):
    """Trains a copy of the model instead of ctx.model."""

    name = "broken-copy"

    def train(self, ctx: Any) -> dict[str, float]:
        import copy

        return super().train(dataclasses.replace(ctx, model=copy.deepcopy(ctx.model)))


class UnfreezesEverything(Sft):
    """Makes every parameter trainable, so the base under an adapter trains too."""

    name = "broken-unfreeze"

    def train(self, ctx: Any) -> dict[str, float]:
        ctx.model.requires_grad_(True)
        return super().train(ctx)


class IgnoresCallbacks(Sft):
    """Builds its trainer without ctx.callbacks: the run's log, TensorBoard and progress see nothing."""

    name = "broken-callbacks"

    def train(self, ctx: Any) -> dict[str, float]:
        return dict(sft_trainer(ctx, callbacks=[]).train().metrics)


class CheckpointsElsewhere(Sft):
    """Writes checkpoints to a directory of its own, where --resume does not look."""

    name = "broken-checkpoints"

    def train(self, ctx: Any) -> dict[str, float]:
        return dict(sft_trainer(ctx, output_dir=str(ctx.run_dir / "my-checkpoints")).train().metrics)


class NeverCheckpoints(Sft):
    """Ignores training.save_steps."""

    name = "broken-no-checkpoints"

    def train(self, ctx: Any) -> dict[str, float]:
        return dict(sft_trainer(ctx, save_strategy="no").train().metrics)


class SavesOnlyWeights(Sft):
    """Writes the weights as a "checkpoint" without the Trainer's state: nothing to resume from."""

    name = "broken-weights-only"

    def train(self, ctx: Any) -> dict[str, float]:
        metrics = dict(sft_trainer(ctx, save_strategy="no").train().metrics)
        ctx.model.save_pretrained(ctx.checkpoint_dir / f"checkpoint-{ctx.training.max_steps}")
        return metrics


class Unseeded(Sft):
    """Jitters its learning rate with an unseeded random generator."""

    name = "broken-unseeded"

    def train(self, ctx: Any) -> dict[str, float]:
        jitter = random.SystemRandom().uniform(0.5, 1.5)
        lr = ctx.training.learning_rate * jitter
        return dict(sft_trainer(ctx, learning_rate=lr).train().metrics)


def test_an_objective_that_does_not_train_fails_trains():
    [result] = check_objective(DoesNotTrain, checks=["trains"])
    assert result.status == "failed" and "did not train ctx.model in place" in result.detail


def test_an_objective_that_trains_a_copy_fails_trains():
    [result] = check_objective(TrainsACopy, checks=["trains"])
    assert result.status == "failed" and "0 of 20 trainable parameter tensors changed" in result.detail


def test_a_metric_that_is_not_a_number_fails_trains():
    [result] = check_objective(ReturnsText, checks=["trains"])
    assert result.status == "failed" and "'train_loss' is a str ('low'), not a number" in result.detail


def test_an_objective_that_unfreezes_the_base_fails_frozen_unchanged():
    results = check_objective(
        UnfreezesEverything, method=Lora, method_options=SMALL_LORA, checks=["trains", "frozen_unchanged"]
    )
    assert statuses(results) == {"trains": "passed", "frozen_unchanged": "failed"}
    assert "frozen parameter tensors (requires_grad False before training) changed" in results[1].detail


def test_frozen_unchanged_is_skipped_when_nothing_is_frozen():
    [result] = check_objective(Sft, checks=["frozen_unchanged"])
    assert result.status == "skipped" and "set `method`" in result.detail


def test_an_objective_that_drops_the_callbacks_fails_reports_through_callbacks():
    results = check_objective(IgnoresCallbacks, checks=["trains", "reports_through_callbacks"])
    assert statuses(results) == {"trains": "passed", "reports_through_callbacks": "failed"}
    assert "never on_log nor on_train_end" in results[1].detail


@pytest.mark.parametrize(("objective", "message"), [
    (CheckpointsElsewhere, "elsewhere in the run dir: my-checkpoints/checkpoint-1"),
    (NeverCheckpoints, "no checkpoint-* directory under ctx.checkpoint_dir"),
    (SavesOnlyWeights, "checkpoint-2 under ctx.checkpoint_dir hold no trainer_state.json"),
])  # fmt: skip
def test_checkpoints_missing_from_the_run_dir_fail_checkpoints_in_run_dir(objective: type, message: str):
    [result] = check_objective(objective, checks=["checkpoints_in_run_dir"])
    assert result.status == "failed" and message in result.detail


def test_an_unseeded_objective_fails_deterministic():
    results = check_objective(Unseeded, checks=["trains", "deterministic"])
    assert statuses(results) == {"trains": "passed", "deterministic": "failed"}
    assert "differ in 20 of 20 trainable parameter tensors" in results[1].detail


# --------------------------------------------------------------------------------- the kit itself


def test_examples_of_the_wrong_kind_fail_every_check_with_the_reason():
    results = check_objective(Dpo, examples=lambda seed: task_examples("chat", seed), checks=["trains"])
    assert results[0].status == "failed" and "trains on preference examples" in results[0].detail


def test_a_method_the_objective_refuses_is_refused():
    with pytest.raises(ValueError, match="cannot train with method 'lora'"):
        ObjectiveChecker(Dpo, {"reference": "model"}, method=Lora, method_options=SMALL_LORA)


def test_options_the_objective_rejects_are_refused():
    from tunesmith_plugins.objectives.grpo import Grpo

    with pytest.raises(ValueError, match="rewards: list at least one reward"):
        ObjectiveChecker(Grpo)


def test_skip_and_xfail_in_the_plain_api():
    results = check_objective(
        IgnoresCallbacks,
        checks=["reports_through_callbacks", "checkpoints_in_run_dir", "trains"],
        skip={"checkpoints_in_run_dir": "not today"},
        xfail={"reports_through_callbacks": "known bug", "trains": "stale entry"},
    )
    assert statuses(results) == {
        "reports_through_callbacks": "xfailed",
        "checkpoints_in_run_dir": "skipped",
        "trains": "failed",
    }
    assert "expected to fail (stale entry) but passed" in results[2].detail


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown check"):
        check_objective(Sft, skip={"train": "typo"})


@pytest.mark.parametrize("kind", ["chat", "text", "preference", "unpaired", "prompt"])
def test_task_examples_are_of_the_kind_asked_and_deterministic(kind: str):
    examples = task_examples(kind, seed=3, n=6)
    assert [ex.kind for ex in examples] == [kind] * 6
    assert examples == task_examples(kind, seed=3, n=6) != task_examples(kind, seed=4, n=6)
    if kind == "preference":
        assert all(ex.chosen != ex.rejected and ex.chosen in ex.prompt[0]["content"] for ex in examples)
    if kind == "unpaired":
        assert {ex.label for ex in examples} == {True, False}
