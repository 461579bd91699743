"""IA3 through PEFT: learned per-feature scaling of keys, values and feed-forward activations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tunesmith import Method, PeftMethod, Register, TunesmithError, hookimpl, option


class IA3(PeftMethod):
    """IA3: learn one scaling vector per adapted layer, multiplying its activations (Liu et al., 2022).

    By far the fewest trainable parameters of the additive methods (for a Llama: the key and value
    outputs and the down-projection input of every layer). The vectors start at 1, so training starts
    from the base model. Needs a higher learning rate than LoRA. Saves a PEFT adapter; merges exactly
    into the base weights.
    """

    name = "ia3"
    default_learning_rate: ClassVar[float] = 3e-3
    usual_learning_rates: ClassVar[tuple[float, float]] = (5e-4, 3e-2)

    @dataclass
    class Config:
        target_modules: list[str] | str = option(
            ["k_proj", "v_proj", "down_proj"],
            help="Modules whose activations are scaled (names or a regex); Llama-style defaults",
        )
        feedforward_modules: list[str] | str = option(
            ["down_proj"],
            help="Which of target_modules are feed-forward: their input is scaled instead of their output",
        )
        modules_to_save: list[str] | None = option(
            None, help="Extra modules trained fully and saved with the adapter (e.g. [lm_head])"
        )

    def peft_config(self, model: Any = None) -> Any:
        from peft import IA3Config, TaskType

        c = self.config
        return IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=c.target_modules,
            feedforward_modules=c.feedforward_modules,
            modules_to_save=c.modules_to_save,
        )

    def apply(self, model: Any) -> Any:
        c = self.config
        if isinstance(c.target_modules, list) and isinstance(c.feedforward_modules, list):
            extra = sorted(set(c.feedforward_modules) - set(c.target_modules))
            if extra:
                raise TunesmithError(
                    f"method 'ia3': feedforward_modules {extra} must also be in target_modules {c.target_modules}"
                )
        return super().apply(model)

    def report(self, model: Any) -> tuple[list[str], list[str]]:
        from tunesmith_plugins.methods.targets import coverage

        defaults = self.Config()
        explicit = (self.config.target_modules, self.config.feedforward_modules) != (
            defaults.target_modules,
            defaults.feedforward_modules,
        )
        return coverage(self.name, model, explicit=explicit)


@hookimpl
def register_methods(register: Register[Method]) -> None:
    register(IA3)
