"""Streaming keeps memory flat: peak RSS of one pass over a training split 10× larger.

Each measurement runs in a fresh process that reads a JSONL split of N alpaca records the way a run
with ``data.streaming: true`` does (``tunesmith.streaming.training_stream``: read, format, tokenize, pack
a buffer at a time, as a ``datasets.IterableDataset``), collates the rows into batches as the trainer
would, and stops after one full pass (every sample seen once). It reports its peak RSS, and the peak
above what the process held before reading (libraries and tokenizer loaded). The same data prepared
in memory (``data.streaming: false``, ``prepare`` then the training rows, cache off) is the reference.

    .venv/bin/python bench/streaming.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

SIZES = (10_000, 100_000)
QUICK_SIZES = (2_000, 20_000)


def write_split(path: Path, n: int) -> Path:
    """``n`` distinct alpaca records, 20–300 characters of input each."""
    rng = random.Random(n)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))
            f.write(json.dumps({"instruction": f"Record {i}: reverse the words.", "input": text,
                                "output": " ".join(reversed(text.split()))}) + "\n")  # fmt: skip
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def child(mode: str, train: str, model_dir: str, n: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from tunesmith.config import resolve
    from tunesmith.data import Collator
    from tunesmith.plugins import Plugins
    from tunesmith.ui import Quiet

    plugins = Plugins()
    cfg = {
        "model": {"path": model_dir},
        "data": {
            "train": {"name": "jsonl", "path": train},
            "max_length": 1024,
            "streaming": mode == "stream",
            "cache": False,
            "dedup": "off",
            "near_dedup": "off",
            "num_proc": 1,
        },
        "training": {"max_steps": 1_000_000},
    }
    resolved = resolve(cfg, plugins)
    import datasets  # noqa: F401  # loaded before the baseline, as a run has it by then
    import torch  # noqa: F401
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    collate = Collator(tokenizer.pad_token_id, packed=True)
    baseline = _peak_mb()
    started = time.perf_counter()
    if mode == "stream":
        from tunesmith.prepare import prepare
        from tunesmith.streaming import training_stream

        prepare(resolved, Quiet(), plugins)  # what a run checks first: the head
        rows = iter(training_stream(resolved, tokenizer, print))
    else:
        from tunesmith.prepare import prepare, training_rows

        prepared, _ = prepare(resolved, Quiet(), plugins)
        rows = iter(training_rows(resolved, prepared.tokenized["train"]))
    samples = batches = 0
    while samples < n:  # one pass: every sample once (a pass ends with its last buffer)
        batch = [dict(row) for row in islice(rows, 8)]
        if not batch:
            break
        samples += sum(p == 0 for row in batch for p in row["position_ids"])
        collate(batch)
        batches += 1
    return {
        "mode": mode,
        "records": n,
        "batches": batches,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(_peak_mb()),
        "peak_above_baseline_mb": round(_peak_mb() - baseline),
    }


def measure(quick: bool) -> dict[str, Any]:
    from tokenizers import pre_tokenizers

    from tunesmith.testing.models import build_tokenizer

    sizes = QUICK_SIZES if quick else SIZES
    result: dict[str, Any] = {"sizes": list(sizes), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "tokenizer"
        tokenizer = build_tokenizer()
        # Split words before BPE, as real tokenizers do: the tiny tokenizer BPE-encodes a whole text as one
        # "word", so its word cache (10,000 entries) would hold whole examples and grow until it is full.
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.save_pretrained(model_dir)
        splits = {n: write_split(Path(tmp) / f"train-{n}.jsonl", n) for n in sizes}
        for mode in ("stream", "prepared"):
            for n in sizes:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, str(splits[n]), str(model_dir), str(n)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result["runs"].append(json.loads(out.stdout.strip().splitlines()[-1]))
    by = {(r["mode"], r["records"]): r for r in result["runs"]}
    small, large = sizes
    for mode in ("stream", "prepared"):  # peak RSS of the larger split over the smaller's, and the MB added
        big, little = by[(mode, large)]["peak_rss_mb"], by[(mode, small)]["peak_rss_mb"]
        result[f"{mode}_peak_growth"] = round(big / little, 2)
        result[f"{mode}_peak_added_mb"] = big - little
    return result


def run(quick: bool) -> dict[str, Any]:
    """The suite's entry point."""
    return measure(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZES} records instead of {SIZES}")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "TRAIN", "MODEL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, train, model_dir, n = args.child
        print(json.dumps(child(mode, train, model_dir, int(n))))
        return
    result = measure(args.quick)
    print("mode       records  batches  seconds  peak RSS MB  above baseline MB")
    for r in result["runs"]:
        print(f"{r['mode']:9} {r['records']:>8} {r['batches']:>8} {r['seconds']:>8} {r['peak_rss_mb']:>12} "
              f"{r['peak_above_baseline_mb']:>18}")  # fmt: skip
    print(f"peak RSS, {result['sizes'][1]:,} vs {result['sizes'][0]:,} records: stream "
          f"×{result['stream_peak_growth']} (+{result['stream_peak_added_mb']} MB), prepared "
          f"×{result['prepared_peak_growth']} (+{result['prepared_peak_added_mb']} MB)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
