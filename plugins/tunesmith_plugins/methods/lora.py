"""LoRA through PEFT: low-rank updates beside frozen weights; the artifact is a stock PEFT adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tunesmith import Method, hookimpl, option


class Lora(Method):
    """LoRA: train low-rank matrices A·B added to frozen linear layers (Hu et al., 2021).

    Saves a PEFT adapter (adapter_config.json + adapter_model.safetensors) that loads with
    PeftModel.from_pretrained and merges into the base weights with `tunesmith merge`.
    """

    name = "lora"
    default_learning_rate: ClassVar[float] = 2e-4
    usual_learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-3)

    @dataclass
    class Config:
        r: int = option(16, help="Rank of the update matrices")
        alpha: int = option(32, help="Scaling numerator: updates are scaled by alpha / r")
        dropout: float = option(0.05, help="Dropout on the LoRA input")
        target_modules: list[str] | str = option(
            "all-linear",
            help="Modules to adapt: 'all-linear' or a list of names/regex (e.g. [q_proj, v_proj])",
        )
        bias: str = option("none", help="Train biases too: none, all or lora_only")
        use_rslora: bool = option(False, help="Rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski, 2023)")
        modules_to_save: list[str] | None = option(
            None, help="Extra modules trained fully and saved with the adapter (e.g. [lm_head, embed_tokens])"
        )

    def peft_config(self, model: Any = None) -> Any:
        """The PEFT config; for a sequence classifier (a reward model) the task is SEQ_CLS and the new,
        randomly initialised head (``score``) trains fully and is saved with the adapter."""
        from peft import LoraConfig, TaskType

        from tunesmith.models import classification_head, is_sequence_classifier

        c = self.config
        task_type, modules_to_save = TaskType.CAUSAL_LM, c.modules_to_save
        if model is not None and is_sequence_classifier(model):
            task_type = TaskType.SEQ_CLS
            head = classification_head(model)
            if head and head not in (modules_to_save or []):
                modules_to_save = [*(modules_to_save or []), head]
        return LoraConfig(
            task_type=task_type,
            r=c.r,
            lora_alpha=c.alpha,
            lora_dropout=c.dropout,
            target_modules=c.target_modules,
            bias=c.bias,
            use_rslora=c.use_rslora,
            modules_to_save=modules_to_save,
        )

    def apply(self, model: Any) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model))

    def load(self, base_model: Any, path: str) -> Any:
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, path)

    def merge(self, model: Any) -> Any:
        return model.merge_and_unload()


@hookimpl
def register_methods(register):
    register(Lora)
