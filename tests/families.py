"""Tiny stand-ins for popular model families: each real chat template (``tunesmith/chat_templates``, see
its SOURCES.md) on a byte-level tokenizer holding the family's special tokens, and a random model of the
family's architecture. Nothing is downloaded: the template text is the family's own, the weights are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.chat import TEMPLATES_DIR

TEMPLATES = TEMPLATES_DIR


@dataclass(frozen=True)
class Family:
    name: str
    template: str  # file stem in TEMPLATES
    architecture: str  # transformers model_type
    bos: str | None
    eos: str
    pad: str | None
    special: tuple[str, ...]  # special tokens besides bos/eos/pad (control tokens)
    plain: tuple[str, ...] = ()  # added tokens that are not special (e.g. <think>)
    end_of_turn: str = ""  # what ends an assistant turn in the template (defaults to eos)
    system_role: bool = True
    thinking: bool = False
    generation_eos: tuple[str, ...] = ()  # what generation_config.eos_token_id lists besides eos
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def turn_end(self) -> str:
        return self.end_of_turn or self.eos


LLAMA3 = ("<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>", "<|end_of_text|>")
CHATML = ("<|im_start|>",)
GEMMA = ("<start_of_turn>", "<end_of_turn>")
THINK = ("<think>", "</think>")
HEAD16 = {"head_dim": 16}

FAMILIES = {
    f.name: f
    for f in [
        Family(
            "llama-3.1",
            "llama-3.1",
            "llama",
            "<|begin_of_text|>",
            "<|eot_id|>",
            None,
            LLAMA3,
            generation_eos=("<|end_of_text|>", "<|eom_id|>"),
        ),
        Family(
            "llama-3.2",
            "llama-3.2",
            "llama",
            "<|begin_of_text|>",
            "<|eot_id|>",
            None,
            LLAMA3,
            generation_eos=("<|end_of_text|>", "<|eom_id|>"),
        ),
        Family("qwen2.5", "qwen2.5", "qwen2", None, "<|im_end|>", "<|endoftext|>", CHATML),
        Family(
            "gemma-3",
            "gemma-3",
            "gemma3_text",
            "<bos>",
            "<eos>",
            "<pad>",
            GEMMA,
            end_of_turn="<end_of_turn>",
            generation_eos=("<end_of_turn>",),
            config={**HEAD16, "query_pre_attn_scalar": 16, "sliding_window": 64},
        ),
        Family("phi-4", "phi-4", "phi3", None, "<|im_end|>", "<|endoftext|>", ("<|im_start|>", "<|im_sep|>")),
        Family("smollm2", "smollm2", "llama", "<|im_start|>", "<|im_end|>", "<|endoftext|>", ()),
        Family(
            "qwen3",
            "qwen3",
            "qwen3",
            None,
            "<|im_end|>",
            "<|endoftext|>",
            CHATML,
            THINK,
            thinking=True,
            config=HEAD16,
        ),
        Family(
            "deepseek-r1-distill",
            "deepseek-r1-distill-qwen",
            "qwen2",
            "<｜begin▁of▁sentence｜>",
            "<｜end▁of▁sentence｜>",
            "<｜▁pad▁｜>",
            (),
            ("<｜User｜>", "<｜Assistant｜>", *THINK),
            thinking=True,
        ),
        Family(
            "phi-3.5",
            "phi-3.5",
            "phi3",
            "<s>",
            "<|endoftext|>",
            "<|endoftext|>",
            ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
            end_of_turn="<|end|>",
            generation_eos=("<|end|>",),
        ),
        Family(
            "mistral-v3", "mistral-v3", "mistral", "<s>", "</s>", None, ("[INST]", "[/INST]"), config=HEAD16
        ),
        Family(
            "gemma-2",
            "gemma-2",
            "gemma2",
            "<bos>",
            "<eos>",
            "<pad>",
            GEMMA,
            end_of_turn="<end_of_turn>",
            system_role=False,
            generation_eos=("<end_of_turn>",),
            config={**HEAD16, "query_pre_attn_scalar": 16, "sliding_window": 64},
        ),
        Family(
            "mixtral",
            "mistral-v0.1",
            "mixtral",
            "<s>",
            "</s>",
            None,
            (),
            system_role=False,
            config={**HEAD16, "num_local_experts": 4, "num_experts_per_tok": 2},
        ),
        Family(
            "qwen3-moe",
            "qwen3",
            "qwen3_moe",
            None,
            "<|im_end|>",
            "<|endoftext|>",
            CHATML,
            THINK,
            thinking=True,
            config={**HEAD16, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
        ),
    ]
}
#: The twelve template families (qwen3-moe shares Qwen3's template).
TEMPLATE_FAMILIES = [name for name in FAMILIES if name != "qwen3-moe"]


def template_text(family: Family) -> str:
    return (TEMPLATES / f"{family.template}.jinja").read_text(encoding="utf-8")


def build_tokenizer(family: Family) -> Any:
    """A byte-level tokenizer with the family's special tokens, ids and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    named = [t for t in (family.pad, family.bos, family.eos) if t]
    specials = list(dict.fromkeys([*named, *family.special, *family.generation_eos, family.turn_end]))
    vocab = {token: i for i, token in enumerate(specials)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    extra = [t for t in specials if t not in named]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        additional_special_tokens=extra,
        model_max_length=4096,
    )
    if family.plain:
        tokenizer.add_tokens(list(family.plain))
    tokenizer.chat_template = template_text(family)
    return tokenizer


def build_model(family: Family, tokenizer: Any, seed: int = 0) -> Any:
    """A random model of the family's architecture (~0.1M parameters) that stops where the family does."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        family.architecture,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.1,
        **family.config,
    )
    model = AutoModelForCausalLM.from_config(config)
    stops = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(list(family.generation_eos))]
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_family(family: Family, path: Path, seed: int = 0) -> Path:
    """The family's tokenizer and random model saved like a hub checkpoint."""
    tokenizer = build_tokenizer(family)
    build_model(family, tokenizer, seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
