"""Small Hugging Face model helpers that plugins and the engine share.

They answer questions about a loaded model (PEFT-wrapped or not) that several components ask: is it a
reward model, which attribute is its head, which Auto class reloads it, which ids end generation.
transformers is imported inside the functions that need it.
"""

from __future__ import annotations

from typing import Any

#: What an objective's ``model_kind`` loads: the transformers Auto class for each head.
HEADS = {"causal-lm": "AutoModelForCausalLM", "sequence-classification": "AutoModelForSequenceClassification"}


def unwrap(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (the model itself when it is not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_sequence_classifier(model: Any) -> bool:
    """True for a ``...ForSequenceClassification`` model (a reward model), PEFT-wrapped or not."""
    return type(unwrap(model)).__name__.endswith("ForSequenceClassification")


def classification_head(model: Any) -> str | None:
    """The attribute name of a sequence classifier's output head (``score`` for Llama-style models)."""
    inner = unwrap(model)
    return next((name for name in ("score", "classifier") if hasattr(inner, name)), None)


def auto_class_like(model: Any) -> Any:
    """The transformers Auto class that loads a saved copy of ``model`` with the same head."""
    import transformers

    head = "sequence-classification" if is_sequence_classifier(model) else "causal-lm"
    return getattr(transformers, HEADS[head])


def ensure_pad_token_id(model: Any, tokenizer: Any) -> None:
    """Sequence classifiers pool the last non-pad token: they need ``config.pad_token_id`` set."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id


def declared_stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS and the model's declared EOS ids (Gemma, Llama 3 and Phi-3 declare their end-of-turn too)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [declared] if isinstance(declared, int) else list(declared or [])
    return list(dict.fromkeys(ids))


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; uses PEFT's count where it knows about quantised weights."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


__all__ = [
    "HEADS",
    "count_parameters",
    "auto_class_like",
    "classification_head",
    "declared_stop_ids",
    "ensure_pad_token_id",
    "is_sequence_classifier",
    "unwrap",
]
