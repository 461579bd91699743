"""Full fine-tuning: every parameter trains; the artifact is a complete model."""

from __future__ import annotations

from typing import Any, ClassVar

from tunesmith import Method, Register, hookimpl


class Full(Method):
    """Full fine-tuning: update every weight of the model.

    The most expressive and the most memory-hungry method (weights + gradients + AdamW state ≈ 16 bytes
    per parameter in fp32). The run saves a complete model loadable with AutoModelForCausalLM.
    """

    name = "full"
    default_learning_rate: ClassVar[float] = 2e-5
    usual_learning_rates: ClassVar[tuple[float, float]] = (1e-6, 1e-4)
    produces_adapter: ClassVar[bool] = False

    def apply(self, model: Any) -> Any:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def merge(self, model: Any) -> Any:
        return model  # already a plain model

    def load(self, base_model: Any, path: str) -> Any:
        from tunesmith.hf import auto_class_like

        return auto_class_like(base_model).from_pretrained(path, dtype=base_model.dtype)


@hookimpl
def register_methods(register: Register[Method]) -> None:
    register(Full)
