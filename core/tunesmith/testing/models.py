"""A tiny random Llama and its tokenizer, built locally in milliseconds: the model the kits test on.

The tokenizer is byte-level with no merges (one token per UTF-8 byte) plus a few special tokens and a
chat template, so it is deterministic. The built-in ``tiny`` demo model (a plugin) is this model
pre-trained; plugin tests use the random one.
"""

from __future__ import annotations

from typing import Any

BOS, EOS, PAD = "<s>", "<|end|>", "<pad>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, *ROLE_TOKENS]

# Each turn: role marker, newline, content, end-of-turn. The assistant's content plus <|end|> is what
# a model learns to produce, so generation stops at <|end|> (the EOS token).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|end|>' }}"
    "{% endgeneration %}{% else %}"
    "{{ message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def build_tokenizer() -> Any:
    """A byte-level tokenizer (vocab = special tokens + 256 bytes) with the tiny chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in alphabet:
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        model_max_length=2048,
        padding_side="right",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_config(tokenizer: Any, **overrides: Any) -> Any:
    """A small Llama config sized for CPU: ~1M parameters by default."""
    from transformers import LlamaConfig

    values: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def build_random_model(tokenizer: Any, seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised tiny Llama, deterministic from ``seed`` (for tests)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(build_config(tokenizer, **overrides))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "EOS",
    "PAD",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "build_config",
    "build_random_model",
    "build_tokenizer",
]
