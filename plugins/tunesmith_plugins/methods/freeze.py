"""Freeze tuning: train only chosen parameters of the model; the artifact is a complete model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from tunesmith import Method, Register, TunesmithError, hookimpl, option


class Freeze(Method):
    """Freeze tuning: train only the parameters you choose, keep the rest frozen.

    Choose by name (`trainable`: names or regexes searched in parameter names, e.g. `layers\\.(2|3)\\.`
    or `lm_head`), by kind (`train_embeddings`, `train_norms`), or by depth (`last_n_layers`: the last
    n decoder layers; a negative n means the first |n|, like LLaMA-Factory's freeze_trainable_layers).
    The selections add up. Gradients and optimizer state are needed only for what trains. With tied
    input/output embeddings, selecting `lm_head` trains the shared embedding matrix. The run saves a
    complete model loadable with AutoModelForCausalLM.
    """

    name = "freeze"
    default_learning_rate: ClassVar[float] = 5e-5
    usual_learning_rates: ClassVar[tuple[float, float]] = (1e-6, 5e-4)
    produces_adapter: ClassVar[bool] = False

    @dataclass
    class Config:
        trainable: list[str] = option(
            [],
            help="Parameter names or regexes (searched, not anchored) to train, e.g. [lm_head, 'layers\\.3\\.']",
        )
        train_embeddings: bool = option(False, help="Train the input embeddings (and a tied output layer)")
        train_norms: bool = option(False, help="Train every normalisation layer's weights")
        last_n_layers: int | None = option(
            None, help="Train the last n decoder layers (negative: the first |n|); null = none by depth"
        )

    def selected(self, model: Any) -> set[str]:
        """Names (as ``named_parameters(remove_duplicate=False)`` gives them) of the parameters to train."""
        c = self.config
        names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
        chosen: set[str] = set()
        for pattern in c.trainable:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise TunesmithError(
                    f"method 'freeze': trainable pattern {pattern!r} is not a regex: {exc}"
                ) from None
            chosen.update(n for n in names if regex.search(n))
        if c.train_embeddings:
            embedding = model.get_input_embeddings()
            chosen.update(_names_of(model, {id(p) for p in embedding.parameters()}))
        if c.train_norms:
            norm_params = {
                id(p)
                for module in model.modules()
                if "norm" in type(module).__name__.lower()
                for p in module.parameters(recurse=False)
            }
            chosen.update(_names_of(model, norm_params))
        if c.last_n_layers:
            prefix, count = _decoder_layers(model)
            n = c.last_n_layers
            if abs(n) > count:
                raise TunesmithError(f"method 'freeze': last_n_layers={n} but the model has {count} layers")
            indices = range(count - n, count) if n > 0 else range(-n)
            wanted = tuple(f"{prefix}.{i}." for i in indices)
            chosen.update(name for name in names if name.startswith(wanted))
        return chosen

    def apply(self, model: Any) -> Any:
        chosen = self.selected(model)
        if not chosen:
            names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
            shown = names if len(names) <= 12 else [*names[:8], "...", *names[-4:]]
            raise TunesmithError(
                "method 'freeze' selects no parameter: set trainable (names/regexes), train_embeddings, "
                "train_norms or last_n_layers",
                details=[f"the model's parameters include: {', '.join(shown)}"],
            )
        chosen_ids = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in chosen}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in chosen_ids)
        return model

    def merge(self, model: Any) -> Any:
        return model  # already a plain model

    def load(self, base_model: Any, path: str) -> Any:
        from tunesmith.hf import auto_class_like

        return auto_class_like(base_model).from_pretrained(path, dtype=base_model.dtype)


def _names_of(model: Any, ids: set[int]) -> list[str]:
    return [n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in ids]


def _decoder_layers(model: Any) -> tuple[str, int]:
    """The dotted name of the model's list of decoder layers (the longest ModuleList) and its length."""
    import torch

    lists = [
        (name, len(m)) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and name
    ]
    if not lists:
        raise TunesmithError("method 'freeze': last_n_layers needs a model with a list of layers; none found")
    return max(lists, key=lambda item: item[1])


@hookimpl
def register_methods(register: Register[Method]) -> None:
    register(Freeze)
