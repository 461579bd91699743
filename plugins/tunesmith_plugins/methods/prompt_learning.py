"""Prompt learning through PEFT: prefix tuning, prompt tuning and P-tuning (learned virtual tokens).

Generation fix
--------------
With transformers 5 and PEFT 0.21, ``PeftModelForCausalLM.generate()`` silently ignores what these
methods learned once the KV cache is on. transformers 5 renamed the generation cache argument from
``past_key_values`` to ``cache`` and stopped creating ``cache_position``
(``GenerationMixin.prepare_inputs_for_generation`` returns ``model_inputs["cache"]``). PEFT's
``PeftModelForCausalLM.prepare_inputs_for_generation`` still looks for ``past_key_values`` and
``cache_position``, so it never sees the cache and believes every step is the first:

- prefix tuning: it builds the prefix and passes it as ``past_key_values`` beside transformers' own
  (empty) ``cache``; the model's ``@deprecate_kwarg("past_key_values", new_name="cache")`` keeps
  ``cache`` and drops the prefix (the only trace is the warning "Both `past_key_values` and `cache` are
  set"). The output is exactly the base model's.
- prompt / P-tuning: the virtual-token embeddings are prepended again at every decoding step (the cache
  grows by ``num_virtual_tokens + 1`` per token) and the position ids are thrown away (so left padding
  shifts every row's positions).

:class:`PromptLearningModel` is ``PeftModelForCausalLM`` with a corrected
``prepare_inputs_for_generation``: the prefix goes into the generation cache on the first step, virtual
embeddings are prepended on the first step only, the attention mask gains the virtual tokens' columns,
and position ids are offset by the number of virtual tokens (as in training, where the virtual tokens
occupy positions ``0..n-1``). ``apply`` and ``load`` switch the PEFT model to it; nothing global is
patched and the saved adapter is the stock PEFT one. It also trims the virtual tokens' rows from the
logits of prompt/P-tuning forward passes, so logits line up with ``input_ids`` as for every other
method (the loss, computed inside, is unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tunesmith import Method, PeftMethod, Register, TunesmithError, hookimpl, option


class _PromptLearning(PeftMethod):
    """Shared behaviour: the PEFT model gets the generation fix (see the module docstring)."""

    def wrapped(self, peft_model: Any) -> Any:
        return fix_generation(peft_model)

    def merge(self, model: Any) -> Any:
        return Method.merge(self, model)  # virtual tokens have no weights to fold in


class PrefixTuning(_PromptLearning):
    """Prefix tuning: learn key/value vectors prepended to every attention layer (Li & Liang, 2021).

    Each layer attends to `num_virtual_tokens` learned keys and values before the real tokens; the
    base weights stay frozen. With `prefix_projection` the prefix is produced by a small MLP during
    training (more stable, more parameters while training). Saves a PEFT adapter; cannot be merged.
    """

    name = "prefix-tuning"
    default_learning_rate: ClassVar[float] = 1e-2
    usual_learning_rates: ClassVar[tuple[float, float]] = (1e-4, 5e-2)

    @dataclass
    class Config:
        num_virtual_tokens: int = option(16, minimum=1, help="Length of the learned prefix, per layer")
        prefix_projection: bool = option(
            False, help="Re-parameterise the prefix through an MLP while training"
        )
        encoder_hidden_size: int | None = option(
            None, help="Hidden size of the projection MLP (default: the key/value width per layer)"
        )

    def peft_config(self, model: Any = None) -> Any:
        from peft import PrefixTuningConfig, TaskType

        c = self.config
        kwargs: dict[str, Any] = {}
        if c.encoder_hidden_size is not None:
            kwargs["encoder_hidden_size"] = c.encoder_hidden_size
        return PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=c.num_virtual_tokens,
            prefix_projection=c.prefix_projection,
            **kwargs,
        )


class PromptTuning(_PromptLearning):
    """Prompt tuning: learn `num_virtual_tokens` input embeddings placed before the prompt
    (Lester et al., 2021).

    The cheapest method: only the virtual embeddings train. Initialise them randomly, from the
    embeddings of `init_text` (`init: text`; the tokenizer is read from the model's directory unless
    `tokenizer` names one), or from random vocabulary tokens (`init: sample-vocab`). Saves a PEFT
    adapter; cannot be merged.
    """

    name = "prompt-tuning"
    default_learning_rate: ClassVar[float] = 3e-2
    usual_learning_rates: ClassVar[tuple[float, float]] = (1e-3, 3e-1)

    @dataclass
    class Config:
        num_virtual_tokens: int = option(16, minimum=1, help="Number of learned virtual tokens")
        init: Literal["random", "text", "sample-vocab"] = option(
            "random",
            help="Initialise randomly, from init_text's embeddings, or from random vocabulary tokens",
        )
        init_text: str | None = option(
            None, help="Text whose token embeddings initialise the prompt (init: text)"
        )
        tokenizer: str | None = option(
            None, help="Tokenizer for init_text (default: the base model's own directory)"
        )

    def peft_config(self, model: Any = None) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        c = self.config
        kwargs: dict[str, Any] = {}
        if c.init == "text":
            if not c.init_text:
                raise TunesmithError("method 'prompt-tuning': init: text needs init_text")
            tokenizer = c.tokenizer or (getattr(model, "name_or_path", "") if model is not None else "")
            if not tokenizer:
                raise TunesmithError(
                    "method 'prompt-tuning': init: text needs a tokenizer; this model has no directory, "
                    "so set the tokenizer option"
                )
            kwargs.update(prompt_tuning_init_text=c.init_text, tokenizer_name_or_path=str(tokenizer))
        init = {
            "random": PromptTuningInit.RANDOM,
            "text": PromptTuningInit.TEXT,
            "sample-vocab": PromptTuningInit.SAMPLE_VOCAB,
        }[c.init]
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=c.num_virtual_tokens,
            prompt_tuning_init=init,
            **kwargs,
        )


class PTuning(_PromptLearning):
    """P-tuning: virtual token embeddings produced by a small trained encoder (MLP or LSTM)
    (Liu et al., 2021, "GPT Understands, Too").

    Like prompt tuning, but the virtual tokens come out of a prompt encoder, which trains more stably.
    The saved adapter holds the encoder's output, so inference costs the same as prompt tuning. Saves
    a PEFT adapter; cannot be merged.
    """

    name = "p-tuning"
    default_learning_rate: ClassVar[float] = 1e-3
    usual_learning_rates: ClassVar[tuple[float, float]] = (1e-4, 3e-2)

    @dataclass
    class Config:
        num_virtual_tokens: int = option(16, minimum=1, help="Number of learned virtual tokens")
        encoder: Literal["mlp", "lstm"] = option("mlp", help="Prompt encoder: an MLP or a bidirectional LSTM")
        encoder_hidden_size: int = option(128, help="Hidden size of the prompt encoder")
        encoder_num_layers: int = option(2, help="Layers of the prompt encoder (LSTM only)")
        encoder_dropout: float = option(0.0, help="Dropout in the prompt encoder")

    def peft_config(self, model: Any = None) -> Any:
        from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, TaskType

        c = self.config
        return PromptEncoderConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=c.num_virtual_tokens,
            encoder_reparameterization_type=PromptEncoderReparameterizationType(c.encoder.upper()),
            encoder_hidden_size=c.encoder_hidden_size,
            encoder_num_layers=c.encoder_num_layers,
            encoder_dropout=c.encoder_dropout,
        )


# ----------------------------------------------------------------------------------- the fix

_FIXED_CLASS: list[type] = []


def fix_generation(model: Any) -> Any:
    """Switch a prompt-learning ``PeftModelForCausalLM`` to :class:`PromptLearningModel` (in place)."""
    from peft import PeftModelForCausalLM

    if isinstance(model, PeftModelForCausalLM) and model.active_peft_config.is_prompt_learning:
        model.__class__ = prompt_learning_model_class()
    return model


def prompt_learning_model_class() -> type:
    """:class:`PromptLearningModel`, built on first use so that importing this module stays cheap."""
    if not _FIXED_CLASS:
        _FIXED_CLASS.append(_build_class())
    return _FIXED_CLASS[0]


def _build_class() -> type:
    import inspect

    import torch
    from peft import PeftModelForCausalLM
    from peft.utils import PeftType

    prefix_types = {PeftType.PREFIX_TUNING}

    class PromptLearningModel(PeftModelForCausalLM):
        """``PeftModelForCausalLM`` whose generation feeds the virtual tokens correctly (transformers 5)."""

        def forward(self, input_ids: Any = None, *args: Any, **kwargs: Any) -> Any:
            out = super().forward(input_ids, *args, **kwargs)
            config = self.active_peft_config
            logits = getattr(out, "logits", None)
            if config.peft_type not in prefix_types and logits is not None:
                given = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
                n = config.num_virtual_tokens
                if given is not None and logits.shape[1] == given.shape[1] + n:
                    out["logits"] = logits[:, n:]
            return out

        # peft assigns prepare_inputs_for_generation from a Module attribute, so mypy infers Tensor | Module
        def prepare_inputs_for_generation(  # type: ignore[override]
            self, *args: Any, task_ids: Any = None, **kwargs: Any
        ) -> Any:
            config = self.active_peft_config
            n = config.num_virtual_tokens
            # peft's attribute is typed Tensor | Module (from nn.Module.__getattr__); it is the base's method
            inputs = self.base_model_prepare_inputs_for_generation(*args, **kwargs)  # type: ignore[operator]
            cache_key = _cache_argument(self.get_base_model())
            cache = inputs.get("cache", inputs.get("past_key_values"))
            if inputs.get("use_cache", kwargs.get("use_cache")) is False:
                # No cache: every step is a full forward pass over all tokens, so every step is "first".
                # (The model may still hand back a cache from the previous step; it must not be reused.)
                inputs.pop("cache", None)
                inputs.pop("past_key_values", None)
                cache = None
            first_step = cache is None or cache.get_seq_length() == 0

            ids = inputs.get("input_ids")
            embeds = inputs.get("inputs_embeds")
            batch = (ids if ids is not None else embeds).shape[0]
            device = (ids if ids is not None else embeds).device

            mask = inputs.get("attention_mask")
            if mask is not None:
                if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
                    raise TunesmithError(
                        f"method '{config.peft_type.value.lower()}': generation with a compiled/static cache "
                        "(4D attention mask) is not supported; use the default dynamic cache"
                    )
                inputs["attention_mask"] = torch.cat([mask.new_ones(batch, n), mask], dim=1)
            positions = inputs.get("position_ids")
            if positions is not None:
                positions = positions + n  # training puts the virtual tokens at positions 0..n-1
            inputs.pop("token_type_ids", None)

            if config.peft_type in prefix_types:
                if first_step:
                    prefix = self.get_prompt(batch_size=batch)
                    if cache is not None:  # fill transformers' own cache object in place
                        # peft annotates get_prompt -> Tensor; for prefix tuning it returns a transformers Cache
                        for layer_idx, layer in enumerate(prefix.layers):  # type: ignore[attr-defined]
                            cache.update(layer.keys, layer.values, layer_idx)
                    else:  # use_cache=False: a fresh prefix for this full forward pass
                        inputs.pop("past_key_values", None)
                        inputs[cache_key] = prefix
            elif first_step:
                if embeds is None:
                    # peft found the embeddings when it built the prompt encoder
                    assert self.word_embeddings is not None
                    embeds = self.word_embeddings(ids)
                prompts = self.get_prompt(batch_size=batch, task_ids=task_ids).to(embeds.dtype)
                inputs["inputs_embeds"] = torch.cat([prompts, embeds], dim=1)
                inputs["input_ids"] = None
                if positions is not None:
                    virtual = torch.arange(n, device=device, dtype=positions.dtype).expand(batch, n)
                    positions = torch.cat([virtual, positions], dim=1)
            if positions is not None:
                inputs["position_ids"] = positions
            return inputs

    PromptLearningModel.__module__ = __name__
    PromptLearningModel.__qualname__ = "PromptLearningModel"

    def _cache_argument(base: Any) -> str:
        """``cache`` (transformers ≥ 5) or ``past_key_values`` (older), as the base model's forward names it."""
        parameters = inspect.signature(type(base).forward).parameters
        return "cache" if "cache" in parameters else "past_key_values"

    return PromptLearningModel


@hookimpl
def register_methods(register: Register[Method]) -> None:
    register(PrefixTuning)
    register(PromptTuning)
    register(PTuning)
