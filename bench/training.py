"""Training throughput: tunesmith's sft as ``tunesmith run`` trains it, against the loops people write.

Every contender trains the same model (the built-in ``tiny``, with the demo's LoRA) on the same rows
(the demo's data as tunesmith prepares it: alpaca, packed to 256 tokens) for the same number of
optimizer steps with the same batch size and learning rate; each starts from a freshly loaded model and
is timed from its first line to its return, so building a Trainer, callbacks, logging and checkpoint
saves (one, half-way) are inside the time; validation during training is off (``training.eval_steps=0``:
it is evaluation, which the ``eval`` part measures). Real tokens are counted from the model's inputs (a forward
pre-hook on the input embeddings: input ids that are not padding), never estimated. Two rates per
run: the whole call (tokens / seconds), and from the forward of step 3 to the last one (construction
and the first steps left out; callbacks, logging and the checkpoint save between steps left in).

Contenders:

- ``hand loop``: AdamW and ``model(**batch)`` over tunesmith's own collated batches, nothing else;
- ``HF Trainer``: ``transformers.Trainer`` with its defaults (fp32 on CPU), the same batches;
- ``tunesmith``: the run's training phase (``tunesmith.pipeline.train``): the sft objective with the
  run's callbacks, training log, checkpoint saves and progress bar, as ``tunesmith run`` calls it;
- ``TRL defaults``: ``trl.SFTTrainer`` with ``SFTConfig``'s defaults (bf16, gradient checkpointing)
  on the same token ids (with their completion masks);
- ``TRL for CPU``: the same with fp32 and no gradient checkpointing.

    .venv/bin/python bench/run.py train [--quick]
    TRAIN_BENCH_THREADS=2 ... (torch threads; default 1: steadier on a shared machine)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from paired import ratios, rounds, spread

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "dates" / "demo.yaml"
WARMUP = 3
CONTENDERS = ("hand loop", "HF Trainer", "tunesmith", "TRL defaults", "TRL for CPU")


class Setup:
    """The demo's config and rows, prepared once by tunesmith; a fresh model for each contender."""

    def __init__(self, steps: int, work: Path) -> None:
        from tunesmith.config import load_config
        from tunesmith.plugins import Plugins
        from tunesmith.prepare import prepare, training_rows

        self.steps, self.work = steps, work
        self.plugins = Plugins()
        overrides = [
            f"output_dir={work}/runs/{{name}}",
            f"training.max_steps={steps}",
            f"training.save_steps={max(1, steps // 2)}",
            "training.logging_steps=5",
            "training.eval_steps=0",  # validation during training is evaluation: the eval part measures it
            "data.cache=false",
        ]
        self.resolved = load_config(DEMO, overrides, self.plugins)
        from tunesmith.ui import Quiet

        self.prepared, self.tokenizer = prepare(self.resolved, Quiet(), self.plugins)
        self.rows = training_rows(self.resolved, self.prepared.tokenized["train"])
        cfg = self.resolved.config
        self.batch_size = cfg.training.batch_size
        self.lr = cfg.training.learning_rate or self.resolved.method.default_learning_rate
        self.pad = self.tokenizer.pad_token_id

    def model(self) -> Any:
        from tunesmith.contexts import Device
        from tunesmith.distributed import Ranks
        from tunesmith.pipeline import apply_method, load_base
        from tunesmith.ui import Quiet

        base = load_base(self.resolved, self.plugins, Device.detect(), Quiet(), Ranks.from_env())
        return apply_method(base, self.resolved, Quiet())[0]

    def collator(self) -> Any:
        from tunesmith.data import Collator

        return Collator(self.pad, packed=self.resolved.config.data.packing)


class TokenCount:
    """Real tokens seen by the model: input ids that are not padding, counted at the embeddings."""

    def __init__(self, model: Any, pad: int) -> None:
        self.real = self.slots = 0
        self.pad = pad
        self.marks: list[tuple[float, int]] = []  #: (time, real tokens before it) at each training forward
        self.handle = model.get_input_embeddings().register_forward_pre_hook(self._count)

    def steady(self, warmup: int = WARMUP) -> float:
        """Real tokens/s from the forward of step ``warmup`` to the last one: Trainer construction and the
        first steps left out; what happens between steps (callbacks, logging, saves) left in."""
        (t0, n0), (t1, n1) = self.marks[warmup], self.marks[-1]
        return (n1 - n0) / (t1 - t0)

    def _count(self, module: Any, args: tuple[Any, ...]) -> None:
        if not module.training:  # an evaluation pass, not training
            return
        ids = args[0]
        self.marks.append((time.perf_counter(), self.real))
        self.real += int((ids != self.pad).sum())
        self.slots += ids.numel()


