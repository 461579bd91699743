"""Evaluation under torch.distributed: 2 processes (torchrun, gloo, CPU) give exactly the 1-process
metrics, each process running about half of the forward passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("eval_shard_worker.py")


def evaluate(out: Path, processes: int, examples: int = 24) -> list[dict]:
    """Run the worker alone (1) or under torchrun; returns each process's record, by rank."""
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    if processes == 1:
        command = [sys.executable, str(WORKER), str(out), str(examples)]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(WORKER),
            str(out),
            str(examples),
        ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.mark.slow
def test_two_processes_evaluate_exactly_like_one(tmp_path):
    (alone,) = evaluate(tmp_path / "one", 1)
    first, second = evaluate(tmp_path / "two", 2)
    for label in ("base", "tuned"):
        metrics = alone["passes"][label]["metrics"]
        assert {"perplexity/perplexity", "exact-match/exact_match", "bleu/bleu"} <= set(metrics)
        assert first["passes"][label]["metrics"] == metrics  # exactly, not approximately
        assert second["passes"][label]["metrics"] == metrics
        assert first["passes"][label]["samples"] == alone["passes"][label]["samples"]
    # the work was shared, not repeated: together the processes ran the one process's forward passes
    assert (
        first["forward_calls"] < alone["forward_calls"] and second["forward_calls"] < alone["forward_calls"]
    )
    assert first["forward_calls"] + second["forward_calls"] == alone["forward_calls"]
    # files only from the main process: the review sheet is the one a single process writes
    assert first["files"] == alone["files"] and any(f.endswith("review.csv") for f in alone["files"])
    sheet = "review/review.csv"
    assert (tmp_path / "two" / sheet).read_text() == (tmp_path / "one" / sheet).read_text()


@pytest.mark.slow
def test_a_two_process_run_evaluates_like_one_and_reuses_the_base_scores(tmp_path, run_config):
    """`tunesmith run --nproc 2`: the base scores equal a 1-process run's exactly, human-review's sheet is
    written once, and a second run reuses the base scores in both processes (no process waits)."""
    import yaml
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins

    config = run_config(
        evaluators=[{"name": "perplexity"}, {"name": "exact-match"}, {"name": "human-review"}],
        training={"max_steps": 4, "batch_size": 2, "optimizer": "sgd", "learning_rate": 0.05},
        method={"name": "lora", "r": 4, "alpha": 8, "dropout": 0},
    )
    data = yaml.safe_load(config.read_text())
    runs = Path(data["output_dir"]).parent
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["TUNESMITH_CACHE"] = str(tmp_path / "cache")

    one = CliRunner().invoke(
        cli,
        [
            "run",
            str(config),
            "--set=name=one",
            "--set=evaluation.cache_base=false",
            "--set=training.batch_size=4",
        ],
        obj=Plugins(),
        catch_exceptions=False,
    )
    assert one.exit_code == 0, one.output
    metrics = {}
    for name in ("two", "again"):
        done = subprocess.run(
            [sys.executable, "-m", "tunesmith.cli", "run", str(config), f"--set=name={name}", "--nproc", "2"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        metrics[name] = json.loads((runs / name / "metrics.json").read_text())
    reference = json.loads((runs / "one" / "metrics.json").read_text())
    assert metrics["two"]["base"] == reference["base"]  # sharded, yet exactly one process's numbers
    assert metrics["two"]["evaluation"]["base_cache"]["reused"] == []
    assert {r["evaluator"] for r in metrics["again"]["evaluation"]["base_cache"]["reused"]} == {
        "perplexity",
        "exact-match",
    }  # human-review opts out: its base pass always runs
    assert metrics["again"]["base"] == reference["base"]
    tuned, ref = metrics["two"]["tuned"]["test"], reference["tuned"]["test"]
    assert tuned["perplexity/perplexity"] == pytest.approx(ref["perplexity/perplexity"], rel=1e-4)
    sheet = runs / "two" / "review" / "review.csv"
    assert sheet.read_text().count("\n") == (runs / "one" / "review" / "review.csv").read_text().count("\n")
