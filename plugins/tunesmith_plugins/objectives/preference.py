"""Preference objectives on TRL: DPO, ORPO, SimPO (CPO) and KTO.

They train on the formatted examples directly (``tokenized = False``): each objective builds a
``datasets.Dataset`` in TRL's conversational format (``prompt`` = the prompt turns, ``chosen`` /
``rejected`` / ``completion`` = one assistant turn) and lets the TRL trainer render it with the
tokenizer's chat template. The core has already checked every pair against ``data.max_length``.

Training arguments come from ``ctx.training_kwargs()``: TRL configs default to bf16 and gradient
checkpointing (about ten times slower on CPU), so the core's device-aware values are passed through.

Reference model (DPO, KTO). DPO's and KTO's losses compare the policy with a frozen reference, the
model as it was before this training:

- PEFT methods (lora, qlora, dora, ia3, prompt learning): no second model. TRL, given a ``PeftModel``
  and no ``ref_model``, keeps a frozen copy of the freshly initialised adapter named ``ref`` and computes
  the reference with it; LoRA, QLoRA, DoRA and IA3 start as the identity, so the reference is exactly the
  base model (with prompt learning it is the base with the initial virtual tokens). The copy costs one
  adapter's memory and is deleted after training, so the saved artifact holds only the trained adapter.
- Other methods (full, freeze, adapter): an explicit frozen deep copy of the model taken before
  training. It doubles the weights' memory (not the gradients' or optimizer's). TRL cannot make one
  itself for a model built in memory: it would reload it from ``config._name_or_path``.

ORPO and SimPO need no reference at all.

QLoRA: TRL casts the trainable adapter weights of a quantised model to bf16 (the QLoRA paper's
recipe for GPUs). Where tunesmith trains in fp32 (on CPU, where bf16 is emulated and 7-12x slower)
they are cast back to fp32 before the optimizer is built.

TRL, PEFT, torch and datasets are imported inside functions, so listing plugins stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tunesmith import Objective, Register, TunesmithError, hookimpl, option


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def preference_dataset(examples: list[Any]) -> Any:
    """Preference examples as a TRL conversational dataset: prompt turns, chosen and rejected turns."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {"prompt": ex.prompt, "chosen": _assistant(ex.chosen), "rejected": _assistant(ex.rejected)}
            for ex in examples
        ]
    )


def unpaired_dataset(examples: list[Any]) -> Any:
    """KTO's conversational format: prompt turns, one completion turn and a boolean label.

    A preference pair becomes two examples (chosen: desirable, rejected: undesirable), as TRL's
    ``unpair_preference_dataset`` does; unpaired examples pass through.
    """
    from datasets import Dataset

    rows = []
    for ex in examples:
        if ex.kind == "preference":
            rows.append({"prompt": ex.prompt, "completion": _assistant(ex.chosen), "label": True})
            rows.append({"prompt": ex.prompt, "completion": _assistant(ex.rejected), "label": False})
        else:
            rows.append(
                {"prompt": ex.prompt, "completion": _assistant(ex.completion), "label": bool(ex.label)}
            )
    return Dataset.from_list(rows)


class _TrlPreference(Objective):
    """Shared plumbing: TRL config from the run's training options, reference model, cleanup."""

    example_kinds: ClassVar[tuple[str, ...]] = ("preference",)
    tokenized: ClassVar[bool] = False
    validates: ClassVar[bool] = True  # TRL reports eval_loss on the validation split
    #: Whether the loss compares with a frozen reference model (DPO, KTO).
    needs_reference: ClassVar[bool] = False

    def check_method(self, method: Any) -> str | None:
        reference = getattr(self.config, "reference", "auto")
        if reference == "adapter" and not method.produces_adapter:
            return (
                "reference: adapter uses the base model with the PEFT adapter disabled, but this method trains "
                "the model's own weights; use reference: auto (a frozen copy of the model)"
            )
        if reference == "model" and method.produces_adapter:
            return (
                "reference: model keeps a full frozen copy of the model, but with a PEFT method the base model "
                "under the (identity-initialised) adapter is the same reference at no memory cost; use "
                "reference: auto"
            )
        return None

    def max_length(self, ctx: Any) -> int | None:
        """The option, else the smaller of the tokenizer's and the model's position limits."""
        explicit = getattr(self.config, "max_length", None)
        if explicit:
            return int(explicit)
        limits = [
            getattr(ctx.tokenizer, "model_max_length", None),
            getattr(getattr(ctx.model, "config", None), "max_position_embeddings", None),
        ]
        found = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
        return min(found) if found else None

    def args(self, ctx: Any, config_class: Any, **options: Any) -> Any:
        kwargs = ctx.training_kwargs(**options)
        # TRL's own default is True; the core decided (off on CPU). Same value under both names.
        kwargs["gradient_checkpointing"] = kwargs.get("activation_checkpointing", False)
        return config_class(**kwargs)

    def reference_model(self, ctx: Any) -> Any:
        """None for PEFT models (TRL keeps the initial adapter), else a frozen copy (see module docstring)."""
        if not self.needs_reference or _is_peft(ctx.model):
            return None
        import copy

        # Costs one more copy of the weights (not of gradients or optimizer state); see the module docstring.
        reference = copy.deepcopy(ctx.model)
        reference.eval()
        reference.requires_grad_(False)
        return reference

    def before_training(self, ctx: Any, trainer: Any) -> None:
        import torch

        if ctx.device.precision(ctx.training.precision) == "bf16":
            return
        for parameter in trainer.model.parameters():  # QLoRA adapters cast to bf16 by TRL (module docstring)
            if parameter.requires_grad and parameter.dtype == torch.bfloat16:
                parameter.data = parameter.data.to(torch.float32)

    def after_training(self, ctx: Any) -> None:
        model = ctx.model
        if _is_peft(model) and "ref" in model.peft_config and "ref" not in model.active_adapters:
            model.delete_adapter("ref")  # TRL's frozen reference adapter: not part of the artifact

    def run(self, ctx: Any, trainer: Any) -> dict[str, float]:
        trainer = ctx.adopt(trainer)
        self.before_training(ctx, trainer)
        use_cache = getattr(ctx.model.config, "use_cache", None)
        ctx.model.config.use_cache = False
        try:
            result = trainer.train(resume_from_checkpoint=ctx.resume_from)
        finally:
            ctx.model.config.use_cache = use_cache
            self.after_training(ctx)
        return dict(result.metrics)


