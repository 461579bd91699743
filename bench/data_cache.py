"""Data preparation alone: ``prepare`` with an empty cache against the same call cached, tokenizing
processes, and peak memory at growing sizes.

``bench/data_prep.py`` (part ``data`` of ``bench/run.py``) times whole ``tunesmith data check``
processes, imports included. This measures the data preparation inside them: each measurement is a
fresh process that first imports what every run imports anyway (torch, transformers, datasets), then
times ``tunesmith.prepare.prepare`` (read, format, check, tokenize, pack, on Arrow). A round runs a
first preparation into an empty cache, then the same again (cached); ratios are taken within a round.
Splits are N distinct short alpaca records (the tiny model's byte-level tokenizer, about 100–300
tokens each); near-duplicate detection is off (MinHash costs about 1 KB per example: see docs/data.md);
everything else is the defaults.

    .venv/bin/python bench/data_cache.py [--sizes 1000,10000,100000] [--procs 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paired import child_usage, spread  # noqa: E402


def write_split(path: Path, n: int) -> Path:
    rng = random.Random(n)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 20)))
            record = {"instruction": f"Record {i}: reverse the words.", "input": text, "output": text[::-1]}
            f.write(json.dumps(record) + "\n")
    return path


def write_config(work: Path, model: Path, train: Path, **data: Any) -> Path:
    import yaml

    config = {
        "name": "bench",
        "output_dir": str(work / "runs" / "{name}"),
        "model": {"path": str(model)},
        "formatter": "alpaca",
        "data": {
            "train": {"name": "jsonl", "path": str(train)},
            "max_length": 1024,
            "near_dedup": "off",
            **data,
        },
    }
    path = work / f"config-{len(list(work.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def child(config: Path) -> None:
    """Prepare ``config``'s data; print the seconds ``prepare`` took, the cache state and the rows."""
    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from tunesmith.config import load_config
    from tunesmith.plugins import Plugins
    from tunesmith.prepare import prepare
    from tunesmith.ui import Quiet

    plugins = Plugins()
    resolved = load_config(config, [], plugins)
    started = time.perf_counter()
    prepared, _ = prepare(resolved, Quiet(), plugins)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {"seconds": seconds, "cache": prepared.cache, "rows": len(prepared.tokenized["train"].rows)}
        )
    )


def measure(config: Path, cache: Path) -> dict[str, Any]:
    env = {**os.environ, "TUNESMITH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = child_usage([sys.executable, __file__, "--child", str(config)], env=env, timeout=7200)
    if done["returncode"] != 0:
        raise RuntimeError(done["stderr"][-3000:])
    result = json.loads(done["stdout"].strip().splitlines()[-1])
    return {**result, "wall": round(done["wall"], 3), "peak_rss_mib": done["peak_rss_mib"]}


def tiny_model(work: Path) -> Path:
    from tunesmith.testing.models import build_random_model, build_tokenizer

    path = work / "tiny"
    tokenizer = build_tokenizer()
    build_random_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def cached(work: Path, model: Path, n: int) -> dict[str, Any]:
    config = write_config(work, model, write_split(work / f"train-{n}.jsonl", n))
    rounds = 1 if n >= 100_000 else 3
    cold, warm = [], []
    for r in range(rounds):
        cache = work / f"cache-{n}-{r}"
        first, second = measure(config, cache), measure(config, cache)
        assert (first["cache"], second["cache"]) == ("stored", "hit"), (first, second)
        cold.append(first)
        warm.append(second)
        print(f"  {n:>9,} examples, round {r + 1}/{rounds}: first {first['seconds']:.2f} s "
              f"({first['peak_rss_mib']:.0f} MiB peak), cached {second['seconds']:.3f} s "
              f"({second['peak_rss_mib']:.0f} MiB): {first['seconds'] / second['seconds']:.1f}×, "
              f"process wall {first['wall'] / second['wall']:.2f}×", flush=True)  # fmt: skip
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "first_seconds": spread([m["seconds"] for m in cold]),
        "cached_seconds": spread([m["seconds"] for m in warm]),
        "cached_speedup": spread([a["seconds"] / b["seconds"] for a, b in zip(cold, warm, strict=True)], 1),
        "cached_wall_speedup": spread([a["wall"] / b["wall"] for a, b in zip(cold, warm, strict=True)], 2),
        "first_peak_rss_mib": spread([m["peak_rss_mib"] for m in cold], 0),
        "cached_peak_rss_mib": spread([m["peak_rss_mib"] for m in warm], 0),
        "rows": cold[0]["rows"],
    }


def num_proc(work: Path, model: Path, n: int, rounds: int = 2) -> dict[str, Any]:
    """Preparation with the cache off, 2 tokenizing processes against 1, paired and interleaved."""
    train = write_split(work / f"procs-{n}.jsonl", n)
    configs = {p: write_config(work, model, train, cache=False, num_proc=p) for p in (1, 2)}
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for r in range(rounds):
        for p in (1, 2) if r % 2 == 0 else (2, 1):
            seconds[p].append(measure(configs[p], work / "unused")["seconds"])
        print(f"  num_proc at {n:,} examples, round {r + 1}/{rounds}: 1 process {seconds[1][-1]:.2f} s, "
              f"2 processes {seconds[2][-1]:.2f} s", flush=True)  # fmt: skip
    return {
        "examples": n,
        "one_seconds": spread(seconds[1]),
        "two_seconds": spread(seconds[2]),
        "two_over_one": spread([b / a for a, b in zip(seconds[1], seconds[2], strict=True)]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated example counts")
    parser.add_argument("--procs", default="", help="comma-separated sizes to compare num_proc 2 and 1 at")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="tunesmith-bench-cache-"))
    figures: dict[str, Any] = {"sizes": {}, "num_proc": {}}
    try:
        model = tiny_model(work)
        for n in (int(s) for s in args.sizes.split(",") if s):
            figures["sizes"][str(n)] = cached(work, model, n)
        for n in (int(s) for s in args.procs.split(",") if s):
            figures["num_proc"][str(n)] = num_proc(work, model, n)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
