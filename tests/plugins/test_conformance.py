"""Every built-in method runs the shipped conformance suite; and the suite catches broken methods.

The built-ins are found the way the CLI finds them (the ``tunesmith`` entry points), so a new built-in
method is covered without touching this file. A method that fails to import is absent, not an error
here: ``tests/core/test_plugins.py`` is where a broken plugin shows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tunesmith.plugins import Plugins
from tunesmith.testing import CHECKS, MethodConformance, check_method
from tunesmith_plugins.methods.lora import Lora

#: Small options per built-in method (the default for any other method: {}).
OPTIONS: dict[str, dict[str, Any]] = {
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "qlora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "adapter": {"bottleneck": 8},
    "freeze": {"last_n_layers": 1},
    "prefix-tuning": {"num_virtual_tokens": 4},
    "prompt-tuning": {"num_virtual_tokens": 4},
    "p-tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 32},
}


def builtin_methods() -> dict[str, type]:
    plugins = Plugins(strict=False)
    return {
        name: cls
        for name, cls in sorted(plugins.components["method"].items())
        if plugins.owners[("method", name)].builtin
    }


BUILTINS = builtin_methods()


def _known_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` minus any the method does not have (test_options_exist reports those)."""
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    return {k: v for k, v in options.items() if k in fields}


for _name, _cls in BUILTINS.items():
    _class_name = "TestConformance_" + _name.replace("-", "_")
    globals()[_class_name] = type(
        _class_name,
        (MethodConformance,),
        {"method": _cls, "options": _known_options(_cls, OPTIONS.get(_name, {})), "__module__": __name__},
    )


@pytest.mark.parametrize("name", sorted(set(OPTIONS) & set(BUILTINS)))
def test_options_exist(name: str):
    """The small options above still name real options (a rename would otherwise pass silently)."""
    fields = {f.name for f in dataclasses.fields(BUILTINS[name].Config)}
    assert set(OPTIONS[name]) <= fields, f"{name}: unknown options {set(OPTIONS[name]) - fields}"


def test_the_core_methods_are_covered():
    assert {"full", "lora"} <= set(BUILTINS)


# ---------------------------------------------------------------- the suite catches broken methods

SMALL_LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


class LoadForgetsWeights(Lora):
    """load() builds a fresh adapter instead of reading the saved one."""

    name = "broken-load"

    def load(self, base_model: Any, path: str) -> Any:
        from peft import get_peft_model

        return get_peft_model(base_model, self.peft_config())


class TrainsEverything(Lora):
    """Claims to be an adapter, but apply() leaves every weight trainable."""

    name = "broken-apply"

    def apply(self, model: Any) -> Any:
        model = super().apply(model)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model


class GenerateIgnoresAdapter(Lora):
    """generate() runs the base model (the PEFT prompt-learning bug, in miniature)."""

    name = "broken-generate"

    def apply(self, model: Any) -> Any:
        model = super().apply(model)
        plain_generate = model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            with model.disable_adapter():
                return plain_generate(*args, **kwargs)

        model.generate = generate
        return model


class MergeDropsAdapter(Lora):
    """merge() unloads the adapter without folding it in."""

    name = "broken-merge"

    def merge(self, model: Any) -> Any:
        return model.unload()


class CountedLora(Lora):
    """Declares its trainable count by formula: r * (in + out) per adapted linear layer."""

    name = "counted-lora"
    offset = 0

    def expected_trainable(self, model: Any) -> int:
        import torch

        r = self.config.r
        linears = [
            m
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")
        ]
        return sum(r * (m.in_features + m.out_features) for m in linears) + self.offset


class MiscountedLora(CountedLora):
    name = "miscounted-lora"
    offset = 1


def test_a_load_that_forgets_the_weights_fails_save_reload_only():
    results = statuses(check_method(LoadForgetsWeights, SMALL_LORA, checks=["save_reload", "peft_adapter"]))
    assert results == {"save_reload": "failed", "peft_adapter": "passed"}


def test_an_adapter_that_trains_every_weight_fails_the_parameter_checks():
    results = check_method(TrainsEverything, SMALL_LORA, checks=["trainable_parameters", "base_unchanged"])
    assert statuses(results) == {"trainable_parameters": "failed", "base_unchanged": "failed"}
    assert "trains every parameter" in results[0].detail
    assert "changed in training" in results[1].detail


def test_generate_that_differs_from_teacher_forcing_fails_generate():
    results = check_method(GenerateIgnoresAdapter, SMALL_LORA, checks=["loss_decreases", "generate"])
    assert statuses(results) == {"loss_decreases": "passed", "generate": "failed"}
    assert "teacher forcing gives" in results[1].detail


class PlainPeftPromptTuning(Lora):
    """Stock PEFT prompt tuning with no workaround: its cached generate() drops the virtual tokens
    (transformers 5 renamed the cache argument PEFT passes; see STACK-NOTES)."""

    name = "plain-prompt-tuning"

    def apply(self, model: Any) -> Any:
        from peft import PromptTuningConfig, get_peft_model

        return get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))


def test_the_peft_prompt_learning_generate_bug_is_caught():
    """If this starts passing, PEFT fixed the bug: the prompt-learning workaround may be removable."""
    results = check_method(PlainPeftPromptTuning, checks=["save_reload", "generate"], learning_rate=0.3)
    assert statuses(results) == {"save_reload": "passed", "generate": "failed"}


def test_a_merge_that_drops_the_adapter_fails_merge():
    results = statuses(check_method(MergeDropsAdapter, SMALL_LORA, checks=["merge", "merge_reload"]))
    assert results == {"merge": "failed", "merge_reload": "passed"}


def test_expected_trainable_hook_is_compared():
    assert statuses(check_method(CountedLora, SMALL_LORA, checks=["trainable_parameters"])) == {
        "trainable_parameters": "passed"
    }
    [result] = check_method(MiscountedLora, SMALL_LORA, checks=["trainable_parameters"])
    assert result.status == "failed" and "expected_trainable()" in result.detail


def test_skip_and_xfail_in_the_plain_api():
    results = check_method(
        GenerateIgnoresAdapter,
        SMALL_LORA,
        checks=["generate", "merge", "peft_adapter"],
        skip={"merge": "not today"},
        xfail={"generate": "known bug", "peft_adapter": "stale entry"},
    )
    assert statuses(results) == {"generate": "xfailed", "merge": "skipped", "peft_adapter": "failed"}
    assert results[1].detail == "not today" and all(r.ok for r in results[:2]) and not results[2].ok
    assert "expected to fail (stale entry) but passed" in results[2].detail


def test_a_method_that_cannot_merge_is_skipped_with_the_reason():
    from tunesmith import Method

    class NoMerge(Lora):
        name = "no-merge"
        merge = Method.merge  # the base class default: "cannot be merged"

    results = check_method(NoMerge, SMALL_LORA, checks=["merge", "merge_reload"])
    assert statuses(results) == {"merge": "skipped", "merge_reload": "skipped"}
    assert "cannot be merged" in results[0].detail


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown check"):
        check_method(Lora, SMALL_LORA, skip={"merg": "typo"})


def test_every_check_is_a_test_method():
    assert [n for n in dir(MethodConformance) if n.startswith("test_")] == sorted(f"test_{c}" for c in CHECKS)
