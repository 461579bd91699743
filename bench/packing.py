"""When packing pays: real tokens/s of packed and unpacked batches across length mixes.

The same examples are trained one pass (forward, backward, AdamW step) in each layout, on the tiny
model; a round runs every layout once in a rotated order and the figures are medians (min–max) over
rounds, with each layout's ratio to plain unpacked batches taken within a round (paired). Real tokens
are counted from the batches themselves: input ids that are not padding (and trained tokens from the
labels).

Layouts (``tunesmith.data.Collator``):

- ``unpacked``: one example per row, rows in random order, padded to the batch's longest, 2-D mask.
- ``unpacked-grouped``: the same rows in the order of transformers' ``LengthGroupedSampler``
  (``train_sampling_strategy="group_by_length"``): batches of similar lengths.
- ``packed-rows``: rows packed to ``max_length``, batched as they are (the layout before ``narrow``).
- ``packed-narrow``: the same packed batches, each re-packed as wide as its longest sample (the default
  for dense kernels).
- ``packed-flat`` (``--gpu`` only): the same batches as one row for flash-attention's varlen kernel.
  (On the GPU ``packed-rows`` is timed as the reference only: a flash kernel given several packed rows
  lets their samples attend to each other.) ``--gpu`` also checks that the flat layout isolates samples.

    .venv/bin/python bench/packing.py [--quick] [--threads 1] [--json out.json]
    .venv/bin/python bench/packing.py --gpu        # on a CUDA machine with flash-attn installed
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

MIXES = ("uniform-short", "uniform-long", "long-tailed")
CPU_LAYOUTS = ("unpacked", "unpacked-grouped", "packed-rows", "packed-narrow")
GPU_LAYOUTS = ("unpacked", "packed-rows", "packed-flat")


def lengths(mix: str, n: int, max_length: int, rng: random.Random) -> list[int]:
    """Example lengths in tokens: short chats, long documents, or a log-normal mix with a long tail."""
    if mix == "uniform-short":
        return [rng.randint(16, 64) for _ in range(n)]
    if mix == "uniform-long":
        return [rng.randint(max_length // 2, max_length) for _ in range(n)]
    return [min(max_length, max(8, int(rng.lognormvariate(4.0, 0.9)))) for _ in range(n)]


def examples(mix: str, n: int, max_length: int, seed: int = 0) -> list[Any]:
    """Tokenized examples of the mix: random byte tokens, the first third masked like a prompt."""
    from tunesmith.data import IGNORE_INDEX, TokenizedExample

    rng = random.Random(seed)
    out = []
    for i, size in enumerate(lengths(mix, n, max_length, rng)):
        ids = [rng.randint(20, 250) for _ in range(size)]
        prompt = size // 3
        out.append(TokenizedExample(ids, [IGNORE_INDEX] * prompt + ids[prompt:], f"#{i}"))
    return out


def batches(layout: str, exs: list[Any], batch_size: int, max_length: int, pad_id: int) -> list[dict]:
    """One pass over ``exs`` as collated batches of ``batch_size`` rows, in a fixed shuffled order."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tunesmith.data import Collator, pack

    packed = layout.startswith("packed")
    if packed:
        rows: list[dict] = pack(exs, max_length)
    else:
        rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in exs]
    if layout == "unpacked-grouped":
        generator = torch.Generator().manual_seed(0)
        order = list(LengthGroupedSampler(batch_size, dataset=rows, generator=generator))
    else:
        order = list(range(len(rows)))
        random.Random(0).shuffle(order)
    collate = Collator(pad_id, packed=packed, layout=layout.removeprefix("packed-") if packed else "rows")
    picked = [rows[i] for i in order]
    return [collate(picked[i : i + batch_size]) for i in range(0, len(picked), batch_size)]


def real_tokens(batch: dict, pad_id: int) -> tuple[int, int]:
    """(input tokens that are not padding, trained tokens) of a collated batch."""
    if "attention_mask" in batch:
        real = int(batch["attention_mask"].sum())
    else:
        real = int((batch["input_ids"] != pad_id).sum())
    return real, int((batch["labels"][:, 1:] != -100).sum())


