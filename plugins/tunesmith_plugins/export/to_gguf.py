"""A Hugging Face model directory to one GGUF file (llama.cpp's format), for Llama-family models.

The ``gguf`` package (llama.cpp's own Python library) supplies the tensor-name mapping
(``gguf.get_tensor_name_map``), the writer, Q8_0 quantisation (``gguf.quants``) and the special-token
reader (``gguf.SpecialVocab``). llama.cpp's converter, ``convert_hf_to_gguf.py``, is not published as a
package, so the few rules it applies on top are restated here, each naming the place it comes from:

- ``LlamaModel.modify_tensors``/``LlamaModel.permute``: q_proj and k_proj rows are permuted. HF's Llama
  rotates dimension ``i`` of a head together with ``i + head_dim/2`` (``rotate_half``); llama.cpp's
  ``llama`` graph rotates adjacent pairs ``(2i, 2i+1)``. The permutation moves row ``i + head_dim/2`` next
  to row ``i`` within each head (k_proj with the key/value head count).
- ``Model.prepare_tensors``: 1-D tensors and ``*_norm.weight`` stay F32; other weights take the file
  type; a tensor Q8_0 cannot hold (row length not a multiple of 32) falls back to F16.
- ``Model.set_gguf_parameters``/``LlamaModel.set_gguf_parameters``: the hyper-parameter keys.
- ``Model.get_vocab_base``/``_set_vocab_gpt2``: byte-level BPE vocabularies (``tokenizer.ggml.model =
  gpt2``): every id up to ``vocab_size`` gets a token (``[PADi]`` where the tokenizer has none), added
  tokens are CONTROL when special (or looking special, ``<|...|>``) and USER_DEFINED otherwise;
  ``tokenizer.ggml.pre`` names the pre-tokenizer, recognised by hashing the ids of a fixed text
  (``get_vocab_base_pre``; the hashes below are copied from it).
- ``_set_vocab_llama_hf``: SentencePiece-style vocabularies (byte-fallback BPE, ``tokenizer.ggml.model =
  llama``) through ``gguf.LlamaHfVocab``, padded to ``vocab_size`` like ``_create_vocab_sentencepiece``;
  the scores, which llama.cpp's tokenizer merges by, rank the BPE merges (see ``_sentencepiece_tokens``).

Two rules are tunesmith's own, for byte-level vocabularies without merges (the built-in ``tiny`` model):
llama.cpp refuses a ``gpt2`` vocabulary with no ``tokenizer.ggml.merges`` key and the writer cannot store
an empty array, so one merge that can never apply is written (its left side is a multi-character special
token, and BPE merges start from single characters, so no merge ever produces it); and its pre-tokenizer
is ``default``: without merges every byte is its own token, however the text is split.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from tunesmith import TunesmithError

#: Hugging Face architectures llama.cpp converts with its ``llama`` graph (``LlamaModel.register``).
SUPPORTED = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama"}
#: ``--quant`` names and the llama.cpp file types they write.
QUANTS = ("f32", "f16", "q8_0")

# llama.cpp get_vocab_base_pre: the text whose token ids identify a BPE pre-tokenizer, and known hashes.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE_TOKENIZERS = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
GENERATION_MARKER = re.compile(r"{%-?\s*(?:end)?generation\s*-?%}")
LOOKS_SPECIAL = re.compile(r"<\|.*\|>|<｜.*｜>|<pad>|<mask>|<unused.*>")


@dataclass
class GgufExport:
    """What was written: the file, its tensors' GGUF names and types, and the vocabulary facts."""

    path: Path
    tensors: dict[str, str] = field(default_factory=dict)  # GGUF name -> quantisation type
    tokenizer_model: str = ""
    pre_tokenizer: str = ""
    add_bos: bool = False
    notes: list[str] = field(default_factory=list)


def check_supported(model_dir: Path) -> dict[str, Any]:
    """The model's config.json, or a clear refusal naming what is supported."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in SUPPORTED or config.get("num_local_experts"):
        raise TunesmithError(
            f"GGUF export does not support the {arch} architecture",
            details=[f"supported: {', '.join(SUPPORTED)} (dense; llama.cpp's 'llama' graph)"],
        )
    return config


def export_gguf(model_dir: Path, out: Path, *, quant: str = "f16", name: str | None = None) -> GgufExport:
    """Convert the transformers model in ``model_dir`` (weights and tokenizer) to ``out``."""
    import gguf

    if quant not in QUANTS:
        raise TunesmithError(
            f"unknown GGUF quantisation '{quant}'", details=[f"choose one of: {', '.join(QUANTS)}"]
        )
    config = check_supported(model_dir)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[quant]
    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])
    result = GgufExport(Path(out))
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or model_dir.name)
    _add_parameters(writer, config, file_type)
    _add_tensors(writer, model_dir, config, quant, result)
    _add_vocab(writer, model_dir, config, result)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer.write_header_to_file(path=partial)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return result


# ----------------------------------------------------------------------------------- parameters


def _add_parameters(writer: Any, config: dict[str, Any], file_type: Any) -> None:
    """Model.set_gguf_parameters + LlamaModel.set_gguf_parameters."""
    import gguf

    n_head = config["num_attention_heads"]
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads", n_head))
    rope = {**(config.get("rope_scaling") or {}), **(config.get("rope_parameters") or {})}
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind not in ("default", None):
        raise TunesmithError(
            f"GGUF export does not convert the '{kind}' RoPE scaling yet",
            details=["supported: no scaling, linear"],
        )


# -------------------------------------------------------------------------------------- tensors


def permute_qk(weights: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's LlamaModel.permute: HF's half-split RoPE pairs to llama.cpp's adjacent pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def hf_tensors(model_dir: Path) -> dict[str, Any]:
    """Every tensor of the saved model as float32 numpy arrays (safetensors shards, in name order)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise TunesmithError(f"no safetensors weights in {model_dir}")
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key).float().numpy()
    return tensors


