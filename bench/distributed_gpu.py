"""Check DDP, FSDP and DeepSpeed on a machine with at least 2 GPUs, each against a 1-process run.

    .venv/bin/python bench/distributed_gpu.py [--keep DIR]

For each strategy, a tiny random Llama trains for 6 steps with one process (batch 4) and with two
(batch 2 each): the same global batch, fp32, SGD and no dropout, so that the runs differ only by
reduction order. Each row shows whether the 2-process run completed, the largest loss and final-weight
differences, whether ``final/`` reloads with stock transformers or PEFT, and the wall-time ratio. An
FSDP run is then resumed from its step-3 checkpoint and must end where the uninterrupted run ended.
DeepSpeed rows run only when deepspeed is installed. The exit status is 1 if any check failed.

The CPU tests (tests/e2e/test_distributed.py) cover DDP on gloo; accelerate shards only GPU models, so
FSDP and DeepSpeed are checked here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-5
EXACT = [
    "training.optimizer=sgd",
    "training.learning_rate=0.05",
    "training.precision=fp32",
    "training.logging_steps=1",
    "evaluators=[]",
    "evaluation.compare_base=false",
]


def write_inputs(root: Path) -> Path:
    """The tiny random model, 48 training records and a config; returns the config's path."""
    import yaml

    from tunesmith.testing.models import build_random_model, build_tokenizer

    model = root / "model"
    tokenizer = build_tokenizer()
    build_random_model(tokenizer, seed=0).save_pretrained(model)
    tokenizer.save_pretrained(model)
    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 5))) for _ in range(48)]
    records = [{"instruction": "Upper-case the word.", "input": w, "output": w.upper()} for w in words]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = root / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(root / "runs" / "{name}"),
                "model": {"path": str(model)},
                "data": {"train": {"name": "jsonl", "path": str(root / "train.jsonl")}, "max_length": 128},
                "training": {"max_steps": 6, "batch_size": 4, "save_steps": 3},
            }
        )
    )
    return config


def tunesmith(*args: str) -> tuple[int, float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tunesmith.cli", "run", *args], capture_output=True, text=True, env=env
    )
    return done.returncode, time.monotonic() - started, done.stdout[-3000:] + done.stderr[-3000:]


def losses(run: Path) -> dict[int, float]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return {e["step"]: e["loss"] for e in map(json.loads, lines) if "loss" in e}


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    final = run / "final"
    name = (
        "adapter_model.safetensors" if (final / "adapter_model.safetensors").exists() else "model.safetensors"
    )
    return load_file(final / name)


def reloads(run: Path, adapter: bool) -> bool:
    from transformers import AutoModelForCausalLM

    if adapter:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(run.parent.parent / "model")
        PeftModel.from_pretrained(base, run / "final")
    else:
        AutoModelForCausalLM.from_pretrained(run / "final")
    return True


def compare(one: Path, two: Path) -> tuple[float, float]:
    a, b = losses(one), losses(two)
    loss = max(abs(a[s] - b[s]) for s in a) if a.keys() == b.keys() else float("inf")
    wa, wb = weights(one), weights(two)
    if wa.keys() != wb.keys():
        return loss, float("inf")
    return loss, max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="Write the runs here and keep them")
    parser.add_argument("--cpu", action="store_true", help="Try the script itself on CPU: DDP rows only")
    args = parser.parse_args()
    if args.cpu:
        pass
    elif torch.cuda.device_count() < 2:
        print(f"needs at least 2 GPUs; this machine has {torch.cuda.device_count()}")
        return 2
    root = args.keep or Path(tempfile.mkdtemp(prefix="tunesmith-distributed-"))
    root.mkdir(parents=True, exist_ok=True)
    config = write_inputs(root)
    runs = root / "runs"
    methods = {"lora": ["method={name: lora, r: 4, alpha: 8, dropout: 0}"], "full": ["method={name: full}"]}
    cases = [
        ("ddp", "lora", []),
        ("ddp", "full", []),
        ("fsdp", "lora", []),
        ("fsdp", "full", []),
        ("fsdp", "lora", ["training.distributed.fsdp_sharded_checkpoints=true"]),
    ]
    if args.cpu:
        cases = [c for c in cases if c[0] == "ddp"]
    elif importlib.util.find_spec("deepspeed"):
        cases += [("deepspeed", "full", [f"training.distributed.deepspeed={z}"]) for z in ("zero2", "zero3")]
    else:
        print("deepspeed is not installed: DeepSpeed rows skipped (pip install deepspeed)")

    reference: dict[str, float] = {}
    for method, sets in methods.items():
        code, seconds, out = tunesmith(
            str(config), *(f"--set={s}" for s in [f"name=one-{method}", *sets, *EXACT])
        )
        if code != 0:
            print(f"1-process {method} run failed:\n{out}")
            return 1
        reference[method] = seconds

    failed = 0
    print(
        f"\n{'strategy':<10} {'method':<6} {'extra':<28} {'ok':<4} {'max |Δloss|':>12} {'max |Δw|':>10} "
        f"{'reloads':>8} {'time 2p/1p':>11}"
    )
    for i, (strategy, method, extra) in enumerate(cases):
        name = f"two-{strategy}-{method}-{i}"
        sets = [
            f"name={name}",
            *methods[method],
            *EXACT,
            "training.batch_size=2",
            f"training.distributed.strategy={strategy}",
            *extra,
        ]
        code, seconds, out = tunesmith(str(config), "--nproc", "2", *(f"--set={s}" for s in sets))
        row = f"{strategy:<10} {method:<6} {' '.join(e.split('.')[-1] for e in extra):<28}"
        if code != 0:
            failed += 1
            print(f"{row} FAIL (exit {code})\n{out}")
            continue
        loss, weight = compare(runs / f"one-{method}", runs / name)
        try:
            ok_reload = reloads(runs / name, adapter=method == "lora")
        except Exception as exc:  # noqa: BLE001 - reported, counted
            ok_reload = False
            print(f"  reload failed: {exc}")
        ok = loss <= LOSS_TOLERANCE and weight <= WEIGHT_TOLERANCE and ok_reload
        failed += not ok
        print(
            f"{row} {'ok' if ok else 'FAIL':<4} {loss:>12.2e} {weight:>10.2e} {str(ok_reload):>8} "
            f"{seconds / reference[method]:>11.2f}"
        )

    # Resume an FSDP run from its step-3 checkpoint: it must end where the uninterrupted run ended.
    whole = runs / ("two-ddp-lora-0" if args.cpu else "two-fsdp-lora-2")
    if (whole / "final").is_dir():
        copy = root / "resumed"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(whole, copy)
        for later in ("final", "checkpoints/checkpoint-6", "metrics.json", "report.md"):
            target = copy / later
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        state = json.loads((copy / "run.json").read_text())
        (copy / "run.json").write_text(json.dumps({**state, "status": "failed"}))
        code, _, out = tunesmith(f"--resume={copy}", "--nproc", "2")
        if code != 0:
            failed += 1
            print(f"resume FAIL (exit {code})\n{out}")
        else:
            wa, wb = weights(whole), weights(copy)
            diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
            ok = diff <= WEIGHT_TOLERANCE
            failed += not ok
            print(f"resume of {whole.name} from checkpoint-3: max |Δw| {diff:.2e} {'ok' if ok else 'FAIL'}")
    print(f"\n{failed} check(s) failed; runs in {root}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
