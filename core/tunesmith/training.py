"""What records a training run: the Trainer callbacks, checkpoint markers and parameter counts.

What an objective receives (``TrainContext``, with the ``TrainingArguments`` every objective shares)
is part of the plugin contract, in :mod:`tunesmith.contexts`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKPOINT_MARKER = "CHECKPOINT_COMPLETE"


def make_callbacks(
    run_dir: Path,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[str, int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """Trainer callbacks: JSONL log, TensorBoard, checkpoint markers, progress, plugin hooks.

    Under several processes every process gets them (the Trainer calls callbacks everywhere), but
    only the main process writes or calls out; at each save the others wait at a barrier so the marker
    is written only once every process has written its part (its RNG state, its FSDP shard).
    """
    from torch.utils.tensorboard import SummaryWriter
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback

    from tunesmith.distributed import Ranks

    ranks = Ranks.from_env()
    if not ranks.is_main:
        on_log = on_checkpoint = on_progress = None

    class RunRecorder(TrainerCallback):
        """Appends every log entry to ``train_log.jsonl`` and marks checkpoints complete."""

        def __init__(self) -> None:
            self.log_path = run_dir / "train_log.jsonl"
            self.started = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if on_progress:
                on_progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if not ranks.is_main:
                return
            logs = dict(logs or {})
            entry = {"step": state.global_step, "epoch": state.epoch, **logs}
            entry["elapsed_s"] = round(time.monotonic() - self.started, 3)
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
            if on_log:
                on_log(state.global_step, {k: v for k, v in logs.items() if isinstance(v, (int, float))})

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            # The Trainer writes trainer_state.json last; the marker says "this checkpoint is whole".
            ranks.barrier()  # every process has written its part of the checkpoint
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ranks.is_main and (ckpt / "trainer_state.json").is_file():
                (ckpt / CHECKPOINT_MARKER).write_text("ok\n")
                if on_checkpoint:
                    on_checkpoint(str(ckpt), state.global_step)

    if not ranks.is_main:
        return [RunRecorder()]
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    return [RunRecorder(), TensorBoardCallback(tb_writer=writer)]


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose marker exists (a crash mid-save leaves no marker)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if (p / CHECKPOINT_MARKER).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)
