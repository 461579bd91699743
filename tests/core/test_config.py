"""Run config validation: strict keys, did-you-mean, overrides with type coercion, method defaults."""

from __future__ import annotations

import pytest

from tunesmith.config import apply_overrides, load_config, resolve
from tunesmith.errors import TunesmithError
from tunesmith.plugins import Plugins


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def base(**extra):
    data = {"data": {"train": {"name": "jsonl", "path": "train.jsonl"}}}
    data.update(extra)
    return data


def errors_of(data, plugins) -> str:
    with pytest.raises(TunesmithError) as err:
        resolve(data, plugins)
    return str(err.value)


def test_minimal_config_gets_defaults(plugins):
    resolved = resolve(base(), plugins)
    assert resolved.method.name == "lora" and resolved.objective.name == "sft"
    assert [e.name for e in resolved.evaluators] == [
        "exact-match",
        "perplexity",
    ]  # built-in defaults, by plugin name
    assert resolved.training.learning_rate == pytest.approx(2e-4)  # LoRA's default


def test_full_finetuning_gets_a_smaller_learning_rate(plugins):
    resolved = resolve(base(method={"name": "full"}), plugins)
    assert 1e-5 <= resolved.training.learning_rate <= 5e-5


def test_misspelled_key_gets_did_you_mean(plugins):
    text = errors_of(base(training={"learning_rte": 1e-4}), plugins)
    assert "training.learning_rte" in text and "did you mean 'learning_rate'" in text


def test_section_key_at_top_level_points_to_its_section(plugins):
    assert "did you mean 'training.learning_rate'" in errors_of(base(learning_rate=1e-4), plugins)


def test_component_options_are_validated_with_did_you_mean(plugins):
    text = errors_of(base(method={"name": "lora", "dropuot": 0.1}), plugins)
    assert "method.dropuot" in text and "did you mean 'dropout'" in text


def test_unknown_component_lists_what_is_available(plugins):
    text = errors_of(base(method={"name": "lorra"}), plugins)
    assert "unknown method 'lorra'" in text and "did you mean 'lora'" in text and "full" in text


def test_all_errors_are_reported_at_once(plugins):
    text = errors_of(base(training={"epochs": "many", "batch_size": 2.5}, model={"dtype": "fp8"}), plugins)
    assert "training.epochs" in text and "training.batch_size" in text and "model.dtype" in text


def test_missing_train_split_is_an_error(plugins):
    assert "data.train: required" in errors_of({}, plugins)


def test_component_by_name_string(plugins):
    assert resolve(base(method="full"), plugins).method.name == "full"


def test_overrides_coerce_types(plugins):
    data = apply_overrides(
        base(method="lora"),
        [
            "training.learning_rate=1e-4",
            "training.epochs=2",
            "method.r=8",
            "data.packing=false",
            "evaluation.splits=[test, validation]",
        ],
    )
    resolved = resolve(data, plugins)
    assert resolved.training.learning_rate == pytest.approx(1e-4)
    assert resolved.method.config.r == 8 and resolved.config.data.packing is False
    assert resolved.config.evaluation.splits == ["test", "validation"]


def test_override_without_equals_is_an_error():
    with pytest.raises(TunesmithError, match="key=value"):
        apply_overrides({}, ["training.epochs"])


def test_far_out_of_range_learning_rate_warns(plugins):
    resolved = resolve(base(method="full", training={"learning_rate": 1e-2}), plugins)
    assert any("learning_rate" in w and "full" in w for w in resolved.warnings)
    assert not resolve(base(), plugins).warnings


def test_yaml_file_and_resolved_dict_round_trip(tmp_path, plugins):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  train: {name: jsonl, path: t.jsonl}\nmethod: {name: lora, r: 4}\n")
    resolved = load_config(path, ["training.seed=7"], plugins)
    again = resolve(resolved.to_dict(), plugins)
    assert again.to_dict() == resolved.to_dict()
    assert again.method.config.r == 4 and again.config.training.seed == 7


def test_invalid_yaml_is_a_user_error(tmp_path, plugins):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(TunesmithError, match="invalid YAML"):
        load_config(path, [], plugins)


def test_objective_options_needing_the_registry_are_checked_at_config_time(plugins):
    data = base(
        formatter="prompt", objective={"name": "grpo", "rewards": [{"name": "format", "patern": "x"}]}
    )
    text = errors_of(data, plugins)
    assert "objective.rewards[0].patern: unknown option (did you mean 'pattern'?)" in text


def test_names_accepted_without_importing_transformers_are_names_transformers_knows():
    """config validates these without transformers' lists: each must really be in them."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from tunesmith.config import COMMON_OPTIMIZERS, COMMON_SCHEDULERS

    assert COMMON_SCHEDULERS <= {s.value for s in SchedulerType}
    assert COMMON_OPTIMIZERS <= {o.value for o in OptimizerNames}
