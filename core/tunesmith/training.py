"""What an objective receives to train with, and the callbacks that record a run.

The core builds the Hugging Face ``TrainingArguments`` keyword arguments once (device-aware precision,
checkpointing into the run directory, no third-party reporters) so every objective — HF ``Trainer`` or
a TRL trainer, whose configs subclass ``TrainingArguments`` — trains under the same rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import TrainingConfig

CHECKPOINT_MARKER = "CHECKPOINT_COMPLETE"


@dataclass
class Device:
    """Where training runs and what it supports; decides the ``auto`` defaults."""

    type: str  # cpu | cuda | mps
    bf16: bool = False

    @classmethod
    def detect(cls) -> Device:
        import torch

        if torch.cuda.is_available():
            return cls("cuda", bf16=torch.cuda.is_bf16_supported())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return cls("mps")
        return cls("cpu")

    def precision(self, requested: str) -> str:
        """fp32 on CPU (bf16 is emulated and ~10x slower there), bf16 on a GPU that has it."""
        if requested != "auto":
            return requested
        return "bf16" if self.type == "cuda" and self.bf16 else "fp32"

    def gradient_checkpointing(self, requested: bool | None) -> bool:
        return bool(requested) if requested is not None else False


@dataclass
class TrainContext:
    """Everything an :class:`tunesmith.Objective` needs to train the (already wrapped) model."""

    model: Any
    tokenizer: Any
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] | None
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]
    training: TrainingConfig
    device: Device
    run_dir: Path
    callbacks: list[Any] = field(default_factory=list)
    resume_from: str | None = None
    #: The formatted examples, for objectives that tokenize themselves (``Objective.tokenized = False``).
    train_examples: list[Any] = field(default_factory=list)
    eval_examples: list[Any] = field(default_factory=list)
    #: The method that wrapped the model (e.g. DPO uses the PEFT adapter as its implicit reference).
    method: Any = None
    #: The plugin registry (e.g. GRPO looks up reward plugins by name).
    plugins: Any = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def adopt(self, trainer: Any) -> Any:
        """Make a Trainer (HF or TRL) report through tunesmith: its console printer is replaced by
        tunesmith's progress bar and JSONL log. Objectives call this right after building the trainer."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        return trainer

    def training_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``TrainingArguments`` (or a TRL config) that honour the run config."""
        t = self.training
        precision = self.device.precision(t.precision)
        kwargs: dict[str, Any] = dict(
            output_dir=str(self.checkpoint_dir),
            num_train_epochs=t.epochs,
            max_steps=t.max_steps,
            learning_rate=t.learning_rate,
            per_device_train_batch_size=t.batch_size,
            per_device_eval_batch_size=t.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            lr_scheduler_type=t.lr_scheduler,
            warmup_steps=t.warmup_ratio,  # transformers 5 reads a float < 1 as a ratio
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            optim=t.optimizer,
            seed=t.seed,
            data_seed=t.seed,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            activation_checkpointing=self.device.gradient_checkpointing(t.gradient_checkpointing),
            logging_steps=t.logging_steps,
            logging_first_step=True,
            save_strategy="steps" if t.save_steps > 0 else "epoch",
            save_steps=t.save_steps if t.save_steps > 0 else 500,
            save_total_limit=t.save_total_limit,
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            remove_unused_columns=False,
            use_cpu=self.device.type == "cpu",
            torch_compile=t.torch_compile,
            dataloader_num_workers=0,
        )
        kwargs.update(overrides)
        return kwargs


def make_callbacks(
    run_dir: Path,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[str, int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """Trainer callbacks: JSONL log, TensorBoard, checkpoint markers, progress, plugin hooks."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback

    class RunRecorder(TrainerCallback):
        """Appends every log entry to ``train_log.jsonl`` and marks checkpoints complete."""

        def __init__(self) -> None:
            self.log_path = run_dir / "train_log.jsonl"
            self.started = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if on_progress:
                on_progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = dict(logs or {})
            entry = {"step": state.global_step, "epoch": state.epoch, **logs}
            entry["elapsed_s"] = round(time.monotonic() - self.started, 3)
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
            if on_log:
                on_log(state.global_step, {k: v for k, v in logs.items() if isinstance(v, (int, float))})

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            # The Trainer writes trainer_state.json last; the marker says "this checkpoint is whole".
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if (ckpt / "trainer_state.json").is_file():
                (ckpt / CHECKPOINT_MARKER).write_text("ok\n")
                if on_checkpoint:
                    on_checkpoint(str(ckpt), state.global_step)

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    return [RunRecorder(), TensorBoardCallback(tb_writer=writer)]


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose marker exists (a crash mid-save leaves no marker)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if (p / CHECKPOINT_MARKER).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; uses PEFT's count where it knows about quantised weights."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