def gguf_tensors(model_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The model's tensors under their GGUF names, q/k permuted: what the file holds before quantising."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    out = {}
    for name, data in hf_tensors(model_dir).items():
        if name.endswith(".rotary_emb.inv_freq"):
            continue  # prepare_tensors: "we don't need these"
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise TunesmithError(f"GGUF export cannot map tensor '{name}' of {model_dir}")
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute_qk(data, n_head, n_head)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute_qk(data, n_head, n_kv)
        out[new_name] = data
    return out


def _add_tensors(
    writer: Any, model_dir: Path, config: dict[str, Any], quant: str, result: GgufExport
) -> None:
    import gguf

    wanted = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[quant]
    for name, data in gguf_tensors(model_dir, config).items():
        qtype = wanted
        if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
            qtype = gguf.GGMLQuantizationType.F32
        try:
            packed = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:
            qtype = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(data, qtype)
            result.notes.append(f"{name}: rows of {data.shape[-1]} values cannot be Q8_0; written as F16")
        writer.add_tensor(name, packed, raw_dtype=qtype)
        result.tensors[name] = qtype.name


# ---------------------------------------------------------------------------------------- vocab


def _add_vocab(writer: Any, model_dir: Path, config: dict[str, Any], result: GgufExport) -> None:
    """LlamaModel.set_vocab's order: a SentencePiece-style vocabulary first, else byte-level BPE."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        vocab = gguf.LlamaHfVocab(model_dir)
    except (FileNotFoundError, TypeError):
        vocab = None
    if vocab is not None:
        texts, scores, types = _sentencepiece_tokens(vocab, model_dir, config["vocab_size"])
        result.tokenizer_model, result.pre_tokenizer = "llama", "default"
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(texts)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        special = gguf.SpecialVocab(model_dir, n_vocab=len(texts))
    else:
        tokens, types = _bpe_tokens(tokenizer, config["vocab_size"])
        special = gguf.SpecialVocab(model_dir, load_merges=True)
        result.tokenizer_model = "gpt2"
        result.pre_tokenizer = _pre_tokenizer(tokenizer, has_merges=bool(special.merges))
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(result.pre_tokenizer)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        if not special.merges:
            special.merges = [_inert_merge(tokenizer)]
            result.notes.append("the vocabulary has no BPE merges: one merge that never applies was written")
    # What the HF tokenizer does to plain text decides llama.cpp's add_bos/add_eos (not a guess).
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    result.add_bos = bool(ids) and ids[0] == tokenizer.bos_token_id
    special.add_special_token["bos"] = result.add_bos
    special.add_special_token["eos"] = bool(ids) and ids[-1] == tokenizer.eos_token_id and len(ids) > 1
    if isinstance(special.chat_template, str):
        special.chat_template = without_generation_markers(special.chat_template)
    special.add_to_gguf(writer, quiet=True)


def without_generation_markers(template: str) -> str:
    """transformers' ``{% generation %}`` markers only tag assistant tokens for training masks; they render
    nothing, and llama.cpp's template engine does not know them."""
    return GENERATION_MARKER.sub("", template)


def _sentencepiece_tokens(
    vocab: Any, model_dir: Path, vocab_size: int
) -> tuple[list[bytes], list[float], list[Any]]:
    """``gguf.LlamaHfVocab``'s tokens and types, with scores that rank the BPE merges, padded to ``vocab_size``.

    llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined token scores highest;
    ``LlamaHfVocab`` gives every token -1000, which leaves the order of merges to chance. A token made by
    merge ``r`` (in tokenizer.json's order) scores ``-r``, so llama.cpp merges in the BPE's own order.
    """
    import gguf

    merges = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"].get("merges", [])
    rank: dict[bytes, int] = {}
    for r, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault((left + right).encode("utf-8"), r)
    texts, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        texts.append(text)
        scores.append(float(-rank[text]) if text in rank else score)
        types.append(kind)
    for i in range(len(texts), vocab_size):  # llama.cpp's _create_vocab_sentencepiece pads the same way
        texts.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    return texts, scores, types


def _bpe_tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[Any]]:
    """Model.get_vocab_base: one token per id, with llama.cpp's token types."""
    import gguf

    reverse = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    tokens: list[str] = []
    types: list[Any] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            if tokenizer.added_tokens_decoder[i].special or LOOKS_SPECIAL.fullmatch(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")  # pre-normalize user-defined spaces
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _pre_tokenizer(tokenizer: Any, *, has_merges: bool) -> str:
    if not has_merges:
        return "default"
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest not in KNOWN_PRE_TOKENIZERS:
        raise TunesmithError(
            "GGUF export does not recognise this tokenizer's BPE pre-tokenizer",
            details=[
                f"its llama.cpp check hash is {digest}",
                "llama.cpp's convert_hf_to_gguf.py lists more (get_vocab_base_pre); convert the merged model "
                "(tunesmith merge) with it",
            ],
        )
    return KNOWN_PRE_TOKENIZERS[digest]


def _inert_merge(tokenizer: Any) -> str:
    """A merge whose left side is a multi-character special token: BPE never forms it, so it never applies."""
    special = next((t for t in tokenizer.all_special_tokens if len(t) > 1 and " " not in t), None)
    if special is None:
        raise TunesmithError("GGUF export: a BPE vocabulary without merges needs a special token")
    return f"{special} {special}"
