"""Evaluates the tiny random model the way a run does, alone or as one process of ``torchrun``.

``python eval_shard_worker.py OUT_DIR [EXAMPLES] [THREADS]`` writes ``OUT_DIR/rank<r>.json``: the
metrics, samples, gates and files of a base pass and a tuned pass (perplexity, exact-match, bleu and
human-review), the forward passes this process ran, and the evaluation's wall time. Under ``torchrun``
(``RANK``/``WORLD_SIZE`` set) it joins a gloo process group first, so the evaluation is sharded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(out_dir: Path, n_examples: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")

    from tunesmith.evaluation import run_evaluators, to_eval_examples
    from tunesmith.testing.models import build_random_model, build_tokenizer
    from tunesmith.testing.objectives import task_examples
    from tunesmith_plugins.evaluators.bleu import Bleu
    from tunesmith_plugins.evaluators.exact_match import ExactMatch
    from tunesmith_plugins.evaluators.human_review import HumanReview
    from tunesmith_plugins.evaluators.perplexity import Perplexity

    tok = build_tokenizer()
    model = build_random_model(tok, seed=3).eval()
    examples = to_eval_examples(task_examples("chat", 0, n_examples), tok)
    calls = [0]
    model.lm_head.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    review = out_dir / "review" if rank == 0 else None  # as the run does: files on the main process only
    evaluators = [Perplexity(), ExactMatch(), Bleu(), HumanReview()]
    started = time.perf_counter()
    passes = {}
    for label in ("base", "tuned"):
        result = run_evaluators(
            model,
            tok,
            evaluators,
            examples,
            split="test",
            label=label,
            batch_size=4,
            max_new_tokens=8,
            output_dir=review,
            base=passes.get("base", {}).get("metrics"),
        )
        passes[label] = {"metrics": result.metrics, "samples": result.samples, "gates": result.gates}
    seconds = time.perf_counter() - started
    files = sorted(str(p.relative_to(out_dir)) for p in (out_dir / "review").rglob("*") if p.is_file())
    record = {"passes": passes, "forward_calls": calls[0], "seconds": seconds, "world": world, "files": files}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        int(sys.argv[2]) if len(sys.argv) > 2 else 24,
        int(sys.argv[3]) if len(sys.argv) > 3 else 1,
    )
