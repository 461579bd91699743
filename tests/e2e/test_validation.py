"""Validation while training: the validation loss is logged, early stopping ends a run whose validation
loss stops improving, the best checkpoint becomes the final model, and resume keeps the count."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def overfit_config(tmp_path: Path, tiny_model_dir: Path, **training) -> dict:
    """Full fine-tuning of a tiny random model on 8 examples: its validation loss falls, then rises."""
    from conftest import upper_task, write_jsonl

    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "train.jsonl", upper_task(8, seed=1))
    write_jsonl(tmp_path / "val.jsonl", upper_task(16, seed=3))
    options = dict(
        max_steps=80,
        batch_size=8,
        learning_rate=3e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        logging_steps=5,
        eval_steps=5,
        early_stopping_patience=2,
    )
    options.update(training)
    return {
        "name": "es",
        "output_dir": str(tmp_path / "runs" / "{name}"),
        "model": {"path": str(tiny_model_dir)},
        "data": {
            "train": {"name": "jsonl", "path": str(tmp_path / "train.jsonl")},
            "validation": {"name": "jsonl", "path": str(tmp_path / "val.jsonl")},
            "max_length": 128,
            "packing": False,
        },
        "method": {"name": "full"},
        "evaluators": [],
        "training": options,
    }


def eval_losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    return {e["step"]: e["eval_loss"] for e in map(json.loads, lines) if "eval_loss" in e}


def run(config: dict, plugins=None, **kwargs):
    from tunesmith.config import resolve
    from tunesmith.pipeline import run as run_pipeline
    from tunesmith.plugins import Plugins

    plugins = plugins or Plugins()
    return run_pipeline(resolve(config, plugins), plugins, **kwargs)


def test_early_stopping_ends_the_run_and_keeps_the_best_checkpoint(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    result = run(overfit_config(tmp_path, tiny_model_dir))
    losses = eval_losses(result.run_dir)
    best_step = min(losses, key=losses.get)
    last_step = max(losses)
    assert last_step < 80, losses  # stopped early
    assert last_step - best_step == 2 * 5, losses  # after two evaluations without improvement
    assert all(losses[s] > losses[best_step] for s in losses if s > best_step)
    final = load_file(result.run_dir / "final" / "model.safetensors")
    best = load_file(result.run_dir / "checkpoints" / f"checkpoint-{best_step}" / "model.safetensors")
    assert final.keys() == best.keys() and all((final[k] == best[k]).all() for k in final)
    report = (result.run_dir / "report.md").read_text()
    assert "validation loss" in report


def test_resume_keeps_the_early_stopping_count(tmp_path, tiny_model_dir):
    """Interrupted after an evaluation that did not improve, a resumed run stops where an uninterrupted
    one does: the patience already used travels in the checkpoint."""
    from tunesmith import hookimpl
    from tunesmith.plugins import Plugins, PluginSource, entry_point_sources

    uninterrupted = run(overfit_config(tmp_path / "a", tiny_model_dir))
    losses = eval_losses(uninterrupted.run_dir)
    best_step = min(losses, key=losses.get)
    stop_at = best_step + 5  # the first evaluation that did not improve

    def on_checkpoint(run_dir, checkpoint_dir, step):
        if step == stop_at:
            raise KeyboardInterrupt  # like Ctrl-C right after that checkpoint

    interrupter = types.ModuleType("interrupter")
    interrupter.on_checkpoint = hookimpl(on_checkpoint)
    source = PluginSource("interrupter", "test", "0", "interrupter", lambda: interrupter)
    config = overfit_config(tmp_path / "b", tiny_model_dir)
    with pytest.raises(KeyboardInterrupt):
        run(config, Plugins([*entry_point_sources(), source]))
    run_dir = tmp_path / "b" / "runs" / "es"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    resumed = run(config, resume=run_dir)
    assert max(eval_losses(resumed.run_dir)) == max(losses)
