"""QLoRA, DoRA, IA3 and freeze tuning: what only these methods promise, on the tiny random Llama.

Training, save/load, generation against teacher forcing and merging are the conformance suite's
(``tests/plugins/test_conformance.py`` runs it on every built-in method; the classes below run it on
option combinations the defaults leave out). Here: exact trainable-parameter counts from the
architecture, option handling, QLoRA's memory footprint and its unquantised merge.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from tunesmith import TunesmithError  # noqa: E402
from tunesmith.testing import MethodConformance  # noqa: E402
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


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# --------------------------------------------------------------------------------------------- DoRA


def test_dora_trains_lora_matrices_plus_one_magnitude_per_output_feature(tokenizer):
    r = 4
    lora = LAYERS * sum(r * (i + o) for i, o in LINEARS.values())
    magnitude = LAYERS * sum(o for _, o in LINEARS.values())
    method = Dora(Dora.Config(r=r, alpha=8, dropout=0.0))
    assert method.peft_config().use_dora
    assert (
        trainable(method.apply(build_random_model(tokenizer, seed=0))) == lora + magnitude
    )  # 38,912 + 5,120


# ---------------------------------------------------------------------------------------------- IA3


def test_ia3_scales_keys_values_and_the_feed_forward_input(tokenizer):
    # k_proj, v_proj scale their outputs; down_proj (feed-forward) scales its input.
    expected = LAYERS * (LINEARS["k_proj"][1] + LINEARS["v_proj"][1] + LINEARS["down_proj"][0])
    assert trainable(IA3().apply(build_random_model(tokenizer, seed=0))) == expected  # 2,048


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


def test_freeze_trains_the_last_layer_and_every_norm(tokenizer, tmp_path):
    layer = sum(i * o for i, o in LINEARS.values()) + 2 * H  # linears + two RMSNorms
    norms = LAYERS * 2 * H + H  # every layer's two norms + the final norm
    method = Freeze(Freeze.Config(last_n_layers=1, train_norms=True))
    model = build_random_model(tokenizer, seed=0)
    assert all(n.startswith("model.layers.3.") or "norm" in n for n in method.selected(model))
    wrapped = method.apply(model)
    assert trainable(wrapped) == layer + norms - 2 * H  # the last layer's norms are counted once
    method.save(wrapped, str(tmp_path))
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "adapter_config.json").exists()


class TestFreezeWithNorms(MethodConformance):
    method = Freeze
    options = {"last_n_layers": 1, "train_norms": True}


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


def test_qlora_loads_nf4_and_trains_lora_on_every_4bit_linear(tokenizer, model_dir, capsys):
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
    assert trainable(method.apply(base)) == lora  # 38,912: LoRA on all 4-bit linears; nothing else trains


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
