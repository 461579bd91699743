"""GGUF export, read back with gguf's own reader: every tensor against the model's, and the metadata
llama.cpp needs. The Modelfile's template against the Jinja rendering it was measured from.

llama.cpp itself (llama-cpp-python) is not installed here: scripts/check_gguf_llamacpp.py compares its
greedy tokens with transformers' where it is.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tunesmith import TunesmithError
from tunesmith.cli import cli
from tunesmith.plugins import Plugins, PluginSource, entry_point_sources

gguf = pytest.importorskip("gguf")

from families import FAMILIES, build_tokenizer  # noqa: E402

from tunesmith_plugins.export.modelfile import measure_template, write_modelfile  # noqa: E402
from tunesmith_plugins.export.to_gguf import export_gguf, hf_tensors, without_generation_markers  # noqa: E402

HF_TO_GGUF = {  # the Llama tensor names, written out (the exporter takes them from gguf's own map)
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf: str) -> str:
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{HF_TO_GGUF[rest]}"


def adjacent_pairs(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF Llama rotates row i of a head with row i + d/2 (rotate_half); llama.cpp rotates rows 2i and
    2i+1. The rows llama.cpp expects: within each head, row i then row i + d/2, for each i."""
    d = weight.shape[0] // heads
    out = np.empty_like(weight)
    for h in range(heads):
        head = weight[h * d : (h + 1) * d]
        out[h * d : (h + 1) * d : 2] = head[: d // 2]
        out[h * d + 1 : (h + 1) * d : 2] = head[d // 2 :]
    return out


def expected_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    config = json.loads((model_dir / "config.json").read_text())
    out = {}
    for name, value in hf_tensors(model_dir).items():
        if name.endswith("q_proj.weight"):
            value = adjacent_pairs(value, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            value = adjacent_pairs(value, config["num_key_value_heads"])
        out[gguf_name(name)] = value
    return out


def read_back(path: Path) -> tuple[dict[str, tuple[str, np.ndarray]], dict[str, object]]:
    reader = gguf.GGUFReader(path)
    tensors = {
        t.name: (t.tensor_type.name, gguf.quants.dequantize(t.data, t.tensor_type)) for t in reader.tensors
    }
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return tensors, fields


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0"])
def test_every_tensor_reads_back_as_the_models(tmp_path, tiny_model_dir, quant):
    out = tmp_path / f"m-{quant}.gguf"
    export_gguf(tiny_model_dir, out, quant=quant)
    tensors, fields = read_back(out)
    expected = expected_tensors(tiny_model_dir)
    assert sorted(tensors) == sorted(expected)
    assert fields["general.file_type"] == {"f32": 0, "f16": 1, "q8_0": 7}[quant]
    for name, want in expected.items():
        kind, got = tensors[name]
        assert got.shape == want.shape, name
        if want.ndim == 1:  # norms stay F32 in every file type
            assert kind == "F32" and np.array_equal(got, want), name
        elif quant == "f32":
            assert kind == "F32" and np.array_equal(got, want), name
        elif quant == "f16":
            assert kind == "F16" and np.array_equal(got, want.astype(np.float16).astype(np.float32)), name
        else:  # Q8_0: blocks of 32 values q * d, d = max|x| / 127 stored as f16, q = round(x / d) in int8
            assert kind == "Q8_0", name
            blocks = want.reshape(-1, 32)
            scale = np.abs(blocks).max(axis=1, keepdims=True) / 127
            stored = scale.astype(np.float16).astype(np.float32)
            bound = 0.5 * scale + 127 * np.abs(stored - scale)  # rounding q, then the f16 scale
            error = np.abs(got.reshape(-1, 32) - blocks)
            assert (error <= bound * (1 + 1e-5) + 1e-9).all(), name
            assert error.max() > 0  # it did quantise


def test_architecture_and_tokenizer_metadata(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    out = tmp_path / "m.gguf"
    export_gguf(tiny_model_dir, out, quant="f16", name="tiny-test")
    _, fields = read_back(out)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "tiny-test"
    assert fields["llama.block_count"] == config["num_hidden_layers"]
    assert fields["llama.embedding_length"] == config["hidden_size"]
    assert fields["llama.feed_forward_length"] == config["intermediate_size"]
    assert fields["llama.attention.head_count"] == config["num_attention_heads"]
    assert fields["llama.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields["llama.context_length"] == config["max_position_embeddings"]
    assert fields["llama.rope.freq_base"] == config["rope_parameters"]["rope_theta"]
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    # the vocabulary: one token per id, special tokens as CONTROL, byte tokens NORMAL
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "default"  # no merges: any split gives the same tokens
    assert fields["tokenizer.ggml.tokens"] == [vocab[i] for i in range(config["vocab_size"])]
    specials = set(tokenizer.all_special_ids)
    types = fields["tokenizer.ggml.token_type"]
    assert [i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL] == sorted(specials)
    assert fields["tokenizer.ggml.merges"] == ["<s> <s>"]  # the inert merge: <s> is never a BPE symbol
    assert fields["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is False  # the tokenizer adds no BOS to plain text
    assert tokenizer("a")["input_ids"][0] != tokenizer.bos_token_id
    assert fields["tokenizer.chat_template"] == without_generation_markers(tokenizer.chat_template)
    assert "{% generation %}" in tokenizer.chat_template
    assert "{% generation %}" not in fields["tokenizer.chat_template"]


def test_other_architectures_are_refused_with_the_supported_list(tmp_path, tiny_model_dir):
    model = tmp_path / "gpt2"
    model.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(TunesmithError) as info:
        export_gguf(model, tmp_path / "x.gguf")
    assert "GPT2LMHeadModel" in info.value.message
    assert "LlamaForCausalLM" in " ".join(info.value.details)
    assert not (tmp_path / "x.gguf").exists()


def build_sentencepiece_style(path: Path):
    """A Llama-2-style vocabulary: byte-fallback BPE over "▁"-prefixed text, merges listed the way
    transformers converts a SentencePiece model (every pair that joins into a piece, by the piece's rank)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    pieces = ["▁", "a", "b", "c", "d", "bc", "ab", "▁a", "cd", "▁ab", "▁abcd"]  # "bc" outranks "ab"
    for piece in pieces:
        vocab[piece] = len(vocab)
    merges = [(x, y) for joined in pieces for x in pieces for y in pieces if x + y == joined]
    backend = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True)
    )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + 3,  # padded, as real checkpoints often are
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tokenizer


def spm_merge(text: str, tokens: list[str], scores: list[float]) -> list[int]:
    """llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm), as its source describes it: start from
    characters, repeatedly join the adjacent pair whose joined text is the best-scoring token (leftmost on
    ties), then map pieces to ids, unknown pieces to their byte tokens."""
    ids = {t: i for i, t in enumerate(tokens)}
    symbols = list("▁" + text.replace(" ", "▁"))
    while True:
        best = None
        for i in range(len(symbols) - 1):
            joined = symbols[i] + symbols[i + 1]
            if joined in ids and (best is None or scores[ids[joined]] > scores[ids[best[1]]]):
                best = (i, joined)
        if best is None:
            break
        symbols[best[0] : best[0] + 2] = [best[1]]
    out = []
    for symbol in symbols:
        out += [ids[symbol]] if symbol in ids else [ids[f"<0x{b:02X}>"] for b in symbol.encode()]
    return out


def test_a_sentencepiece_style_vocabulary_merges_in_the_bpe_order(tmp_path):
    model = tmp_path / "spm"
    tokenizer = build_sentencepiece_style(model)
    export_gguf(model, tmp_path / "spm.gguf", quant="f32")
    _, fields = read_back(tmp_path / "spm.gguf")
    tokens, scores = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.scores"]
    types = fields["tokenizer.ggml.token_type"]
    assert fields["tokenizer.ggml.model"] == "llama"
    assert len(tokens) == json.loads((model / "config.json").read_text())["vocab_size"]
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == gguf.TokenType.UNUSED
    assert types[:3] == [gguf.TokenType.CONTROL] * 3 and types[3:259] == [gguf.TokenType.BYTE] * 256
    assert fields["tokenizer.ggml.unknown_token_id"] == 0
    for text in ["ab", "abc", "abcd", "abc d", "cab ab", "dcba abcd", "é ab"]:
        assert spm_merge(text, tokens, scores) == tokenizer(text, add_special_tokens=False)["input_ids"], text
    flat = [-1000.0] * len(tokens)  # LlamaHfVocab's scores: llama.cpp would merge left to right instead
    assert spm_merge("abc", tokens, flat) != tokenizer("abc", add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------- Modelfile

CONVERSATIONS = [
    [{"role": "user", "content": "hello"}],
    [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "Un."},
        {"role": "user", "content": "Two?"},
    ],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ],
]


def test_the_tiny_template_is_measured_and_reproduces_jinja(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pieces = measure_template(tokenizer, add_bos=False)
    assert pieces is not None
    for messages in CONVERSATIONS:
        jinja = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert pieces.render(messages, True) == jinja
    assert pieces.start == "<s>"
    assert pieces.prefix["user"] == "<|user|>\n" and pieces.suffix["user"] == "<|end|>"
    assert pieces.generation == "<|assistant|>\n"
    assert measure_template(tokenizer, add_bos=True).start == ""  # llama.cpp would add BOS itself


@pytest.mark.parametrize("family", ["llama-3.1", "qwen2.5", "smollm2", "gemma-2", "mistral-v3", "phi-4"])
def test_family_templates_that_are_turn_by_turn_reproduce_jinja(family):
    tokenizer = build_tokenizer(FAMILIES[family])
    pieces = measure_template(tokenizer, add_bos=False)
    assert pieces is not None
    for messages in CONVERSATIONS:
        if "system" not in pieces.prefix and messages[0]["role"] == "system":
            continue
        jinja = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert pieces.render(messages, True) == jinja


def test_a_default_system_block_is_written_only_without_a_system_message():
    tokenizer = build_tokenizer(FAMILIES["qwen2.5"])
    pieces = measure_template(tokenizer, add_bos=False)
    assert pieces.default_system.startswith("<|im_start|>system\nYou are Qwen")
    template = pieces.go_template()
    assert template.startswith(
        '{{ if ne (index .Messages 0).Role "system" }}<|im_start|>system\nYou are Qwen'
    )


def test_qwen3_rewrites_history_so_it_gets_no_measured_template():
    assert measure_template(build_tokenizer(FAMILIES["qwen3"]), add_bos=False) is None


def test_a_template_that_is_not_turn_by_turn_gets_no_template(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    model = tmp_path / "model"
    model.mkdir()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # Each user turn is numbered: the text of a turn depends on its position.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ loop.index }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    tokenizer.save_pretrained(model)
    assert measure_template(tokenizer, add_bos=False) is None
    path, templated = write_modelfile(tmp_path / "m.gguf", model, add_bos=False)
    text = path.read_text()
    assert not templated and "TEMPLATE" not in text.replace("No TEMPLATE", "")
    assert text.startswith("FROM ./m.gguf")


def test_modelfile_has_template_stops_and_greedy_default(tmp_path, tiny_model_dir):
    path, templated = write_modelfile(tmp_path / "m.gguf", tiny_model_dir, add_bos=False)
    text = path.read_text()
    assert templated
    assert 'PARAMETER stop "<|end|>"' in text
    assert "PARAMETER temperature 0" in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert template.startswith("<s>{{ range $i, $_ := .Messages }}")
    assert '{{ else if eq .Role "user" }}<|user|>\n{{ .Content }}<|end|>' in template
    assert template.count("{{ end }}") == 3 and template.count("{{ if") + template.count("{{ range") == 3


# ------------------------------------------------------------------------------------ the command


def cli_with_export():
    """The CLI as ``main`` builds it, with this plugin registered (also before it is installed)."""
    import tunesmith_plugins.export as export

    sources = [s for s in entry_point_sources() if s.name != "export"]
    registry = Plugins(
        [*sources, PluginSource("export", "tunesmith", "0.1.0", "tunesmith_plugins.export", lambda: export)]
    )
    group = copy.copy(cli)
    group.commands = dict(cli.commands)
    registry.add_commands(group)
    return group, registry


def test_export_refuses_what_is_not_a_complete_run(tmp_path):
    group, registry = cli_with_export()
    result = CliRunner().invoke(group, ["export", str(tmp_path / "nothing")], obj=registry)
    assert result.exit_code == 2
    assert "no run directory" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_export_of_an_adapter_run_holds_the_merged_model(tmp_path, run_config):
    group, registry = cli_with_export()
    runner = CliRunner()
    assert runner.invoke(group, ["run", str(run_config())], obj=registry).exit_code == 0
    run = tmp_path / "runs" / "t"
    result = runner.invoke(group, ["export", str(run), "--quant", "f32"], obj=registry)
    assert result.exit_code == 0, result.output
    out = run / "gguf" / "t-f32.gguf"
    assert (run / "gguf" / "Modelfile").read_text().startswith("FROM ./t-f32.gguf")
    assert (run / "merged" / "config.json").is_file()  # the merge is kept for the next export

    merged = tmp_path / "merged"
    assert runner.invoke(group, ["merge", str(run), "-o", str(merged)], obj=registry).exit_code == 0
    tensors, fields = read_back(out)
    expected = expected_tensors(merged)
    assert sorted(tensors) == sorted(expected)
    base = expected_tensors(
        Path(json.loads((run / "final" / "adapter_config.json").read_text())["base_model_name_or_path"])
    )
    for name, want in expected.items():
        assert np.array_equal(tensors[name][1], want), name
    changed = [n for n in expected if not np.array_equal(expected[n], base[n])]
    assert any("attn_q" in n for n in changed)  # the LoRA update is in the file, not the base weights
    assert fields["general.name"] == "t"

    result = runner.invoke(group, ["export", str(run), "--quant", "q4"], obj=registry)
    assert result.exit_code == 2 and "q4" in result.output