class Dpo(_TrlPreference):
    """Direct Preference Optimization (Rafailov et al., 2023) with TRL's DPOTrainer.

    Trains on preference pairs to raise the policy's log-likelihood margin of chosen over rejected,
    relative to a frozen reference: loss = -log σ(β·[(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))])
    for loss_type sigmoid. The reference is the model before training: for PEFT methods the base under
    the initial adapter (no extra memory), for full/freeze/adapter a frozen copy (one more copy of the
    weights). Works with every method.
    """

    name = "dpo"
    needs_reference: ClassVar[bool] = True

    @dataclass
    class Config:
        beta: float = option(
            0.1,
            exclusive_minimum=0,
            help="β: strength of the pull towards the reference (higher = stay closer)",
        )
        loss_type: Literal[
            "sigmoid",
            "ipo",
            "hinge",
            "robust",
            "exo_pair",
            "nca_pair",
            "bco_pair",
            "sppo_hard",
            "apo_zero",
            "apo_down",
            "sigmoid_norm",
        ] = option(
            "sigmoid",
            help="sigmoid (DPO), ipo (IPO, per-token averaged), hinge (SLiC), robust, exo_pair, nca_pair, "
            "bco_pair, sppo_hard, apo_zero, apo_down, sigmoid_norm",
        )
        label_smoothing: float = option(
            0.0, help="Assumed fraction of flipped labels (used by robust and exo_pair; in [0, 0.5))"
        )
        reference: Literal["auto", "adapter", "model"] = option(
            "auto",
            help="auto: base under the initial adapter for PEFT methods, else a frozen copy; adapter / model "
            "insist on one of the two (refused where it does not apply)",
        )
        max_length: int | None = option(
            None, help="Truncate prompt+answer to this many tokens (default: the model's position limit)"
        )

    def train(self, ctx: Any) -> dict[str, float]:
        from trl import DPOConfig, DPOTrainer

        c = self.config
        if c.loss_type == "exo_pair" and c.label_smoothing <= 0:
            raise TunesmithError("objective 'dpo': loss_type exo_pair needs label_smoothing > 0 (e.g. 1e-3)")
        args = self.args(
            ctx,
            DPOConfig,
            beta=c.beta,
            loss_type=[c.loss_type],
            label_smoothing=c.label_smoothing,
            max_length=self.max_length(ctx),
        )
        trainer = DPOTrainer(
            model=ctx.model,
            ref_model=self.reference_model(ctx),
            args=args,
            train_dataset=preference_dataset(ctx.train_examples),
            eval_dataset=preference_dataset(ctx.eval_examples) if ctx.eval_examples else None,
            processing_class=ctx.tokenizer,
            callbacks=ctx.callbacks,
        )
        return self.run(ctx, trainer)


