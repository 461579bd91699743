"""Loading base models and tokenizers from a Hugging Face id or a local directory, on the run's device.

Which directory that is (a model provider's, a finished run's merge) is the pipeline's business; this
module only loads.
"""

from __future__ import annotations

from typing import Any

from tunesmith.contexts import Device
from tunesmith.errors import TunesmithError
from tunesmith.hf import HEADS
from tunesmith.schema import ModelConfig

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


def load_base_model(
    cfg: ModelConfig, path: str, device: Device, *, precision: str, method: Any, head: str
) -> Any:
    """The base model as a run trains or evaluates it: the run's dtype, loaded the method's way
    (``model_load_kwargs``: 4-bit for QLoRA) with the objective's head, then on the run's device.

    Quantised or device-mapped models are placed while loading and never moved with ``.to()``.
    """
    model = load_model(
        cfg, path, dtype=torch_dtype(cfg, precision), extra=method.model_load_kwargs(device.type), head=head
    )
    if (
        device.type != "cpu"
        and not getattr(model, "hf_device_map", None)
        and not getattr(model, "is_quantized", False)
    ):
        model.to(device.type)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
