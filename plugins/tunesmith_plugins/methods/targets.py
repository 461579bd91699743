"""What a PEFT method adapts, made explicit for mixture-of-experts models and reported to the user.

In transformers 5, Mixtral, Qwen3-MoE and similar models hold each layer's experts as one module with
3-D ``nn.Parameter``s (``mlp.experts.gate_up_proj``, ``mlp.experts.down_proj``), not ``nn.Linear``s; the
router is ``mlp.gate``. PEFT's ``all-linear`` then wraps the experts with ``lora.ParamWrapper`` *and*
adapts the router, and ParamWrapper refuses dropout and DoRA. So tunesmith resolves ``all-linear``
itself on MoE models: the linear layers, the expert parameters through PEFT's ``target_parameters``, and
the router only when asked.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn", "out_proj")


def expert_parameters(model: Any) -> list[str]:
    """Names (relative to a decoder layer, e.g. ``mlp.experts.down_proj``) of 3-D expert parameters."""
    found = set()
    for name, param in model.named_parameters():
        if param.dim() == 3 and ".experts." in f".{name}":
            found.add(_in_layer(name))
    return sorted(found)


def routers(model: Any) -> list[str]:
    """Relative names of MoE router weights (``mlp.gate.weight``)."""
    found = set()
    for name, module in model.named_modules():
        if type(module).__name__.endswith("Router") and hasattr(module, "weight"):
            found.add(_in_layer(name) + ".weight")
    return sorted(found)


def linear_leaves(model: Any, exclude: tuple[str, ...] = ()) -> list[str]:
    """Leaf names of the ``nn.Linear`` layers inside decoder layers (what ``all-linear`` means)."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in exclude:
                names.add(leaf)
    return sorted(names)


def _in_layer(name: str) -> str:
    """``model.layers.3.mlp.experts.down_proj`` -> ``mlp.experts.down_proj``."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdigit():
            return ".".join(parts[i + 2 :])
    return name


def adapted(model: Any) -> Counter[str]:
    """How many modules of each leaf name (``q_proj``, ``experts``, ``gate``) a PEFT model adapts."""
    counts: Counter[str] = Counter()
    for name, _ in model.named_modules():
        if name.endswith((".lora_A", ".ia3_l")) and ".base_layer." not in name:
            counts[name.rsplit(".", 2)[-2]] += 1
    return counts


def coverage(method: str, model: Any, *, explicit: bool = False) -> tuple[list[str], list[str]]:
    """``(notes, warnings)``: what ``method`` adapted, and, unless the user named the targets
    (``explicit``), a warning when it covers only part of the network (attention or feed-forward/experts
    left out), e.g. IA3 on a fused ``qkv_proj`` (Phi-3) or on 3-D experts (Mixtral)."""
    counts = adapted(model)
    if not counts:
        return [], []
    notes = [f"method '{method}' adapts: " + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))]
    attention = [k for k in counts if k in ATTENTION]
    rest = [k for k in counts if k not in ATTENTION and k != "gate"]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    missing = [] if attention else ["attention"]
    if not rest:
        missing.append("the experts" if expert_parameters(base) else "the feed-forward layers")
    warnings = []
    if missing and not explicit:
        warnings.append(
            f"method '{method}' adapts nothing in {' or '.join(missing)} of this {base.config.model_type} "
            "model (fused or 3-D layers its targets do not name); set its target options to cover them"
        )
    return notes, warnings
