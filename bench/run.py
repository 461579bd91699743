"""tunesmith's benchmark suite: one table of ratios against baselines measured in the same rounds.

    .venv/bin/python bench/run.py [PART ...] [--quick]     PART: cli train data eval packing streaming
    make bench                                             the whole suite; BENCH_QUICK=1 for a short one

Each part measures paired, interleaved rounds and reports medians with the min–max over rounds (see
``paired.py``). The table goes to stdout and, with every figure behind it, to
``bench/results/latest.json`` (a part run alone replaces only its own entry there). Ratios, not seconds,
are the targets: they mean the same on any machine. docs/performance.md records the latest figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: part name -> module in bench/ (a module that is missing is skipped with a note).
PARTS = {
    "cli": "cli_startup",
    "train": "training",
    "data": "data_prep",
    "eval": "eval_share",
    "packing": "packing",
    "streaming": "streaming",
}
RESULTS = HERE / "results" / "latest.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"{', '.join(PARTS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller sizes (BENCH_QUICK=1)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the figures ({RESULTS})")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parts = args.parts or list(PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)} (choose from {', '.join(PARTS)})")

    results = _read(args.json)
    results["machine"] = _machine()
    started = time.monotonic()
    for part in parts:
        try:
            module = importlib.import_module(PARTS[part])
        except ModuleNotFoundError as exc:
            print(f"[{part}] skipped: {exc}")
            continue
        print(f"\n[{part}]", flush=True)
        t0 = time.monotonic()
        figures = module.run(quick)
        figures["seconds"] = round(time.monotonic() - t0, 1)
        figures["quick"] = quick
        results.setdefault("parts", {})[part] = figures
    results["seconds"] = round(time.monotonic() - started, 1)

    table = summary(results.get("parts", {}), parts)
    results["table"] = [{"measure": m, **r, "target": t} for m, r, t in table]
    print()
    print_table(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json} ({results['seconds']} s)")


def summary(figures: dict[str, Any], parts: list[str]) -> list[tuple[str, dict[str, float], str]]:
    """The rows of every part that ran: each part module says which of its figures are ratios."""
    table = []
    for part in parts:
        if part not in figures:
            continue
        module = importlib.import_module(PARTS[part])
        rows = getattr(module, "rows", ADAPTERS.get(part))
        if rows is not None:
            table.extend(rows(figures[part]))
    return table


def _packing_rows(figures: dict[str, Any]) -> list[tuple[str, dict[str, float], str]]:
    """Real tokens/s of each packed layout over plain unpacked batches, per length mix."""
    return [
        (f"packing: {mix}, {layout} / unpacked", f["vs_unpacked"], "(info)")
        for mix, m in figures.get("mixes", {}).items()
        for layout, f in m.get("layouts", {}).items()
        if layout != "unpacked" and "vs_unpacked" in f
    ]


def print_table(table: list[tuple[str, dict[str, float], str]]) -> None:
    width = max((len(m) for m, _, _ in table), default=10)
    print(f"{'measure':<{width}}  {'median':>8}  {'min–max':>15}  target")
    for measure, r, target in table:
        span = f"{r['min']:.3g}–{r['max']:.3g}"
        print(f"{measure:<{width}}  {r['median']:>8.3g}  {span:>15}  {target}")


def _streaming_rows(figures: dict[str, Any]) -> list[tuple[str, dict[str, float], str]]:
    """Peak memory above the baseline when the data grows 10×: streamed against prepared in memory."""
    out = []
    for mode in ("stream", "prepared"):
        v = figures.get(f"{mode}_peak_growth")
        if v is not None:
            target = "~1 (flat)" if mode == "stream" else "(info)"
            out.append(
                (f"streaming: peak RSS growth, data ×10, {mode}", {"median": v, "min": v, "max": v}, target)
            )
    return out


ADAPTERS = {"packing": _packing_rows, "streaming": _streaming_rows}


def _machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


if __name__ == "__main__":
    main()
