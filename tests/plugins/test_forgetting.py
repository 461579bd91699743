"""The forgetting evaluator: canary perplexity base vs tuned, the gate, once per run, the canary file,
the shipped canary set (reproducible, held out, fits the tiny model), the conformance kit, and (slow) a
hard full fine-tune failing the gate where a light LoRA run passes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tunesmith import EvalContext, TunesmithError
from tunesmith.config import build_component
from tunesmith.plugins import Plugins
from tunesmith.testing import EvaluatorConformance
from tunesmith_plugins.evaluators.forgetting import SHIPPED_CANARY, Forgetting, judge, load_canary

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8")
    return path


class FakeContext(EvalContext):
    """A context whose model has a fixed perplexity on any text; counts the scoring calls."""

    def __init__(self, ppl: float, label: str, split: str = "validation", calls: list[int] | None = None):
        tokenizer = SimpleNamespace(bos_token="<s>")
        super().__init__(None, tokenizer, [], split=split, label=label, device="cpu", stop_token_ids=[0])
        self.ppl = ppl
        self.calls = calls if calls is not None else [0]

    def score(self, prompts: list[str], completions: list[str]) -> list[tuple[float, int]]:
        assert prompts == ["<s>"] * len(completions)  # each document scored whole, after the BOS
        self.calls[0] += 1
        return [(-math.log(self.ppl) * 10, 10) for _ in completions]


def forgetting(**options: Any) -> Forgetting:
    return build_component(Plugins(), "evaluator", {"name": "forgetting", **options})


def passes(evaluator: Forgetting, base: float | None, tuned: float) -> tuple[dict[str, float], list[dict]]:
    if base is not None:
        evaluator.evaluate(FakeContext(base, "base"))
    ctx = FakeContext(tuned, "tuned")
    return dict(evaluator.evaluate(ctx)), ctx.gates


# ------------------------------------------------------------------------------ the gate


def test_a_small_increase_passes_the_gate():
    metrics, gates = passes(forgetting(), 4.0, 4.4)
    assert metrics == pytest.approx({"perplexity": 4.4, "relative_change": 0.1})
    assert gates == [
        {
            "name": "forgetting",
            "passed": True,
            "detail": "canary perplexity 4 → 4.4 (+10%; within the allowed +15%)",
            "fail_run": False,
        }
    ]


def test_a_large_increase_warns_or_fails_the_run():
    _, gates = passes(forgetting(), 4.0, 5.0)
    assert [(g["passed"], g["fail_run"]) for g in gates] == [(False, False)]
    assert gates[0]["detail"] == "canary perplexity 4 → 5 (+25%; above the allowed +15%)"
    _, gates = passes(forgetting(action="fail", threshold=0.3), 4.0, 5.0)
    assert [(g["passed"], g["fail_run"]) for g in gates] == [(True, True)]
    _, gates = passes(forgetting(action="fail", threshold=0.2), 4.0, 5.0)
    assert [(g["passed"], g["fail_run"]) for g in gates] == [(False, True)]


def test_judge_reads_well_at_the_edges():
    assert judge(3.0, 3.45, 0.15) == (True, "canary perplexity 3 → 3.45 (+15%; within the allowed +15%)")
    assert judge(3.414, 3.0, 0.0)[0] is True  # better than the base always passes
    assert judge(3.414, 4852.0, 0.15) == (
        False,
        "canary perplexity 3.414 → 4852 (×1421; above the allowed +15%)",
    )
    assert judge(3.0, math.nan, 0.15)[0] is False  # a diverged model fails


def test_without_a_base_pass_there_is_no_change_and_no_gate():
    metrics, gates = passes(forgetting(), None, 9.0)
    assert metrics == pytest.approx({"perplexity": 9.0}) and gates == []


def test_the_canary_is_scored_once_per_model_not_once_per_split():
    evaluator, calls = forgetting(), [0]
    base_val = evaluator.evaluate(FakeContext(4.0, "base", "validation", calls))
    base_test = evaluator.evaluate(FakeContext(99.0, "base", "test", calls))  # not scored again
    assert calls == [1] and base_test == base_val == pytest.approx({"perplexity": 4.0})
    tuned_val_ctx = FakeContext(5.0, "tuned", "validation", calls)
    tuned_test_ctx = FakeContext(99.0, "tuned", "test", calls)
    tuned_val = evaluator.evaluate(tuned_val_ctx)
    tuned_test = evaluator.evaluate(tuned_test_ctx)
    assert calls == [2] and tuned_test == tuned_val == pytest.approx(
        {"perplexity": 5.0, "relative_change": 0.25}
    )
    assert len(tuned_val_ctx.gates) == 1 and tuned_test_ctx.gates == []  # one gate per run
    # A new pass (its first split again) measures afresh; a base value serves one tuned pass only.
    again = evaluator.evaluate(FakeContext(6.0, "tuned", "validation", calls))
    assert calls == [3] and again == pytest.approx({"perplexity": 6.0})


# ------------------------------------------------------------------------------ the canary file


def test_a_canary_file_is_read_and_limited(tmp_path):
    path = write(tmp_path / "c.jsonl", [{"text": "one"}, "", {"text": "two", "source": "x"}, {"text": "3"}])
    assert load_canary(path) == ["one", "two", "3"]
    assert forgetting(canary=str(path), max_documents=2).documents() == ["one", "two"]


def test_canary_file_problems_are_clear_user_errors(tmp_path):
    with pytest.raises(TunesmithError, match="canary file not found"):
        load_canary(tmp_path / "nope.jsonl")
    bad = write(
        tmp_path / "bad.jsonl", [{"text": "fine"}, {"content": "no text"}, "[1]", "{oops", {"text": " "}]
    )
    with pytest.raises(TunesmithError) as raised:
        load_canary(bad)
    assert raised.value.message == f"canary file {bad}: 4 bad line(s)"
    assert raised.value.details == [
        f"{bad}:2: 'text' must be a non-empty string, got None",
        f"{bad}:3: expected a JSON object, got an array",
        f"{bad}:4: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{bad}:5: 'text' must be a non-empty string, got ' '",
    ]
    with pytest.raises(TunesmithError, match="has no documents"):
        load_canary(write(tmp_path / "empty.jsonl", [""]))


def test_a_bad_canary_or_option_is_reported_with_the_config(tmp_path):
    path = write(tmp_path / "c.jsonl", [{"txt": "x"}])
    with pytest.raises(TunesmithError) as raised:
        forgetting(canary=str(path))
    assert raised.value.details == [
        f"evaluator.canary: canary file {path}: 1 bad line(s); {path}:1: 'text' must be a non-empty string, got None"
    ]
    with pytest.raises(TunesmithError) as raised:
        forgetting(canary=str(tmp_path / "missing.jsonl"), threshold=-0.1, action="stop", max_documents=0)
    details = "\n".join(raised.value.details)
    assert "evaluator.threshold: must be at least 0, got -0.1" in details
    assert "evaluator.action: expected one of 'warn', 'fail', got 'stop'" in details
    assert "evaluator.max_documents: must be at least 1, got 0" in details


def test_a_relative_canary_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "general.jsonl", [{"text": "here"}])
    monkeypatch.chdir(tmp_path)
    assert forgetting(canary="general.jsonl").documents() == ["here"]


# ------------------------------------------------------------------------------ the shipped canary set


def test_the_shipped_canary_set_is_reproducible_and_held_out():
    spec = importlib.util.spec_from_file_location("make_general", SHIPPED_CANARY.with_name("make_general.py"))
    assert spec is not None and spec.loader is not None
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    shipped = load_canary(SHIPPED_CANARY)
    assert shipped == make.canary_documents() and len(shipped) == 100 == len(set(shipped))
    assert not set(shipped) & make.pretraining_seen()  # no document the tiny model was trained on


def test_the_shipped_canary_set_fits_the_tiny_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith_plugins.models.tiny import shipped_model_dir

    path = shipped_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    evaluator = Forgetting()
    base = evaluator.evaluate(EvalContext(model, tokenizer, [], label="base"))
    ctx = EvalContext(model, tokenizer, [], label="tuned")
    tuned = evaluator.evaluate(ctx)
    # About exp(its final pre-training loss, 1.33): the set is text the model knows (a random model: ~260).
    assert 3.0 < base["perplexity"] < 4.0
    assert tuned == pytest.approx({"perplexity": base["perplexity"], "relative_change": 0.0}, abs=1e-6)
    assert [g["passed"] for g in ctx.gates] == [True]


# ------------------------------------------------------------------------------ the conformance kit


class TestForgettingConformance(EvaluatorConformance):
    evaluator = Forgetting
    options = {"max_documents": 20}
    needs_base_pass = True  # the tuned pass compares with the base pass's perplexity


# ------------------------------------------------------------------------------ end to end


def dates_config(tmp_path: Path, name: str, method: dict[str, Any], learning_rate: float, steps: int) -> Path:
    import yaml

    dates = ROOT / "examples" / "dates"
    config = {
        "name": name,
        "output_dir": str(tmp_path / "runs" / "{name}"),
        "model": {"path": "tiny"},
        "data": {
            "train": {"name": "jsonl", "path": str(dates / "train.jsonl")},
            "test": {"name": "jsonl", "path": str(dates / "test.jsonl")},
            "max_length": 256,
            "packing": True,
        },
        "formatter": {"name": "alpaca"},
        "method": method,
        "training": {
            "max_steps": steps,
            "learning_rate": learning_rate,
            "batch_size": 4,
            "logging_steps": 10,
            "save_steps": 1000,
        },
        "evaluators": [{"name": "forgetting", "action": "fail"}],
        "evaluation": {"splits": ["test"], "max_examples": 4},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "method", "learning_rate", "exit_code"),
    [
        ("hard-full", {"name": "full"}, 3e-3, 3),  # every weight, a high rate: the canary is forgotten
        ("light-lora", {"name": "lora", "r": 8, "alpha": 16}, 3e-4, 0),  # a low-rank update, a low rate
    ],
)
def test_a_hard_fine_tune_fails_the_gate_and_a_light_one_passes(
    tmp_path, name, method, learning_rate, exit_code
):
    from click.testing import CliRunner

    from tunesmith.cli import cli as group

    config = dates_config(tmp_path, name, method, learning_rate, steps=30)
    result = CliRunner().invoke(group, ["run", str(config)], obj=Plugins(), catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    metrics = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())
    change = metrics["tuned"]["test"]["forgetting/relative_change"]
    [gate] = metrics["gates"]
    assert gate["passed"] == (exit_code == 0) and gate["fail_run"], gate
    assert change > 1.0 if exit_code else change < 0.05, change  # far from the 0.15 threshold either way
