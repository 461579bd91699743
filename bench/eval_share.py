"""Evaluation against training on the demo (``examples/dates/demo.yaml``): the phases' own times, read
from the run's ``metrics.json`` (``train.wall_seconds``, ``evaluation.base_seconds`` and
``tuned_seconds``). Training time includes the validation passes the run makes while training (ten by
default, ``training.eval_steps``); their own time, from the training log, is reported beside it.

The demo runs twice through ``tunesmith run`` with a temporary ``TUNESMITH_CACHE``: first cold (the base
model is evaluated), then again unchanged (its base-model scores may be reused). Training is shortened
to ``EVAL_BENCH_STEPS`` optimizer steps (default 60; 20 with ``--quick``; ``0`` = the demo's full
length, ~1,500 steps, many minutes on 2 cores). Evaluation does not depend on the number of steps, so
the share at the demo's full length is also given, projected from the measured seconds per step
(training less its validation passes, whose number does not depend on the length).

    .venv/bin/python bench/run.py eval [--quick]
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from paired import child_usage

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "dates" / "demo.yaml"
TUNESMITH = str(Path(sys.executable).parent / "tunesmith")


def run(quick: bool) -> dict[str, Any]:
    import yaml

    steps = int(os.environ.get("EVAL_BENCH_STEPS", "20" if quick else "60"))
    demo = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    results: dict[str, Any] = {"steps": steps or "demo"}
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
        env["TUNESMITH_CACHE"] = str(Path(tmp) / "cache")
        command = [TUNESMITH, "run", str(DEMO), "--overwrite", f"--set=output_dir={tmp}/runs/{{name}}"]
        if steps:
            command.append(f"--set=training.max_steps={steps}")
        for name in ("first", "again"):
            done = child_usage(command, env=env, cwd=str(ROOT), timeout=3600)
            if done["returncode"] not in (0, 3):  # 3: complete, a gate failed
                raise RuntimeError(f"the demo failed: {done['stdout'][-2000:]}{done['stderr'][-2000:]}")
            run_dir = Path(tmp) / "runs" / demo["name"]
            metrics = json.loads((run_dir / "metrics.json").read_text())
            train = metrics["train"]["wall_seconds"]
            log = [
                json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line
            ]
            validation = round(sum(entry.get("eval_runtime", 0.0) for entry in log), 2)
            evaluation = metrics.get("evaluation", {})
            base, tuned = evaluation.get("base_seconds", 0.0), evaluation.get("tuned_seconds", 0.0)
            rows = metrics["train"]["rows"]
            demo_steps = demo["training"]["epochs"] * math.ceil(rows / demo["training"]["batch_size"])
            ran = steps or demo_steps
            # the validation passes are a fixed number (a fraction of the steps): they do not scale
            projected = (train - validation) / ran * demo_steps + validation
            results[name] = {
                "process_seconds": round(done["wall"], 1),
                "train_seconds": train,
                "validation_seconds_within_training": validation,
                "base_eval_seconds": base,
                "tuned_eval_seconds": tuned,
                "base_cache": evaluation.get("base_cache"),
                "eval_over_train": round((base + tuned) / train, 3),
                "demo_steps": demo_steps,
                "projected_demo_train_seconds": round(projected, 1),
                "eval_over_train_projected_to_demo": round((base + tuned) / projected, 3),
            }
            print(
                f"  {name}: train {train:.1f} s ({ran} steps; validation passes {validation:.1f} s of it), "
                f"evaluation base {base:.1f} s + tuned {tuned:.1f} s"
            )
    return results


def rows(result: dict[str, Any]) -> list[tuple[str, dict[str, float], str]]:
    out = []
    for name, label in (("first", "first run"), ("again", "second run")):
        r = result[name]
        for key, what, target in (
            ("eval_over_train", f"{result['steps']} steps", "(info)"),
            ("eval_over_train_projected_to_demo", f"projected to {r['demo_steps']} steps", "<= 0.15"),
        ):
            v = r[key]
            out.append((f"eval: demo {label}, evaluation / training ({what})", {"median": v, "min": v, "max": v},
                        target))  # fmt: skip
    return out
