"""Sharded evaluation: wall time of an evaluation with 2 processes (torchrun, gloo) vs 1, same data.

Each round runs, in a rotated order, the same base + tuned evaluation (perplexity, exact-match, BLEU,
human-review on the tiny random model, ``tests/core/eval_shard_worker.py``) three ways:

- ``1x1``: one process, one thread;
- ``1x2``: one process, two threads (what one process gets from a 2-core machine);
- ``2x1``: two processes under ``torchrun``, one thread each: the evaluation is sharded.

Times are the evaluation's own (from the first ``generate``/``score`` call to the gathered metrics,
the slowest process for ``2x1``), not process start-up. Ratios are taken within a round (paired),
reported as the median (min–max) over rounds. The metrics of every run are checked equal.

    .venv/bin/python bench/eval_sharded.py [--rounds 5] [--examples 192] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "core" / "eval_shard_worker.py"
SETUPS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}


def once(setup: str, examples: int) -> tuple[float, dict]:
    processes, threads = SETUPS[setup]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        args = [str(WORKER), str(out), str(examples), str(threads)]
        if processes == 1:
            command = [sys.executable, *args]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += [f"--nproc_per_node={processes}", *args]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, env=env, check=True, capture_output=True)
        records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
    return max(r["seconds"] for r in records), records[0]["passes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=192)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {s: [] for s in SETUPS}
    reference = None
    order = list(SETUPS)
    for round_ in range(args.rounds):
        for setup in order[round_ % len(order) :] + order[: round_ % len(order)]:
            took, passes = once(setup, args.examples)
            metrics = {label: p["metrics"] for label, p in passes.items()}
            reference = reference or metrics
            assert metrics == reference, f"{setup}: metrics differ from the first run"
            seconds[setup].append(took)
    rows = {}
    for setup, base in (("2x1", "1x1"), ("2x1", "1x2")):
        ratios = [a / b for a, b in zip(seconds[setup], seconds[base], strict=True)]
        rows[f"{setup} / {base}"] = {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        }
    result = {
        "examples": args.examples,
        "rounds": args.rounds,
        "seconds_median": {s: statistics.median(v) for s, v in seconds.items()},
        "ratios": rows,
    }
    print(f"evaluation of {args.examples} examples, base + tuned, {args.rounds} paired rounds")
    for setup, values in seconds.items():
        print(f"  {setup}: {statistics.median(values):.2f} s (median)")
    for name, r in rows.items():
        print(f"  {name}: {r['median']:.2f}x  ({r['min']:.2f}-{r['max']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
