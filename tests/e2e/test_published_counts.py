"""Trainable-parameter counts on real model shapes, checked against published figures.

The models are built on the ``meta`` device from their configs: shapes only, no weights, no download,
so a 7B model costs about a second. The counts come from the ``lora`` method plugin and
``tunesmith.training.count_parameters`` (what a run prints).
"""

from __future__ import annotations

import pytest

from tunesmith.hf import count_parameters
from tunesmith_plugins.methods.lora import Lora

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def on_meta(model_class, config):
    with torch.device("meta"):
        return model_class(config)


def llama2_7b():
    return transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


def llama3_8b():
    return transformers.LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    )


def qwen25_3b():
    return transformers.Qwen2Config(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )


def lora_counts(model, **options) -> tuple[int, int]:
    return count_parameters(Lora(Lora.Config(**options)).apply(model))


def test_llama2_7b_lora_r8_q_v_matches_peft():
    """PEFT prints `trainable params: 4,194,304 || all params: 6,742,609,920` for this setup."""
    model = on_meta(transformers.LlamaForCausalLM, llama2_7b())
    counts = lora_counts(model, r=8, alpha=16, target_modules=["q_proj", "v_proj"])
    assert counts == (4_194_304, 6_742_609_920)


def test_qwen25_3b_lora_r16_q_v_matches_the_peft_readme():
    """PEFT's README: Qwen/Qwen2.5-3B-Instruct with LoraConfig(r=16, lora_alpha=32) on its default
    targets (q_proj, v_proj) prints `trainable params: 3,686,400 || all params: 3,089,625,088`."""
    model = on_meta(transformers.Qwen2ForCausalLM, qwen25_3b())
    counts = lora_counts(model, r=16, alpha=32, target_modules=["q_proj", "v_proj"])
    assert counts == (3_686_400, 3_089_625_088)


def base_llama_count(c) -> int:
    """Parameters of a Llama from its config: embeddings, attention (GQA), SwiGLU MLP, RMSNorms."""
    head_dim = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    attention = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv
    mlp = 3 * c.hidden_size * c.intermediate_size
    layer = attention + mlp + 2 * c.hidden_size
    embeddings = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
    return embeddings + c.num_hidden_layers * layer + c.hidden_size


def lora_llama_count(c, r: int) -> int:
    """LoRA on every linear layer but lm_head: r * (in + out) each."""
    head_dim = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    h, i = c.hidden_size, c.intermediate_size
    per_layer = (h + h) + (h + kv) + (h + kv) + (h + h) + 2 * (h + i) + (i + h)
    return c.num_hidden_layers * r * per_layer


@pytest.mark.parametrize("make_config", [llama2_7b, llama3_8b], ids=["llama2-7b", "llama3-8b"])
def test_all_linear_lora_matches_the_formula(make_config):
    config = make_config()
    model = on_meta(transformers.LlamaForCausalLM, config)
    base = base_llama_count(config)
    trainable, total = lora_counts(model, r=16, target_modules="all-linear")
    assert trainable == lora_llama_count(config, 16)
    assert total == base + trainable


def test_the_formula_reproduces_the_published_base_sizes():
    assert base_llama_count(llama2_7b()) == 6_738_415_616  # Llama-2-7B
    assert base_llama_count(llama3_8b()) == 8_030_261_248  # Llama-3-8B
    assert lora_llama_count(llama3_8b(), 16) == 41_943_040
