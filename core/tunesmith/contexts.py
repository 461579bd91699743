"""What objectives and evaluators receive: :class:`TrainContext` and :class:`EvalContext`.

Both are narrow on purpose: an objective or evaluator talks only to its context, which keeps plugins
independent of how the engine loads models and lets tests hand them a context built by hand.
torch and transformers are imported inside methods: importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tunesmith.errors import TunesmithError
from tunesmith.examples import Example
from tunesmith.hf import declared_stop_ids, is_sequence_classifier
from tunesmith.schema import TrainingConfig

OnBatch = Callable[[int], None]
T = TypeVar("T")
R = TypeVar("R")

# ------------------------------------------------------------------------------------------ training


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
    """Everything an :class:`tunesmith.Objective` needs to train the (already wrapped) model.

    - ``model``: the model to train, as the method returned it (PEFT-wrapped, or the base model with
      some parameters frozen); train it in place.
    - ``tokenizer``: the run's tokenizer (pad token and chat template set).
    - ``training``: the run's ``training`` section, ``learning_rate`` filled in (the method's default
      when the config leaves it unset). Pass :meth:`training_kwargs` to ``TrainingArguments`` or a TRL
      config rather than reading it field by field.
    - ``train_rows``: tokenized, masked (and, with ``data.packing``, packed) rows ``{"input_ids",
      "labels"}`` for objectives with ``tokenized = True``; empty otherwise. In a run they are a
      memory-mapped ``datasets.Dataset``: pass them to a trainer as they are, do not copy them to a list.
    - ``train_examples``: the formatted :class:`tunesmith.Example` objects, for objectives that
      tokenize themselves (``tokenized = False``: TRL's DPO, KTO, GRPO trainers): a sequence, read
      from disk as it is iterated.
    - ``collator``: turns a list of ``train_rows`` into a batch (per-example attention when packed).
    - ``device``: where training runs (decides precision defaults).
    - ``run_dir``: the run directory; checkpoints go to ``checkpoint_dir`` inside it.
    - ``callbacks``: Trainer callbacks that record the run (training log, TensorBoard, checkpoint
      markers, progress, plugin hooks): pass them to the trainer.
    - ``resume_from``: the checkpoint directory to resume from (``trainer.train(resume_from_checkpoint=)``),
      or ``None``.
    - ``eval_rows`` / ``eval_examples``: the validation split, like ``train_rows`` / ``train_examples``,
      for objectives with ``validates = True`` (empty otherwise, or without a validation split). Pass
      them to the trainer as ``eval_dataset``; :meth:`training_kwargs` then turns on evaluation (and
      keeping the best checkpoint when early stopping is on).
    """

    model: Any
    tokenizer: Any
    training: TrainingConfig
    train_rows: list[dict[str, Any]] = field(default_factory=list)
    train_examples: Sequence[Example] = field(default_factory=list)
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
    device: Device = field(default_factory=lambda: Device("cpu"))
    run_dir: Path = Path(".")
    callbacks: list[Any] = field(default_factory=list)
    resume_from: str | None = None
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    eval_examples: Sequence[Example] = field(default_factory=list)

    @property
    def validating(self) -> bool:
        """Whether the validation loss is measured while training (a validation split and eval_steps)."""
        return bool(self.eval_rows or self.eval_examples) and self.training.eval_steps > 0

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
        from tunesmith.distributed import Ranks
        from tunesmith.parallel import trainer_kwargs

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
        if self.validating:
            kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps)
            if t.early_stopping_patience:  # keep the best checkpoint: save when evaluating
                kwargs.update(
                    save_strategy="steps",
                    save_steps=t.eval_steps,
                    load_best_model_at_end=True,
                    metric_for_best_model="eval_loss",
                    greater_is_better=False,
                    # --resume continues the early-stopping count saved with the checkpoint
                    restore_callback_states_from_checkpoint=True,
                )
        # Several processes: DDP settings always, FSDP or DeepSpeed as training.distributed says.
        kwargs.update(
            trainer_kwargs(
                t.distributed,
                self.model,
                world_size=Ranks.from_env().world_size,
                activation_checkpointing=kwargs["activation_checkpointing"],
            )
        )
        kwargs.update(overrides)
        return kwargs


# ---------------------------------------------------------------------------------------- evaluation


@dataclass
class EvalExample:
    """One evaluation example, already rendered for generation.

    ``prompt`` is the chat-template rendering of the prompt messages with the generation prompt
    appended; ``completion`` is what the template renders after it for the reference answer (the
    reference plus end-of-turn markers: what training puts loss on). Plain-text examples have an empty
    prompt, ``text`` set and no reference. ``choices`` are the answer options of a multiple-choice
    example (copied from :attr:`Example.choices`; the reference is one of them), else ``None``.
    ``chosen`` and ``rejected`` (preference examples only) are the two answers rendered like
    ``completion``: the text the template appends after ``prompt``, end-of-turn included.
    """

    prompt: str
    reference: str | None = None
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    origin: str = ""
    completion: str | None = None
    choices: list[str] | None = None
    chosen: str | None = None
    rejected: str | None = None


class EvalMemo:
    """What :meth:`EvalContext.generate` and :meth:`EvalContext.score` computed for one model state.

    The engine gives one memo to every evaluator of a pass (one model, before or after training), so
    evaluators that ask for the same greedy generations (exact-match, BLEU, ROUGE, accuracy on the same
    prompts) or the same log-probabilities share one forward pass. Sampled generations are never kept.
    """

    def __init__(self) -> None:
        self.generations: dict[str, dict[str, str]] = {}  # generation options -> prompt -> text
        self.scores: dict[tuple[str, str], tuple[float, int]] = {}  # (prompt, completion) -> score


class EvalContext:
    """What an evaluator receives: the model, the tokenizer, the examples and batched helpers.

    Attributes: ``model``, ``tokenizer``, ``examples`` (:class:`EvalExample`), ``split`` (e.g. ``"validation"``), ``label`` (``"base"`` or
    ``"tuned"``), ``device``, ``batch_size``, ``max_new_tokens`` (the default for :meth:`generate`),
    ``samples`` (what :meth:`record_samples` stored), ``gates`` (what :meth:`gate` recorded), ``on_batch`` (called with the number of items
    finished after each batch, for progress bars) and ``output_dir`` (a directory of the run where an
    evaluator may write files, e.g. a review sheet; ``None`` when there is none: then write nothing).
    ``stop_token_ids`` are the ids that end generation (EOS, the model's declared EOS ids and the chat
    template's end-of-turn marker); ``final_answer`` maps a generation to the answer that
    reference-based metrics compare (reasoning removed), or is ``None`` to compare it whole.
    ``base_metrics`` (tuned pass only) are this evaluator's metrics on the same split from the base
    model's pass, fresh or reused from the evaluation cache, without the evaluator's name; ``None``
    when there was no base pass.

    Under ``torch.distributed`` (a run started by ``torchrun``) every process runs every evaluator:
    :meth:`generate` and :meth:`score` split their batches across the processes and return the
    gathered results, the same on every process. ``rank``, ``world_size`` and ``is_main`` say which
    process this is; only the main one should write files.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        examples: list[EvalExample],
        *,
        split: str = "validation",
        label: str = "tuned",
        batch_size: int = 16,
        max_new_tokens: int = 64,
        device: Any = None,
        on_batch: OnBatch | None = None,
        output_dir: Path | None = None,
        stop_token_ids: list[int] | None = None,
        final_answer: Callable[[str], str] | None = None,
        base_metrics: dict[str, float] | None = None,
        memo: EvalMemo | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.examples = examples
        self.split = split
        self.label = label
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = max_new_tokens
        self.device = device if device is not None else _model_device(model)
        self.on_batch = on_batch
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.samples: list[dict[str, Any]] = []
        self.gates: list[dict[str, Any]] = []
        if not stop_token_ids:
            stop_token_ids = declared_stop_ids(model, tokenizer)
        self.stop_token_ids = stop_token_ids
        self.final_answer = final_answer
        self.base_metrics = base_metrics
        self.memo = memo if memo is not None else EvalMemo()
        self.rank, self.world_size = rank_and_world_size()

    @property
    def is_main(self) -> bool:
        """True in the one process that writes files (always, outside ``torch.distributed``)."""
        return self.rank == 0

    # ------------------------------------------------------------------------------------ helpers

    def record_samples(self, samples: list[dict[str, Any]]) -> None:
        """Keep example predictions (e.g. ``{"prompt", "reference", "prediction"}``) for the report."""
        self.samples.extend(dict(s) for s in samples)

    def gate(self, name: str, passed: bool, detail: str, *, fail_run: bool = False) -> None:
        """Record a pass/fail judgement of the model (a forgetting threshold, a safety regression).

        Every gate is listed in ``metrics.json`` (``gates``) and the report. A failed gate with
        ``fail_run`` also makes ``tunesmith run`` exit with status 3 once the run directory is complete
        (the artifacts are kept: the gate says they should not ship, not that they are broken).
        """
        self.gates.append(
            {"name": name, "passed": bool(passed), "detail": detail, "fail_run": bool(fail_run)}
        )

    def answer(self, *, max_new_tokens: int | None = None) -> tuple[list[EvalExample], list[str]]:
        """Greedy answers to the examples that have a reference: ``(examples, predictions)``.

        The common first step of reference-based metrics (exact match, BLEU, ROUGE, accuracy); raises a
        user error when no example has a reference to compare with. Predictions are final answers: a
        reasoning model's ``<think>…</think>`` block is removed (``evaluation.strip_reasoning``).
        """
        examples = [ex for ex in self.examples if ex.reference is not None]
        if not examples:
            raise TunesmithError("no evaluation examples have a reference answer")
        predictions = self.generate([ex.prompt for ex in examples], max_new_tokens=max_new_tokens)
        if self.final_answer is not None:
            predictions = [self.final_answer(p) for p in predictions]
        return examples, predictions

    def generate(self, prompts: list[str], *, max_new_tokens: int | None = None, **kwargs: Any) -> list[str]:
        """Complete each prompt; return only the new text, special tokens removed.

        Greedy unless ``kwargs`` say otherwise (they go to ``model.generate``); stops at any of
        ``stop_token_ids``, and a batch stops as soon as each of its rows has. Prompts are used as
        given (``add_special_tokens=False``): a chat-rendered prompt already carries its BOS. Batches
        are left-padded so every row's new tokens start at the same column.
        Greedy generations are remembered for the pass: asking again for a prompt with the same
        options (from this evaluator or another) costs nothing.
        """
        self._need_causal_lm("generate")
        options: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens if max_new_tokens is not None else self.max_new_tokens,
            do_sample=False,
            use_cache=True,
            eos_token_id=self.stop_token_ids,
            pad_token_id=_pad_id(self.tokenizer),
        )
        options.update(kwargs)
        key = _options_key(options)
        if key is None:  # sampling, or options that cannot be compared: compute every time
            return self._spread(prompts, len, lambda batch: self._generate_batch(batch, options))
        known = self.memo.generations.setdefault(key, {})
        todo = [p for p in dict.fromkeys(prompts) if p not in known]
        if todo:
            texts = self._spread(todo, len, lambda batch: self._generate_batch(batch, options))
            known.update(zip(todo, texts, strict=True))
        return [known[p] for p in prompts]

    def _generate_batch(self, prompts: list[str], options: dict[str, Any]) -> list[str]:
        import torch

        tok = self.tokenizer
        saved_side = tok.padding_side
        tok.padding_side = "left"
        try:
            with _eval_mode(self.model), torch.inference_mode():
                enc = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                out = self.model.generate(**enc, **options)
        finally:
            tok.padding_side = saved_side
        return list(tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))

    def score(self, prompts: list[str], completions: list[str]) -> list[tuple[float, int]]:
        """For each pair, the summed log-probability of the completion's tokens given the prompt, and
        how many tokens that is.

        The completion is tokenized as part of ``prompt + completion`` (how the model saw it in
        training), not on its own. Its tokens are those after the longest common prefix of the tokens of
        ``prompt`` alone and of ``prompt + completion``: a token that merges across the boundary counts as
        completion. A token with nothing before it (an empty prompt) cannot be predicted and is not
        counted. Scores are remembered for the pass, like generations.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
        self._need_causal_lm("score")
        pairs = list(zip(prompts, completions, strict=True))
        known = self.memo.scores
        todo = [pair for pair in dict.fromkeys(pairs) if pair not in known]
        if todo:
            rows = [_split_tokens(self.tokenizer, p, c) for p, c in todo]
            known.update(zip(todo, self._spread(rows, lambda r: len(r[0]), self._score_batch), strict=True))
        return [known[pair] for pair in pairs]

    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
        import torch

        pad_id = _pad_id(self.tokenizer)
        results: list[tuple[float, int]] = []
        with _eval_mode(self.model), torch.inference_mode():
            # Right padding: real tokens keep positions 0..n-1, so no position ids are needed.
            width = max(len(tokens) for tokens, _ in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, (tokens, _) in enumerate(rows):
                ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                mask[row, : len(tokens)] = 1
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
            ).logits
            for row, (tokens, start) in enumerate(rows):
                start = max(start, 1)
                if start >= len(tokens):
                    results.append((0.0, 0))
                    continue
                # Logits at position t predict token t + 1.
                logprobs = torch.log_softmax(logits[row, start - 1 : len(tokens) - 1].float(), dim=-1)
                target = torch.tensor(tokens[start:], device=logprobs.device).unsqueeze(-1)
                results.append((float(logprobs.gather(-1, target).sum().item()), len(tokens) - start))
        return results

    def _spread(
        self, items: Sequence[T], key: Callable[[T], int], run: Callable[[list[T]], list[R]]
    ) -> list[R]:
        """``run`` over ``items`` in batches of similar length; under ``torch.distributed`` each process
        runs every ``world_size``-th batch and all get every result.

        The batches are those one process would run, so each result is computed exactly as it would be
        there: the metrics do not depend on the number of processes.
        """
        batches = _batches(items, self.batch_size, key)
        mine = batches[self.rank :: self.world_size]
        found: dict[int, R] = {}
        for idx in mine:
            found.update(zip(idx, run([items[i] for i in idx]), strict=True))
            self._progress(len(idx))
        if self.world_size > 1:
            rounds = -(-len(batches) // self.world_size)
            if len(mine) < rounds and batches and _in_lockstep(self.model):
                run([items[i] for i in batches[-1]])  # sharded weights: every process joins each forward
            found = _gather(found, self.world_size)
            self._progress(len(items) - sum(len(idx) for idx in mine))
        return [found[i] for i in range(len(items))]

    def _need_causal_lm(self, what: str) -> None:
        if is_sequence_classifier(self.model):
            raise TunesmithError(
                f"ctx.{what} needs a causal LM, but the model is a sequence classifier (a reward model): "
                "evaluate it with preference-accuracy"
            )

    def _progress(self, done: int) -> None:
        if self.on_batch is not None:
            self.on_batch(done)


# ---------------------------------------------------------------------------------------- internals


def _model_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is not None:
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return "cpu"


def _pad_id(tokenizer: Any) -> int:
    """The pad token id, falling back to EOS (padded positions are masked, so any id will do)."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) under an initialised ``torch.distributed``; (0, 1) otherwise.

    torch is not imported for this: a process that never imported it cannot be distributed.
    """
    import sys

    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None)
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _gather(found: dict[int, Any], world_size: int) -> dict[int, Any]:
    """Every process's results, merged; the same on every process."""
    import torch.distributed as dist

    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, found)
    merged: dict[int, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


def _in_lockstep(model: Any) -> bool:
    """Whether the model's weights are sharded across processes (FSDP, DeepSpeed ZeRO-3): then every
    process must run each forward pass together."""
    from transformers.distributed.fsdp import is_fsdp_managed_module
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model))


def _options_key(options: dict[str, Any]) -> str | None:
    """The generation options as a memo key; ``None`` for sampling or options without a stable text."""
    if options.get("do_sample") or options.get("num_return_sequences", 1) != 1:
        return None
    plain = (str, int, float, bool, type(None), list, tuple)
    if not all(isinstance(v, plain) for v in options.values()):
        return None
    return repr(sorted(options.items()))


def _batches(items: Sequence[Any], size: int, key: Callable[[Any], int]) -> list[list[int]]:
    """Indices in batches of similar length (longest first), so little compute goes on padding."""
    order = sorted(range(len(items)), key=lambda i: -key(items[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def _split_tokens(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], int]:
    """Tokens of ``prompt + completion`` and the index where the completion's tokens start."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    start = 0
    for a, b in zip(prompt_ids, full_ids, strict=False):
        if a != b:
            break
        start += 1
    return list(full_ids), start


class _eval_mode:
    """``model.eval()`` for the duration, then the previous training mode back."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = bool(getattr(self.model, "training", False))
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


__all__ = ["Device", "EvalContext", "EvalExample", "EvalMemo", "OnBatch", "TrainContext"]
