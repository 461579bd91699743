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
    assert first["forward_calls"] < alone["forward_calls"] and second["forward_calls"] < alone["forward_calls"]
    assert first["forward_calls"] + second["forward_calls"] == alone["forward_calls"]
    # files only from the main process: the review sheet is the one a single process writes
    assert first["files"] == alone["files"] and any(f.endswith("review.csv") for f in alone["files"])
    sheet = "review/review.csv"
    assert (tmp_path / "two" / sheet).read_text() == (tmp_path / "one" / sheet).read_text()
