"""QLoRA: LoRA on top of a base model whose linear weights are quantised by bitsandbytes (4-bit NF4)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tunesmith import Method, Register, TunesmithError, hookimpl, option
from tunesmith_plugins.methods.lora import Lora


class QLora(Lora):
    """QLoRA: LoRA adapters trained on a base model quantised to 4 bits (Dettmers et al., 2023).

    The base loads through bitsandbytes (NF4 with double quantisation by default, or 8-bit), which cuts
    its memory to about a quarter; LoRA matrices train in the compute dtype (fp32 on CPU, bf16 on a GPU
    that has it). The artifact is a stock PEFT adapter, loadable onto the quantised or the full-precision
    base. `tunesmith merge` dequantises the base weights and adds the LoRA update in full precision,
    giving a plain model that computes what the trained QLoRA model computed.
    """

    name = "qlora"
    default_learning_rate: ClassVar[float] = 2e-4
    usual_learning_rates: ClassVar[tuple[float, float]] = (5e-5, 1e-3)

    @dataclass
    class Config(Lora.Config):
        bits: int = option(4, help="Bits per base weight: 4 (QLoRA) or 8 (LLM.int8)")
        quant_type: Literal["nf4", "fp4"] = option(
            "nf4", help="4-bit data type: nf4 (QLoRA's NormalFloat) or fp4"
        )
        double_quant: bool = option(
            True, help="Quantise the quantisation constants too (saves ~0.4 bit/weight)"
        )
        compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
            "auto",
            help="Dtype of the matmuls: auto = float32 on CPU (bf16 is emulated there), bf16 on a GPU with it",
        )

    def _check(self) -> None:
        if self.config.bits not in (4, 8):
            raise TunesmithError(f"method 'qlora': bits must be 4 or 8, not {self.config.bits!r}")

    def compute_dtype(self, device: str) -> Any:
        import torch

        choice = self.config.compute_dtype
        if choice != "auto":
            return getattr(torch, choice)
        if device == "cuda" and torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def model_load_kwargs(self, device: str) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        self._check()
        c = self.config
        # Quantised weights cannot be moved with .to() after loading: place them on this process's GPU
        # while loading (LOCAL_RANK under accelerate launch / torchrun, so DDP gets one copy per GPU).
        placement = {"device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}} if device == "cuda" else {}
        if device == "cpu":
            _standard_cpu_kernel()
        if c.bits == 8:
            return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), **placement}
        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=c.quant_type,
                bnb_4bit_use_double_quant=c.double_quant,
                bnb_4bit_compute_dtype=self.compute_dtype(device),
            ),
            **placement,
        }

    def apply(self, model: Any) -> Any:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if not getattr(model, "is_quantized", False):
            raise TunesmithError(
                "method 'qlora' needs a base model loaded with its quantization_config "
                "(Method.model_load_kwargs); this one is not quantised — use method 'lora' instead"
            )
        on_gpu = any(p.device.type != "cpu" for p in model.parameters())
        self.quantized_share = _quantized_share(model)
        # Gradient checkpointing costs ~30 % speed for memory; on CPU memory is rarely the limit.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=on_gpu)
        self.changes = []
        return get_peft_model(model, self.peft_config(model))

    def report(self, model: Any) -> tuple[list[str], list[str]]:
        notes, warnings = super().report(model)
        share = getattr(self, "quantized_share", None)
        if share is not None:
            line = (
                f"qlora quantised {share:.0%} of the base parameters to {self.config.bits} bits; the rest "
                "(embeddings, norms, and any MoE experts: bitsandbytes quantises only nn.Linear) stays in "
                "full precision"
            )
            (warnings if share < 0.5 else notes).append(line)
        return notes, warnings

    def merge(self, model: Any) -> Any:
        """Dequantise each base weight, add its LoRA update in fp32, and return a plain model.

        PEFT's own ``merge_and_unload`` on a 4-bit layer re-quantises ``W + BA`` back to 4 bits: the
        update (typically ~1e-3 of the weight) is mostly rounded away. Here the result is unquantised:
        a model in the compute dtype whose logits equal the trained QLoRA model's (up to float rounding).
        It is larger than the quantised base (full-precision weights), like the original base.
        """
        import torch
        from peft.tuners.lora import LoraLayer
        from peft.utils import ModulesToSaveWrapper

        base = model.get_base_model()
        dtype = base.get_input_embeddings().weight.dtype
        adapters = list(model.active_adapters)
        for name, module in list(base.named_modules()):
            if type(module).__name__ == "ParamWrapper":
                continue  # MoE experts: never quantised, merged by PEFT below
            if isinstance(module, LoraLayer):
                if any(module.use_dora.get(a, False) for a in adapters):
                    raise TunesmithError("method 'qlora' cannot merge a DoRA adapter on a quantised base")
                layer = module.get_base_layer()
                weight = _dense_weight(layer).to(torch.float32)
                for adapter in adapters:
                    if adapter in module.lora_A:
                        # every concrete LoraLayer (Linear, Embedding, Conv, bnb) defines get_delta_weight;
                        # peft's LoraLayer mixin does not declare it
                        delta = module.get_delta_weight(adapter)  # type: ignore[attr-defined]
                        weight = weight + delta.to(torch.float32)
                base.set_submodule(name, _linear(layer, weight, dtype))
            elif isinstance(module, ModulesToSaveWrapper):
                base.set_submodule(name, module.modules_to_save[adapters[0]])
        for name, module in list(base.named_modules()):
            if _is_bnb_linear(module):  # quantised layers LoRA did not target
                base.set_submodule(name, _linear(module, _dense_weight(module), dtype))
        if any(type(m).__name__ == "ParamWrapper" for m in base.modules()):
            base = model.merge_and_unload()
        quantizer = getattr(base, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(base)
        base.config.dtype = dtype
        return base


def _standard_cpu_kernel() -> None:
    """Keep 4-bit weights in bitsandbytes' standard layout on CPU (for the 4-bit layers created from now on).

    On AVX512-BF16 CPUs bitsandbytes repacks a 4-bit weight for a bf16 kernel at its first eval-mode
    forward, storing its scales in bf16: the base model evaluated before training would change the
    weights training starts from, and merged weights would no longer reproduce the trained model. With
    repacking off, every CPU computes as the standard kernel does (as AVX2 CPUs always do).
    """
    import bitsandbytes.nn.modules as bnb_modules

    bnb_modules.has_avx512bf16 = lambda: False


def _quantized_share(model: Any) -> float:
    """Fraction of the model's parameters (by count) held in bitsandbytes-quantised linear layers."""
    layers = [m for m in model.modules() if _is_bnb_linear(m)]
    packed = {id(m.weight) for m in layers}
    quantized = sum(m.in_features * m.out_features for m in layers)
    rest = sum(p.numel() for p in model.parameters() if id(p) not in packed)
    return quantized / (quantized + rest) if quantized + rest else 0.0


