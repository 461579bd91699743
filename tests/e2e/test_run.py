"""End to end through the CLI on a tiny random model: the run directory, reload, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow


def cli(*args: str):
    from tunesmith.cli import cli as group
    from tunesmith.plugins import Plugins

    return CliRunner().invoke(group, list(args), obj=Plugins(), catch_exceptions=False)


def test_run_writes_a_complete_run_directory_that_stock_peft_loads(run_config):
    config = run_config()
    result = cli("run", str(config))
    assert result.exit_code == 0, result.output
    run_dir = config.parent / "runs" / "t"
    for name in (
        "config.yaml",
        "manifest.json",
        "metrics.json",
        "train_log.jsonl",
        "report.md",
        "loss.png",
        "final/adapter_config.json",
        "final/adapter_model.safetensors",
        "final/tokenizer.json",
    ):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    assert list((run_dir / "tensorboard").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["base"]["test"]) == set(metrics["tuned"]["test"]) >= {"exact-match/exact_match"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["data"]) == {"train", "test"} and manifest["packages"]["torch"]
    assert "| test | exact-match/exact_match |" in (run_dir / "report.md").read_text()

    # The adapter is a stock PEFT artifact: same logits as the in-run evaluation's model.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(json.loads((run_dir / "manifest.json").read_text())["model"])
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    model = PeftModel.from_pretrained(base, run_dir / "final").eval()
    ids = tokenizer("<s><|user|>\nabc<|end|><|assistant|>\n", add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        tuned = model(**ids).logits
        with model.disable_adapter():
            plain = model(**ids).logits
    assert not torch.allclose(tuned, plain)  # training changed something

    # `tunesmith eval` re-scores the finished run with the same numbers.
    result = cli("eval", str(run_dir))
    assert result.exit_code == 0, result.output
    rerun = json.loads(next((run_dir / "evals").iterdir()).read_text())
    assert rerun["tuned"]["test"] == pytest.approx(metrics["tuned"]["test"], rel=1e-4)


def test_existing_run_directory_is_refused_without_overwrite(run_config):
    config = run_config(training__max_steps=2, evaluation={"compare_base": False})
    assert cli("run", str(config)).exit_code == 0
    result = cli("run", str(config))
    assert result.exit_code == 2 and "already exists" in result.output
    assert cli("run", str(config), "--overwrite").exit_code == 0


def test_resume_continues_from_the_last_checkpoint_and_refuses_changed_inputs(run_config):
    config = run_config(evaluation={"compare_base": False})
    run_dir = config.parent / "runs" / "t"
    # Simulate a crash after the first checkpoint: stop at step 3, mark the run as failed.
    assert cli("run", str(config), "--set", "training.max_steps=3").exit_code == 0
    state = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**state, "status": "failed"}))
    result = cli("run", "--resume", str(run_dir), "--set", "training.max_steps=6")
    assert result.exit_code == 2 and "max_steps" in result.output  # config differs from the stored one

    # Put the stored config back to max_steps=6 as if the run had been started that way, then resume.
    import yaml

    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    stored["training"]["max_steps"] = 6
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    result = cli("run", "--resume", str(run_dir))
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert max(entry["step"] for entry in log) == 6
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"

    # Changed data is refused, with the difference named.
    (run_dir / "run.json").write_text(json.dumps({"status": "failed"}))
    train = Path(stored["data"]["train"]["path"])
    extra = {"instruction": "Upper-case the word.", "input": "zzz", "output": "ZZZ"}  # a new example
    train.write_text(train.read_text() + json.dumps(extra) + "\n")
    result = cli("run", "--resume", str(run_dir))
    assert result.exit_code == 2 and "data split 'train' changed" in result.output


def test_a_failing_observer_hook_is_recorded_in_the_run(run_config):
    """A tracker plugin whose on_log raises does not stop the run, and the run says so: run.json,
    metrics.json and the report list it."""
    import types

    from tunesmith import hookimpl
    from tunesmith.cli import cli as group
    from tunesmith.plugins import Plugins, PluginSource, entry_point_sources

    def on_log(run_dir, step, logs):
        raise ConnectionError("tracker down")

    tracker = types.ModuleType("tracker")
    tracker.on_log = hookimpl(on_log)
    plugins = Plugins(
        [*entry_point_sources(), PluginSource("tracker", "acme-tracker", "1.0", "tracker", lambda: tracker)]
    )
    config = run_config()
    result = CliRunner().invoke(group, ["run", str(config)], obj=plugins, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = config.parent / "runs" / "t"
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "complete" and "tracker down" in status["plugin_errors"][0]
    assert "tracker down" in json.loads((run_dir / "metrics.json").read_text())["plugin_errors"][0]
    assert "Plugin hooks that failed" in (run_dir / "report.md").read_text()
    assert "tracker down" in result.output
