"""Data preparation: ``tunesmith data check`` on N alpaca examples, first run against a second identical
run (prepared data cached under ``TUNESMITH_CACHE``), with each process's wall time and peak RSS.

The data is generated (varied instructions and answers of a few dozen tokens, the built-in ``tiny``
tokenizer, packing on) into a temporary folder; ``TUNESMITH_CACHE`` points to a temporary folder too, so
the first run always starts cold. Each figure is one process from start to exit, through the public
path a user takes, measured with ``wait4`` (its own peak RSS, nothing else's). Every such process first
imports torch, transformers and datasets, whatever the size: a process that only imports them is timed
beside each pair, and the speed-up of the preparation itself (each time less that floor) is given too.

    .venv/bin/python bench/run.py data [--quick]
    DATA_BENCH_SIZES=1000,10000,100000,1000000 .venv/bin/python bench/run.py data   (1M: many minutes)
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from paired import child_usage, spread

ROOT = Path(__file__).resolve().parents[1]
TUNESMITH = str(Path(sys.executable).parent / "tunesmith")
#: What every ``data check`` imports before it reads a record (the tokenizer's libraries, the engine).
FLOOR = [sys.executable, "-c", "import torch, transformers, datasets, tunesmith.prepare, tunesmith.cli"]
WORDS = "the a of to and in is it for on with as at by from date month year day rewrite answer".split()


def write_data(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
            record = {"instruction": f"Rewrite item {i}.", "input": words, "output": words.upper()}
            out.write(json.dumps(record) + "\n")


def write_config(folder: Path, data: Path) -> Path:
    config = folder / "config.yaml"
    config.write_text(
        "name: data-bench\n"
        f"output_dir: {folder}/runs/{{name}}\n"
        "model: {path: tiny}\n"
        f"data: {{train: {{name: jsonl, path: {data}}}, max_length: 256, packing: true}}\n"
        "formatter: {name: alpaca}\n",
        encoding="utf-8",
    )
    return config


def sizes(quick: bool) -> list[int]:
    chosen = os.environ.get("DATA_BENCH_SIZES")
    if chosen:
        return [int(n) for n in chosen.split(",")]
    return [1_000, 10_000] if quick else [1_000, 10_000, 100_000]


def run(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes(quick):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            data = folder / "train.jsonl"
            write_data(data, n)
            config = write_config(folder, data)
            repeats = 1 if n >= 100_000 or quick else 2
            first, second, floor = [], [], []
            for r in range(repeats):  # each repeat: a cold cache, then the same command again
                env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
                env["TUNESMITH_CACHE"] = str(folder / f"cache-{r}")
                command = [TUNESMITH, "data", "check", str(config), "--json"]
                for series in (first, second):
                    done = child_usage(command, env=env, cwd=str(ROOT), timeout=3600)
                    if done["returncode"] != 0:
                        raise RuntimeError(f"data check failed on {n} examples: {done['stderr'][-3000:]}")
                    series.append(done)
                floor.append(child_usage(FLOOR, env=env, cwd=str(ROOT)))
            speedups = [a["wall"] / b["wall"] for a, b in zip(first, second, strict=True)]
            beyond = [  # the preparation itself: each process less the imports every data check pays
                (a["wall"] - f["wall"]) / max(b["wall"] - f["wall"], 0.01)
                for a, b, f in zip(first, second, floor, strict=True)
            ]
            results[str(n)] = {
                "repeats": repeats,
                "first_seconds": spread([d["wall"] for d in first], 2),
                "cached_seconds": spread([d["wall"] for d in second], 2),
                "cached_speedup": spread(speedups, 2),
                "import_floor_seconds": spread([d["wall"] for d in floor], 2),
                "cached_speedup_beyond_imports": spread(beyond, 2),
                "first_peak_rss_mib": max(d["peak_rss_mib"] for d in first),
                "cached_peak_rss_mib": max(d["peak_rss_mib"] for d in second),
                "first_cpu_seconds": spread([d["cpu"] for d in first], 2),
            }
            r = results[str(n)]
            print(
                f"  {n:>9,} examples: first {r['first_seconds']['median']} s ({r['first_peak_rss_mib']} MiB), "
                f"cached {r['cached_seconds']['median']} s ({r['cached_peak_rss_mib']} MiB), "
                f"imports alone {r['import_floor_seconds']['median']} s"
            )
    return {"sizes": results}


def rows(result: dict[str, Any]) -> list[tuple[str, dict[str, float], str]]:
    out = []
    for n, r in result["sizes"].items():
        out.append((f"data: {int(n):,} examples, first / cached data check", r["cached_speedup"], "(info)"))
        out.append(
            (f"data: {int(n):,} examples, first / cached, beyond imports", r["cached_speedup_beyond_imports"],
             ">= 10")
        )  # fmt: skip
        rss = r["first_peak_rss_mib"] / 1024
        out.append(
            (f"data: {int(n):,} examples, first run peak RSS (GiB)", {"median": rss, "min": rss, "max": rss},
             "<= 2 (1M)")
        )  # fmt: skip
    return out
