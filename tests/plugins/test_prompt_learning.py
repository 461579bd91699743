"""Prefix tuning, prompt tuning and P-tuning: what only these methods promise.

Training, save/load, generation against teacher forcing and "cannot merge" are the conformance
suite's (``tests/plugins/test_conformance.py``, which also proves the suite catches stock PEFT's
generation bug; the classes below add option combinations). Here: exact trainable counts, that the
artifact is stock PEFT, and the generation fix itself. The regression guarded (see
``tunesmith_plugins.methods.prompt_learning``): with transformers 5, stock
``PeftModelForCausalLM.generate(use_cache=True)`` ignores the learned virtual tokens (prefix tuning
returns the base model's tokens; prompt/P-tuning re-insert the virtual tokens at every step and lose
the position ids).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from tunesmith.testing import MethodConformance  # noqa: E402
from tunesmith.testing.models import build_random_model, build_tokenizer  # noqa: E402
from tunesmith_plugins.methods.prompt_learning import (  # noqa: E402
    PrefixTuning,
    PromptTuning,
    PTuning,
    fix_generation,
)

# The tiny Llama: hidden 128, 4 layers, 4 heads of 32, 2 KV heads, vocab 262.
HIDDEN, LAYERS, KV_DIM = 128, 4, 2 * 32
N_VIRTUAL = 8
PROMPTS = ["The cat sat", "A dog", "Bees buzz near the hive", "x"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def randomize(model, seed=1):
    """Give the virtual-token parameters random values: a stand-in for a trained prompt."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def generate(model, tokenizer, use_cache=True, new=8):
    """Greedy generation for PROMPTS, batched with left padding: (new tokens, raw logits per step)."""
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = "right"
    out = model.generate(
        **enc,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=tokenizer.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[:, enc["input_ids"].shape[1] :].tolist()
    return tokens, torch.stack(out.logits, dim=1)  # [batch, new, vocab]


def teacher_forced(model, tokenizer, generated):
    """For each prompt alone (no padding), the logits predicting each generated token."""
    rows = []
    with torch.no_grad():
        for prompt, tokens in zip(PROMPTS, generated, strict=True):
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            seq = torch.tensor([ids + tokens])
            logits = model(input_ids=seq).logits  # aligned with input_ids (virtual rows trimmed)
            assert logits.shape[1] == seq.shape[1]
            rows.append(logits[0, len(ids) - 1 : -1])
    return torch.stack(rows)


def assert_matches_teacher_forcing(model, tokenizer, use_cache=True):
    tokens, logits = generate(model, tokenizer, use_cache=use_cache)
    expected = teacher_forced(model, tokenizer, tokens)
    assert tokens == expected.argmax(-1).tolist()
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    return tokens, logits


def stock_generate(model, tokenizer):
    """The same model through PEFT's own (unfixed) generation path."""
    fixed = type(model)
    model.__class__ = peft.PeftModelForCausalLM
    try:
        return generate(model, tokenizer)
    finally:
        model.__class__ = fixed


CASES = {
    # method, options, expected trainable count (computed from the tiny config)
    "prefix-tuning": (PrefixTuning, {}, N_VIRTUAL * LAYERS * 2 * KV_DIM),
    "prefix-projection": (
        PrefixTuning,
        {"prefix_projection": True, "encoder_hidden_size": 32},
        # embedding (kv width: PEFT sizes the prefix for grouped-query attention) + Linear(64→32)
        # + Linear(32→layers·2·kv_dim)
        N_VIRTUAL * KV_DIM + (KV_DIM * 32 + 32) + (32 * LAYERS * 2 * KV_DIM + LAYERS * 2 * KV_DIM),
    ),
    "prompt-tuning": (PromptTuning, {}, N_VIRTUAL * HIDDEN),
    # embedding + MLP Linear(128→64), Linear(64→64), Linear(64→128)
    "p-tuning": (
        PTuning,
        {"encoder_hidden_size": 64},
        N_VIRTUAL * HIDDEN + (HIDDEN * 64 + 64) + (64 * 64 + 64) + (64 * HIDDEN + HIDDEN),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trainable_count(case, tokenizer):
    cls, options, expected = CASES[case]
    method = cls(cls.Config(num_virtual_tokens=N_VIRTUAL, **options))
    assert trainable(method.apply(build_random_model(tokenizer, seed=0))) == expected


@pytest.mark.parametrize("case", list(CASES))
def test_the_artifact_is_stock_peft_and_the_fix_repairs_its_generation(case, tokenizer, tmp_path):
    cls, options, _ = CASES[case]
    method = cls(cls.Config(num_virtual_tokens=N_VIRTUAL, **options))
    model = randomize(method.apply(build_random_model(tokenizer, seed=0)))
    fixed, fixed_logits = assert_matches_teacher_forcing(model, tokenizer)
    assert_matches_teacher_forcing(model, tokenizer, use_cache=False)
    # Without the fix the learned tokens are lost or misplaced: stock PEFT's step logits differ.
    _, stock_logits = stock_generate(model, tokenizer)
    assert (stock_logits - fixed_logits).abs().max() > 1e-2

    method.save(model, str(tmp_path))
    assert (tmp_path / "adapter_config.json").exists()
    stock = peft.PeftModel.from_pretrained(build_random_model(tokenizer, seed=0), str(tmp_path))
    assert type(stock) is peft.PeftModelForCausalLM  # loading needs nothing from tunesmith
    stock.eval()
    probe = tokenizer(PROMPTS[2], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = model(input_ids=probe).logits
        logits = stock(input_ids=probe).logits
    # Stock PEFT returns the virtual tokens' rows too for prompt/P-tuning; ours trims them.
    torch.testing.assert_close(logits[:, logits.shape[1] - probe.shape[1] :], want, atol=1e-6, rtol=0)
    assert generate(fix_generation(stock), tokenizer)[0] == fixed  # the fix applies to a stock load too


class TestPrefixProjection(MethodConformance):
    method = PrefixTuning
    options = {"num_virtual_tokens": 4, "prefix_projection": True, "encoder_hidden_size": 32}


def test_prefix_stock_generate_drops_the_prefix(tokenizer):
    """The root cause, visible: stock PEFT passes the prefix as `past_key_values` beside transformers'
    own `cache`, and the model keeps `cache` (warning) — the fixed path passes one cache only."""
    import warnings

    method = PrefixTuning(PrefixTuning.Config(num_virtual_tokens=N_VIRTUAL))
    model = method.apply(build_random_model(tokenizer, seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stock_generate(model, tokenizer)
    assert any("Both `past_key_values` and `cache` are set" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(model, tokenizer)
    assert not any("past_key_values" in str(w.message) for w in caught)


def test_prompt_tuning_text_init(tokenizer, tmp_path):
    model = build_random_model(tokenizer, seed=0)
    tokenizer.save_pretrained(tmp_path)
    method = PromptTuning(PromptTuning.Config(num_virtual_tokens=6, init="text", init_text="abc"))
    method.config.tokenizer = str(tmp_path)
    wrapped = method.apply(model)
    ids = tokenizer("abcabc", add_special_tokens=False)["input_ids"]
    expected = model.get_input_embeddings().weight[ids]
    torch.testing.assert_close(wrapped.prompt_encoder["default"].embedding.weight, expected)


def test_prompt_tuning_text_init_needs_a_tokenizer(tokenizer):
    from tunesmith.errors import TunesmithError

    method = PromptTuning(PromptTuning.Config(init="text", init_text="abc"))
    with pytest.raises(TunesmithError, match="tokenizer"):
        method.apply(build_random_model(tokenizer, seed=0))