def _is_bnb_linear(module: Any) -> bool:
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt") and hasattr(module, "weight")


def _dense_weight(layer: Any) -> Any:
    """The weight of ``layer`` as a plain tensor (dequantised if bitsandbytes holds it)."""
    if _is_bnb_linear(layer):
        from peft.utils.integrations import dequantize_bnb_weight

        weight = layer.weight
        quant_state = getattr(weight, "quant_state", None)
        if quant_state is not None and getattr(quant_state, "packing_format_for_cpu", False):
            # On AVX512-BF16 CPUs bitsandbytes repacks a 4-bit weight for its CPU kernel at the first
            # eval-mode forward; dequantising the repacked bytes directly gives garbage, so unpack first.
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse, dequantize_4bit

            data, quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, quant_state)
            return dequantize_4bit(data, quant_state)
        state = getattr(layer, "state", None) if type(layer).__name__ == "Linear8bitLt" else None
        return dequantize_bnb_weight(weight, state=state)
    return layer.weight.data


def _linear(layer: Any, weight: Any, dtype: Any) -> Any:
    import torch

    bias = getattr(layer, "bias", None)
    out = torch.nn.Linear(
        layer.in_features, layer.out_features, bias=bias is not None, device=weight.device, dtype=dtype
    )
    with torch.no_grad():
        out.weight.copy_(weight.to(dtype))
        if bias is not None:
            out.bias.copy_(bias.to(dtype))
    return out


@hookimpl
def register_methods(register: Register[Method]) -> None:
    register(QLora)
