"""QLoRA, DoRA, IA3 and freeze tuning on the tiny random Llama: training, parameter counts, save/load,
generation against teacher forcing, merging, and QLoRA's memory footprint."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from tunesmith.errors import TunesmithError  # noqa: E402
from tunesmith.testing.models import build_random_model, build_tokenizer  # noqa: E402
from tunesmith_plugins.methods.dora import Dora  # noqa: E402
from tunesmith_plugins.methods.freeze import Freeze  # noqa: E402
from tunesmith_plugins.methods.ia3 import IA3  # noqa: E402
from tunesmith_plugins.methods.qlora import QLora  # noqa: E402

# The tiny Llama: hidden 128, intermediate 384, 4 layers, 4 heads of 32 with 2 KV heads, vocab 262.
H, FF, LAYERS, KV, VOCAB = 128, 384, 4, 64, 262
# (in, out) of each linear layer of one decoder layer
LINEARS = {
    "q_proj": (H, H),
    "k_proj": (H, KV),
    "v_proj": (H, KV),
    "o_proj": (H, H),
    "gate_proj": (H, FF),
    "up_proj": (H, FF),
    "down_proj": (FF, H),
}
PROMPTS = ["The cat sat", "A dog", "Bees buzz near the hive", "x"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny")
    build_random_model(tokenizer, seed=0).save_pretrained(path)
    return path


def batch(tokenizer):
    text = "the quick brown fox jumps over the lazy dog and runs far away. " * 2
    rows = [text[i : i + 32] for i in (0, 7, 13, 21)]
    return tokenizer(rows, return_tensors="pt", add_special_tokens=False)["input_ids"]


def train(model, ids, steps=15, lr=1e-3):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def assert_generate_matches_teacher_forcing(model, tokenizer, new=6):
    """Greedy generate (KV cache, batched, LEFT padding) == teacher-forced argmax of each prompt alone."""
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = "right"
    out = model.generate(
        **enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0
    )
    generated = out[:, enc["input_ids"].shape[1] :].tolist()
    for prompt, tokens in zip(PROMPTS, generated, strict=True):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = logits(model, torch.tensor([ids + tokens]))
        assert full[0, len(ids) - 1 : -1].argmax(-1).tolist() == tokens


def check_method(method, model, tokenizer, tmp_path, expected_trainable, lr, fresh_base):
    wrapped = method.apply(model)
    assert trainable(wrapped) == expected_trainable
    ids = batch(tokenizer)
    losses = train(wrapped, ids, lr=lr)
    assert losses[-1] < losses[0] - 0.1, losses
    assert_generate_matches_teacher_forcing(wrapped, tokenizer)

    want = logits(wrapped, ids)
    method.save(wrapped, str(tmp_path))
    loaded = method.load(fresh_base(), str(tmp_path))
    loaded.eval()
    torch.testing.assert_close(logits(loaded, ids), want, atol=1e-6, rtol=0)
    if method.produces_adapter:
        stock = peft.PeftModel.from_pretrained(fresh_base(), str(tmp_path))
        stock.eval()
        torch.testing.assert_close(logits(stock, ids), want, atol=1e-6, rtol=0)
    merged = method.merge(wrapped)
    assert not isinstance(merged, peft.PeftModel)
    torch.testing.assert_close(logits(merged, ids), want, atol=1e-5, rtol=1e-5)
    return wrapped


# --------------------------------------------------------------------------------------------- DoRA


@pytest.mark.slow  # 15-25 s on the shared 2-core machine
def test_dora(tokenizer, tmp_path):
    r = 4
    lora = LAYERS * sum(r * (i + o) for i, o in LINEARS.values())
    magnitude = LAYERS * sum(o for _, o in LINEARS.values())  # one per output feature
    method = Dora(Dora.Config(r=r, alpha=8, dropout=0.0))
    assert method.peft_config().use_dora
    check_method(
        method,
        build_random_model(tokenizer, seed=0),
        tokenizer,
        tmp_path,
        lora + magnitude,  # 38,912 + 5,120
        lr=3e-3,
        fresh_base=lambda: build_random_model(tokenizer, seed=0),
    )


# ---------------------------------------------------------------------------------------------- IA3


@pytest.mark.slow  # 15-25 s on the shared 2-core machine
def test_ia3(tokenizer, tmp_path):
    # k_proj, v_proj scale their outputs; down_proj (feed-forward) scales its input.
    expected = LAYERS * (LINEARS["k_proj"][1] + LINEARS["v_proj"][1] + LINEARS["down_proj"][0])
    check_method(
        IA3(),
        build_random_model(tokenizer, seed=0),
        tokenizer,
        tmp_path,
        expected,  # 2,048
        lr=5e-2,
        fresh_base=lambda: build_random_model(tokenizer, seed=0),
    )


def test_ia3_options(tokenizer):
    model = IA3(IA3.Config(target_modules=["q_proj", "up_proj"], feedforward_modules=["up_proj"])).apply(
        build_random_model(tokenizer, seed=0)
    )
    assert trainable(model) == LAYERS * (H + H)  # q_proj output, up_proj input
    with pytest.raises(TunesmithError, match="feedforward_modules"):
        IA3(IA3.Config(target_modules=["k_proj"], feedforward_modules=["down_proj"])).apply(
            build_random_model(tokenizer, seed=0)
        )


# ------------------------------------------------------------------------------------------- freeze


@pytest.mark.slow  # 15-25 s on the shared 2-core machine
def test_freeze(tokenizer, tmp_path):
    layer = sum(i * o for i, o in LINEARS.values()) + 2 * H  # linears + two RMSNorms
    norms = LAYERS * 2 * H + H  # every layer's two norms + the final norm
    method = Freeze(Freeze.Config(last_n_layers=1, train_norms=True))
    model = build_random_model(tokenizer, seed=0)
    selected = method.selected(model)
    assert all(n.startswith("model.layers.3.") or "norm" in n for n in selected)
    check_method(
        method,
        model,
        tokenizer,
        tmp_path,
        layer + norms - 2 * H,  # the last layer's norms are counted once
        lr=1e-3,
        fresh_base=lambda: build_random_model(tokenizer, seed=0),
    )
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "adapter_config.json").exists()


def test_freeze_selection(tokenizer):
    def count(**options):
        return trainable(Freeze(Freeze.Config(**options)).apply(build_random_model(tokenizer, seed=0)))

    assert count(trainable=["lm_head"]) == VOCAB * H  # tied: trains the shared embedding matrix
    assert count(train_embeddings=True) == VOCAB * H
    assert count(trainable=[r"layers\.(0|1)\.self_attn\.q_proj"]) == 2 * H * H
    assert count(last_n_layers=-1) == count(trainable=[r"^model\.layers\.0\."])
    with pytest.raises(TunesmithError, match="selects no parameter") as error:
        Freeze(Freeze.Config(trainable=["no_such_module"])).apply(build_random_model(tokenizer, seed=0))
    assert "model.embed_tokens.weight" in str(error.value)
    with pytest.raises(TunesmithError, match="layers"):
        Freeze(Freeze.Config(last_n_layers=9)).apply(build_random_model(tokenizer, seed=0))


# -------------------------------------------------------------------------------------------- QLoRA


def load_base(model_dir, method=None):
    from transformers import AutoModelForCausalLM

    extra = method.model_load_kwargs("cpu") if method else {}
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **extra)


@pytest.mark.slow  # 15-25 s on the shared 2-core machine
def test_qlora(tokenizer, model_dir, tmp_path, capsys):
    method = QLora(QLora.Config(r=4, alpha=8, dropout=0.0))
    config = method.model_load_kwargs("cpu")["quantization_config"]
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float32  # auto on CPU

    full = load_base(model_dir).get_memory_footprint()
    base = load_base(model_dir, method)
    quantized = base.get_memory_footprint()
    with capsys.disabled():
        print(
            f"\n[qlora] tiny model base memory: fp32 {full:,} B, 4-bit NF4 {quantized:,} B ({quantized / full:.2f}x)"
        )
    assert quantized < 0.5 * full
    assert type(base.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"

    lora = LAYERS * sum(4 * (i + o) for i, o in LINEARS.values())
    wrapped = check_method(
        method,
        base,
        tokenizer,
        tmp_path,
        lora,  # 38,912: LoRA on all 4-bit linears; nothing else trains
        lr=3e-3,
        fresh_base=lambda: load_base(model_dir, method),
    )
    assert wrapped is not None


def test_qlora_merge_is_plain_fp32(tokenizer, model_dir, tmp_path):
    method = QLora(QLora.Config(r=4, alpha=8, dropout=0.0))
    model = method.apply(load_base(model_dir, method))
    with torch.no_grad():  # a non-zero update, without training
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    merged = method.merge(model)
    assert not getattr(merged, "is_quantized", False)
    assert not hasattr(merged.config, "quantization_config")
    assert all(type(m).__name__ not in ("Linear4bit", "Linear8bitLt") for m in merged.modules())
    merged.save_pretrained(tmp_path)
    reloaded = load_base(tmp_path)
    ids = batch(tokenizer)
    torch.testing.assert_close(logits(reloaded, ids), logits(merged, ids), atol=1e-6, rtol=0)


def test_qlora_options(tokenizer, model_dir):
    assert QLora(QLora.Config(bits=8)).model_load_kwargs("cpu")["quantization_config"].load_in_8bit
    assert QLora(QLora.Config(compute_dtype="bfloat16")).compute_dtype("cpu") == torch.bfloat16
    with pytest.raises(TunesmithError, match="bits"):
        QLora(QLora.Config(bits=3)).model_load_kwargs("cpu")
    with pytest.raises(TunesmithError, match="not quantised"):
        QLora().apply(build_random_model(tokenizer, seed=0))
