"""Training-loop overhead: tunesmith's sft objective against a hand-written torch loop.

Both train the same model on the same packed rows with the same optimizer settings; the report is the
ratio of steady-state tokens/s (warm-up steps excluded), so it means the same on any machine.

    .venv/bin/python bench/train_loop.py [--steps 30] [--method lora|full]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from tunesmith import Device, TrainContext
from tunesmith.data import Collator, pack, tokenize_split
from tunesmith.examples import Example
from tunesmith.plugins import Plugins
from tunesmith.schema import TrainingConfig
from tunesmith.testing.models import build_random_model, build_tokenizer

WARMUP = 3


def make_rows(tokenizer, max_length: int, n: int) -> list[dict]:
    rng = random.Random(0)
    examples = []
    for i in range(n):
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(10, 40)))
        examples.append(
            Example(
                messages=[{"role": "user", "content": words}, {"role": "assistant", "content": words[::-1]}],
                origin=f"#{i}",
            )
        )
    tokenized, _, _ = tokenize_split(examples, tokenizer, max_length=max_length)
    return pack(tokenized, max_length)


def hand_loop(model, rows, collator, steps: int, batch_size: int, lr: float) -> float:
    """The baseline: the loop a person would write, timed after warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    tokens, started = 0, None
    for step in range(steps):
        if step == WARMUP:
            tokens, started = 0, time.perf_counter()
        batch = collator([rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)])
        loss = model(**batch).loss  # packed batches carry use_cache=False
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch["input_ids"].numel()
    return tokens / (time.perf_counter() - started)


def tunesmith_loop(model, tokenizer, rows, collator, steps: int, batch_size: int, lr: float, method) -> float:
    """The sft objective, timed from the end of warm-up with a Trainer callback."""
    from transformers import TrainerCallback

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == WARMUP:
                marks["start"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            marks["end"] = time.perf_counter()

    objective = Plugins().get("objective", "sft")()
    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingConfig(
            max_steps=steps,
            batch_size=batch_size,
            learning_rate=lr,
            warmup_ratio=0.0,
            lr_scheduler="constant",
            logging_steps=10_000,
            save_steps=10_000,
        )
        ctx = TrainContext(
            model=model,
            tokenizer=tokenizer,
            train_rows=rows,
            eval_rows=None,
            collator=collator,
            training=training,
            device=Device("cpu"),
            run_dir=Path(tmp),
            callbacks=[Clock()],
        )
        objective.train(ctx)
    row_tokens = sum(len(collator([rows[i]])["input_ids"][0]) for i in range(min(len(rows), 64))) / min(
        len(rows), 64
    )
    return (steps - WARMUP) * batch_size * row_tokens / (marks["end"] - marks["start"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    rows = make_rows(tokenizer, args.max_length, 400)
    rows = [r for r in rows if len(r["input_ids"]) == max(len(r["input_ids"]) for r in rows)] or rows
    collator = Collator(tokenizer.pad_token_id, packed=True)
    method = Plugins().get("method", args.method)()
    lr = method.default_learning_rate

    results = {}
    for name in ("hand-written", "tunesmith", "hand-written (again)", "tunesmith (again)"):
        model = method.apply(build_random_model(tokenizer, seed=0))
        if name.startswith("hand"):
            results[name] = hand_loop(model, rows, collator, args.steps, args.batch_size, lr)
        else:
            results[name] = tunesmith_loop(
                model, tokenizer, rows, collator, args.steps, args.batch_size, lr, method
            )
        print(f"{name:>22}: {results[name]:8.0f} tokens/s")
    hand = max(results["hand-written"], results["hand-written (again)"])
    ours = max(results["tunesmith"], results["tunesmith (again)"])
    print(
        f"method={args.method} rows={len(rows)}×{args.max_length} batch={args.batch_size} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"tunesmith / hand-written throughput: {ours / hand:.3f} (best of two each)")


if __name__ == "__main__":
    main()