class Kto(_TrlPreference):
    """Kahneman-Tversky Optimization (Ethayarajh et al., 2024) with TRL's KTOTrainer.

    Trains on completions labelled desirable or undesirable (the unpaired formatter); preference pairs
    are accepted too, each split into a desirable and an undesirable example. Like DPO it compares with
    a frozen reference (same rules). Needs batch_size ≥ 2: the KL term is estimated from mismatched
    prompt/completion pairs within a batch.
    """

    name = "kto"
    example_kinds: ClassVar[tuple[str, ...]] = ("unpaired", "preference")
    needs_reference: ClassVar[bool] = True

    @dataclass
    class Config:
        beta: float = option(0.1, exclusive_minimum=0, help="β: strength of the pull towards the reference")
        desirable_weight: float = option(1.0, help="Loss weight of desirable examples")
        undesirable_weight: float = option(
            1.0, help="Loss weight of undesirable examples (raise it when they are rarer)"
        )
        reference: Literal["auto", "adapter", "model"] = option(
            "auto",
            help="auto: base under the initial adapter for PEFT methods, else a frozen copy; adapter / model "
            "insist on one of the two (refused where it does not apply)",
        )
        max_length: int | None = option(
            None, help="Truncate prompt+completion to this many tokens (default: the model's position limit)"
        )

    def train(self, ctx: Any) -> dict[str, float]:
        from trl import KTOConfig, KTOTrainer

        if ctx.training.batch_size < 2:
            raise TunesmithError(
                "objective 'kto' needs training.batch_size of at least 2: its KL term is estimated from "
                "mismatched prompt/completion pairs within a batch"
            )
        c = self.config
        args = self.args(
            ctx,
            KTOConfig,
            beta=c.beta,
            desirable_weight=c.desirable_weight,
            undesirable_weight=c.undesirable_weight,
            max_length=self.max_length(ctx),
        )
        trainer = KTOTrainer(
            model=ctx.model,
            ref_model=self.reference_model(ctx),
            args=args,
            train_dataset=unpaired_dataset(ctx.train_examples),
            eval_dataset=unpaired_dataset(ctx.eval_examples) if ctx.eval_examples else None,
            processing_class=ctx.tokenizer,
            callbacks=ctx.callbacks,
        )
        return self.run(ctx, trainer)


class Orpo(_TrlPreference):
    """Odds Ratio Preference Optimization (Hong et al., 2024) with TRL's experimental ORPOTrainer.

    One stage, no reference model: the SFT loss on the chosen answer plus λ times an odds-ratio penalty
    that pushes the odds of chosen above those of rejected. Works with every method.
    """

    name = "orpo"

    @dataclass
    class Config:
        beta: float = option(
            0.1, help="λ in the ORPO paper: weight of the odds-ratio term beside the SFT loss"
        )
        max_length: int | None = option(
            None, help="Truncate prompt+answer to this many tokens (default: the model's position limit)"
        )

    def train(self, ctx: Any) -> dict[str, float]:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = self.args(ctx, ORPOConfig, beta=self.config.beta, max_length=self.max_length(ctx))
        trainer = ORPOTrainer(
            model=ctx.model,
            args=args,
            train_dataset=preference_dataset(ctx.train_examples),
            eval_dataset=preference_dataset(ctx.eval_examples) if ctx.eval_examples else None,
            processing_class=ctx.tokenizer,
            callbacks=ctx.callbacks,
        )
        return self.run(ctx, trainer)


class Simpo(_TrlPreference):
    """Simple Preference Optimization (Meng et al., 2024): TRL's experimental CPOTrainer, loss simpo.

    No reference model: the implicit reward is the length-normalised log-likelihood, and the loss is
    -log σ(β·(avg log π(c) - avg log π(r)) - γ). cpo_alpha > 0 adds CPO's SFT term on the chosen answer
    (0 is pure SimPO). Works with every method.
    """

    name = "simpo"

    @dataclass
    class Config:
        beta: float = option(2.0, help="β: scale of the length-normalised reward")
        gamma: float = option(0.5, help="γ: target reward margin (TRL's simpo_gamma)")
        cpo_alpha: float = option(0.0, help="Weight of the SFT loss on chosen answers (0: pure SimPO)")
        max_length: int | None = option(
            None, help="Truncate prompt+answer to this many tokens (default: the model's position limit)"
        )

    def train(self, ctx: Any) -> dict[str, float]:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        c = self.config
        args = self.args(
            ctx,
            CPOConfig,
            loss_type="simpo",
            beta=c.beta,
            simpo_gamma=c.gamma,
            cpo_alpha=c.cpo_alpha,
            max_length=self.max_length(ctx),
        )
        trainer = CPOTrainer(
            model=ctx.model,
            args=args,
            train_dataset=preference_dataset(ctx.train_examples),
            eval_dataset=preference_dataset(ctx.eval_examples) if ctx.eval_examples else None,
            processing_class=ctx.tokenizer,
            callbacks=ctx.callbacks,
        )
        return self.run(ctx, trainer)


@hookimpl
def register_objectives(register: Register[Objective]) -> None:
    for cls in (Dpo, Orpo, Kto, Simpo):
        register(cls)
