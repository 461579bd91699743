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

    def peft_config(self) -> Any:
        from peft import LoraConfig, TaskType

        c = self.config
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=c.r,
            lora_alpha=c.alpha,
            lora_dropout=c.dropout,
            target_modules=c.target_modules,
            bias=c.bias,
            use_rslora=c.use_rslora,
            modules_to_save=c.modules_to_save,
        )

    def apply(self, model: Any) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config())

    def load(self, base_model: Any, path: str) -> Any:
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, path)

    def merge(self, model: Any) -> Any:
        return model.merge_and_unload()


@hookimpl
def register_methods(register):
    register(Lora)