def train_pass(model: Any, state: dict, batches_: list[dict], device: str) -> float:
    """Seconds for one training pass over the batches, from the same weights each time."""
    import torch

    model.load_state_dict(state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    moved = [{k: v.to(device) if hasattr(v, "to") else v for k, v in b.items()} for b in batches_]
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in moved:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def measure(
    *,
    quick: bool,
    gpu: bool = False,
    threads: int = 1,
    rounds: int | None = None,
    batch_size: int = 8,
    max_length: int = 1024,
    progress: bool = False,
) -> dict[str, Any]:
    import torch

    from tunesmith.testing.models import build_random_model, build_tokenizer

    device = "cuda" if gpu else "cpu"
    if not gpu:
        torch.set_num_threads(threads)
    tokenizer = build_tokenizer()
    pad_id = tokenizer.pad_token_id
    attn = _flash_kernel() if gpu else "sdpa"
    layouts = GPU_LAYOUTS if gpu else CPU_LAYOUTS
    model = build_random_model(tokenizer, attn_implementation=attn, max_position_embeddings=max_length)
    model = model.to(device, dtype=torch.bfloat16 if gpu else torch.float32).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = {"uniform-short": 400, "uniform-long": 48, "long-tailed": 300}
    scale = 2 if quick else 1
    rounds = rounds or (3 if quick else 5)
    result: dict[str, Any] = {
        "device": device,
        "attention": attn,
        "threads": threads if not gpu else None,
        "batch_size": batch_size,
        "max_length": max_length,
        "rounds": rounds,
        "mixes": {},
    }
    for mix in MIXES:
        exs = examples(mix, max(8, sizes[mix] // scale), max_length)
        prepared = {layout: batches(layout, exs, batch_size, max_length, pad_id) for layout in layouts}
        counts = {layout: [real_tokens(b, pad_id) for b in bs] for layout, bs in prepared.items()}
        totals = {layout: sum(c[0] for c in cs) for layout, cs in counts.items()}
        assert len(set(totals.values())) == 1, f"layouts disagree on the real tokens: {totals}"
        real = next(iter(totals.values()))
        per_round: dict[str, list[float]] = {layout: [] for layout in layouts}
        for r in range(rounds):
            order = list(layouts[r % len(layouts) :] + layouts[: r % len(layouts)])  # rotate the order
            for layout in order:
                per_round[layout].append(real / train_pass(model, state, prepared[layout], device))
        result["mixes"][mix] = {
            "examples": len(exs),
            "real_tokens": real,
            "mean_length": round(real / len(exs), 1),
            "layouts": {
                layout: {
                    "steps": len(prepared[layout]),
                    "padded_tokens": sum(b["input_ids"].numel() for b in prepared[layout]),
                    "real_tokens_per_s": _spread(per_round[layout]),
                    "per_round": [round(v) for v in per_round[layout]],
                    "vs_unpacked": _spread(
                        [a / b for a, b in zip(per_round[layout], per_round["unpacked"], strict=True)], 2
                    ),
                }
                for layout in layouts
            },
        }
        if progress:
            _print_mix(mix, result["mixes"][mix])
    if gpu:
        result["flat_isolation_max_loss_difference"] = _flat_isolation(model, tokenizer, device)
    return result


def _spread(values: list[float], digits: int = 0) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _flash_kernel() -> str:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        raise SystemExit(
            "--gpu needs flash-attn (pip install flash-attn): its varlen kernel is what it measures"
        ) from None
    return "flash_attention_2"


def _flat_isolation(model: Any, tokenizer: Any, device: str) -> float:
    """Largest difference between a sample's per-token loss in a flat packed batch and alone."""
    import torch
    import torch.nn.functional as F

    from tunesmith.data import Collator, pack

    exs = examples("long-tailed", 24, 256, seed=1)
    batch = Collator(tokenizer.pad_token_id, packed=True, layout="flat")(pack(exs, 256)[:4])
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    worst = 0.0
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits[0].float()
        bounds = batch["cu_seq_lens_q"].tolist()
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            ids = batch["input_ids"][0, start:end]
            alone = model(input_ids=ids[None], use_cache=False).logits[0].float()
            packed_loss = F.cross_entropy(logits[start : end - 1], ids[1:], reduction="none")
            alone_loss = F.cross_entropy(alone[:-1], ids[1:], reduction="none")
            worst = max(worst, (packed_loss - alone_loss).abs().max().item())
    model.train()
    return worst


def run(quick: bool) -> dict[str, Any]:
    """The suite's entry point: CPU figures, one thread."""
    return measure(quick=quick)


def _print_mix(mix: str, m: dict[str, Any]) -> None:
    print(
        f"\n{mix}: {m['examples']} examples, mean {m['mean_length']} tokens, {m['real_tokens']} real tokens"
    )
    for layout, f in m["layouts"].items():
        t, v = f["real_tokens_per_s"], f["vs_unpacked"]
        print(
            f"  {layout:17} {f['steps']:4} steps  {t['median']:>8,.0f} tok/s ({t['min']:,.0f}–{t['max']:,.0f})"
            f"  ×{v['median']:.2f} ({v['min']:.2f}–{v['max']:.2f}) vs unpacked",
            flush=True,
        )


def _print_footer(result: dict[str, Any]) -> None:
    if "flat_isolation_max_loss_difference" in result:
        print(f"\nflat layout, largest per-token loss difference vs each sample alone: "
              f"{result['flat_isolation_max_loss_difference']:.2e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half the examples, 3 rounds")
    parser.add_argument("--gpu", action="store_true", help="CUDA, bf16, flash-attention varlen layout")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    print(
        f"{'cuda' if args.gpu else 'cpu'} · batches of 8 rows · max_length 1024 · real tokens/s, median (min–max)"
    )
    result = measure(quick=args.quick, gpu=args.gpu, threads=args.threads, rounds=args.rounds, progress=True)
    _print_footer(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