def hand_loop(s: Setup, model: Any, out: Path) -> None:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    collate = s.collator()
    model.train()
    for step in range(s.steps):
        rows = [s.rows[(step * s.batch_size + i) % len(s.rows)] for i in range(s.batch_size)]
        batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in collate(rows).items()}
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def trainer_args(s: Setup, out: Path) -> dict[str, Any]:
    """What the Trainer-based contenders share: the same steps, batch, learning rate, logs and saves."""
    return {
        "output_dir": str(out),
        "max_steps": s.steps,
        "per_device_train_batch_size": s.batch_size,
        "learning_rate": s.lr,
        "save_steps": max(1, s.steps // 2),
        "logging_steps": 5,
        "report_to": "none",
        "disable_tqdm": True,
    }


def hf_trainer(s: Setup, model: Any, out: Path) -> None:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(**trainer_args(s, out), remove_unused_columns=False)
    Trainer(model=model, args=args, train_dataset=list(s.rows), data_collator=s.collator()).train()


def tunesmith_run(s: Setup, model: Any, out: Path) -> None:
    from tunesmith.contexts import Device
    from tunesmith.pipeline import train
    from tunesmith.rundir import RunDir
    from tunesmith.tracking import Tracking
    from tunesmith.ui import Quiet

    run_dir = RunDir.create(out, overwrite=True)
    try:
        train(
            model, s.tokenizer, s.resolved, s.prepared, Device.detect(), run_dir, None, s.plugins, Quiet(),
            Tracking([], lambda line: None),
        )  # fmt: skip
    finally:
        run_dir.unlock()


def trl(s: Setup, model: Any, out: Path, *, tuned: bool) -> None:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list(
        [
            {"input_ids": r["input_ids"], "completion_mask": [int(x != -100) for x in r["labels"]]}
            for r in s.rows
        ]
    )
    options: dict[str, Any] = {"bf16": False, "gradient_checkpointing": False} if tuned else {}
    config = SFTConfig(
        **trainer_args(s, out),
        max_length=s.resolved.config.data.max_length,
        use_cpu=not torch.cuda.is_available(),  # without it, TRL's bf16 default refuses a CPU
        **options,
    )
    SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=s.tokenizer).train()


LOOPS = {
    "hand loop": hand_loop,
    "HF Trainer": hf_trainer,
    "tunesmith": tunesmith_run,
    "TRL defaults": lambda s, m, o: trl(s, m, o, tuned=False),
    "TRL for CPU": lambda s, m, o: trl(s, m, o, tuned=True),
}


def run(quick: bool) -> dict[str, Any]:
    import logging
    import warnings

    import torch

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    threads = int(os.environ.get("TRAIN_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    steps, n = (12, 2) if quick else (20, 3)
    seconds: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    tokens: dict[str, list[int]] = {name: [] for name in CONTENDERS}
    steady: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(steps, Path(tmp))

        def tokens_per_second(name: str) -> float:
            model = setup.model()
            count = TokenCount(model, setup.pad)
            out = Path(tmp) / name.replace(" ", "-") / str(len(seconds[name]))
            started = time.perf_counter()
            LOOPS[name](setup, model, out)
            elapsed = time.perf_counter() - started
            count.handle.remove()
            seconds[name].append(elapsed)
            tokens[name].append(count.real)
            steady[name].append(count.steady())
            return count.real / elapsed

        print(f"training: {steps} steps × {setup.batch_size} rows, {n} rounds, {threads} torch thread(s)")
        values = rounds(list(CONTENDERS), tokens_per_second, n)
    return {
        "steps": steps,
        "batch_size": setup.batch_size,
        "rows": len(setup.rows),
        "threads": threads,
        "rounds": n,
        "real_tokens_per_second": {name: spread(v, 1) for name, v in values.items()},
        "call_seconds": {name: spread(v, 2) for name, v in seconds.items()},
        "real_tokens": {name: tokens[name] for name in CONTENDERS},
        "vs_hand_loop": ratios(values, "hand loop"),
        "steady_real_tokens_per_second": {name: spread(v, 1) for name, v in steady.items()},
        "steady_tunesmith_vs": {
            other: spread([t / o for t, o in zip(steady["tunesmith"], steady[other], strict=True)])
            for other in CONTENDERS
            if other != "tunesmith"
        },
        "tunesmith_vs": {
            other: spread([t / o for t, o in zip(values["tunesmith"], values[other], strict=True)])
            for other in CONTENDERS
            if other != "tunesmith"
        },
    }


def rows(result: dict[str, Any]) -> list[tuple[str, dict[str, float], str]]:
    targets = {"hand loop": ">= 0.97", "TRL defaults": ">= 1.5"}
    whole = [
        (f"train: tunesmith / {other}, whole call", r, targets.get(other, "(info)"))
        for other, r in result["tunesmith_vs"].items()
    ]
    steady = [
        (f"train: tunesmith / {other}, from step {WARMUP}", r, targets.get(other, "(info)"))
        for other, r in result.get("steady_tunesmith_vs", {}).items()
    ]
    return whole + steady
