"""The model card (final/README.md), read back with huggingface_hub's own parser.

The fast tests write a card from a run directory's files; the slow ones check that a real run and
``tunesmith merge`` write it, with the numbers of metrics.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from tunesmith.config import load_config
from tunesmith.data_checks import describe
from tunesmith.model_card import write_model_card
from tunesmith.plugins import Plugins
from tunesmith.report import fmt

MANIFEST = {
    "packages": {"tunesmith": "0.1.0"},
    "data": {"train": "a" * 64, "test": "b" * 64},
    "tokenizer": "c" * 64,
}
METRICS = {
    "base": {"test": {"perplexity/perplexity": 18.80086858182643, "exact-match/exact_match": 0.0}},
    "tuned": {"test": {"perplexity/perplexity": 1.4407419930039096, "exact-match/exact_match": 0.875}},
    "train": {"train_loss": 0.5630388008753459},
    "parameters": {"trainable": 77824, "total": 898944},
    "data": {"train": {"count": 48}, "test": {"count": 8}},
    "gates": [
        {
            "evaluator": "forgetting",
            "split": "test",
            "name": "canary perplexity",
            "passed": True,
            "detail": "rose 3.1 % (limit 10 %)",
            "fail_run": True,
        }
    ],
}
CHECKS = {
    "seconds": 0.1,
    "examples": {"train": 48, "test": 8},
    "checks": [
        {
            "check": "duplicate",
            "against": "train",
            "method": "same text after NFKC, case-folding, whitespace",
            "policy": "drop",
            "found": 0,
            "template_3grams": 0,
        },
        {
            "check": "contamination",
            "against": "test",
            "method": "same text, a shared word 13-gram",
            "policy": "error",
            "found": 0,
            "template_3grams": 0,
        },
    ],
    "findings": [],
    "dropped": [],
}


def card_for(tmp_path: Path, config: Path, **model: str) -> ModelCard:
    """A run directory holding the files a run writes (no training), its card written and loaded back."""
    data = yaml.safe_load(config.read_text())
    data["model"].update(model)
    config.write_text(yaml.safe_dump(data))
    resolved = load_config(config, [], Plugins())
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(MANIFEST))
    (run / "data_checks.json").write_text(json.dumps(CHECKS))
    path = write_model_card(run / "final", run, resolved, METRICS)
    return ModelCard.load(path)


def test_card_metadata_and_metrics_read_back(tmp_path, run_config):
    card = card_for(tmp_path, run_config())
    data = card.data
    assert data.library_name == "peft"  # a LoRA adapter
    assert data.pipeline_tag == "text-generation"
    assert {"tunesmith", "lora", "sft"} <= set(data.tags)
    assert data.base_model is None  # a local directory is not a hub id
    facts = data.tunesmith
    assert {s: d["sha256"] for s, d in facts["data"].items()} == MANIFEST["data"]
    assert facts["metrics"] == {"base": METRICS["base"], "tuned": METRICS["tuned"]}
    assert facts["gates"] == METRICS["gates"]
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {("test", name): value for name, value in METRICS["tuned"]["test"].items()}
    body = card.text
    for name, value in METRICS["tuned"]["test"].items():
        row = f"| test | {name} | {fmt(METRICS['base']['test'][name])} | {fmt(value)} |"
        assert row in body
    for line, _ in describe(CHECKS):
        assert line in body
    assert "Gate forgetting: canary perplexity (test): passed" in body
    assert "PeftModel.from_pretrained" in body


def test_a_hub_base_model_is_named_and_its_cached_license_is_not_guessed(tmp_path, run_config):
    card = card_for(tmp_path, run_config(), path="acme/base-7b")
    assert card.data.base_model == "acme/base-7b"
    assert card.data.license is None  # not in the local hub cache: unknown, so left out


def test_the_license_comes_from_a_local_base_models_card(tmp_path, run_config, tiny_model_dir):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    card = card_for(tmp_path, run_config(), path=str(base))
    assert card.data.license == "mit"


# ----------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_run_and_merge_write_cards_with_the_runs_numbers(tmp_path, run_config):
    from click.testing import CliRunner

    from tunesmith.cli import cli

    config = run_config()
    result = CliRunner().invoke(cli, ["run", str(config)], obj=Plugins())
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "t"
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    card = ModelCard.load(run / "final" / "README.md")
    assert card.data.library_name == "peft"
    assert card.data.tunesmith["metrics"]["tuned"] == metrics["tuned"]
    assert card.data.tunesmith["metrics"]["base"] == metrics["base"]
    assert {s: d["sha256"] for s, d in card.data.tunesmith["data"].items()} == manifest["data"]
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {(s, n): v for s, scores in metrics["tuned"].items() for n, v in scores.items()}
    assert "exact duplicates in train" in card.text  # the data checks that ran

    result = CliRunner().invoke(cli, ["merge", str(run), "-o", str(tmp_path / "merged")], obj=Plugins())
    assert result.exit_code == 0, result.output
    merged = ModelCard.load(tmp_path / "merged" / "README.md")
    assert merged.data.library_name == "transformers"
    assert "merged" in merged.data.tags and merged.data.tunesmith["merged"] is True
    assert merged.data.tunesmith["metrics"]["tuned"] == metrics["tuned"]


def test_a_reward_model_is_a_text_classifier(tmp_path, run_config):
    config = run_config(objective={"name": "reward"}, formatter={"name": "preference"})
    card = card_for(tmp_path, config)
    assert card.data.pipeline_tag == "text-classification"
    assert "AutoModelForSequenceClassification" in card.text
