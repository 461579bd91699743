"""Loading base models and tokenizers: any Hugging Face id or local path, or the built-in ``tiny``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.config import ModelConfig
from tunesmith.errors import TunesmithError

TINY = "tiny"

# Used only when a tokenizer ships without a chat template (base models such as Llama-2-7b): a
# ChatML-style layout ending each assistant turn with the tokenizer's EOS so the model learns to stop.
# It is saved with the run's tokenizer, so inference renders prompts exactly as training did.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def model_path(cfg: ModelConfig, log: Any = None, plugins: Any = None) -> str:
    """The directory or hub id to load.

    ``tiny`` builds (once, cached) the built-in tiny model. A tunesmith run directory means "continue
    from that run": its trained weights merged into its base (cached in ``RUN/merged``), e.g. DPO after SFT.
    """
    if cfg.path == TINY:
        from tunesmith.tiny import ensure_tiny_model

        return str(ensure_tiny_model(log=log))
    if (Path(cfg.path) / "run.json").is_file():
        from tunesmith.inference import merged_model_dir
        from tunesmith.plugins import Plugins

        return str(merged_model_dir(Path(cfg.path), plugins or Plugins(), log=log))
    return cfg.path


def load_tokenizer(cfg: ModelConfig, path: str, chat_template: str | None = None) -> tuple[Any, list[str]]:
    """The tokenizer with a pad token and a chat template; returns it with notes worth showing.

    ``chat_template`` (``template.chat_template``: a built-in name, file or inline Jinja) replaces the
    tokenizer's own; the run saves the tokenizer, so inference renders with the same template.
    """
    from transformers import AutoTokenizer

    notes = []
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise TunesmithError(f"cannot load the tokenizer of '{cfg.path}': {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        # Padding is always masked out (labels -100 / separate segments), so EOS is a safe pad.
        tokenizer.pad_token = tokenizer.eos_token
        notes.append("the tokenizer has no pad token: using its EOS token for padding")
    if chat_template:
        from tunesmith.chat import resolve_template

        tokenizer.chat_template = resolve_template(chat_template)
    elif not tokenizer.chat_template:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        notes.append("the tokenizer has no chat template: using a ChatML-style one (saved with the run)")
    return tokenizer, notes


def torch_dtype(cfg: ModelConfig, precision: str) -> Any:
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if cfg.dtype != "auto":
        return names[cfg.dtype]
    return {"bf16": torch.bfloat16, "fp16": torch.float32}.get(precision, torch.float32)


HEADS = {"causal-lm": "AutoModelForCausalLM", "sequence-classification": "AutoModelForSequenceClassification"}


def load_model(
    cfg: ModelConfig, path: str, *, dtype: Any, extra: dict[str, Any] | None = None, head: str = "causal-lm"
) -> Any:
    """``from_pretrained`` with the run's dtype and the method's extra arguments.

    ``head`` is the objective's ``model_kind``: a causal LM, or a sequence classifier with one output
    (a reward model) whose new head is initialised by transformers.
    """
    import transformers

    auto = getattr(transformers, HEADS[head])
    kwargs: dict[str, Any] = dict(
        revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, dtype=dtype, **(extra or {})
    )
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if head == "sequence-classification":
        kwargs["num_labels"] = 1
    try:
        model = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise TunesmithError(f"cannot load model '{cfg.path}': {_first_line(exc)}") from None
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_sequence_classifier(model: Any) -> bool:
    """True for a ``...ForSequenceClassification`` model (a reward model), PEFT-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(inner).__name__.endswith("ForSequenceClassification")


def classification_head(model: Any) -> str | None:
    """The attribute name of a sequence classifier's output head (``score`` for Llama-style models)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
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
