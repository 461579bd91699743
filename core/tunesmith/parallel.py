"""``training.distributed`` as the Hugging Face Trainer takes it: DDP, FSDP2 or DeepSpeed ZeRO.

The Trainer (and accelerate under it) does the distributed work; this module only translates the run
config into ``TrainingArguments`` keywords (:func:`trainer_kwargs`, through
``TrainContext.training_kwargs``, so every objective gets them) and refuses what cannot work before
anything is written (:func:`check`). With one process every strategy is plain training.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.schema import DistributedConfig

#: DeepSpeed configs by name. "auto" values are filled in by transformers from TrainingArguments
#: (batch size, accumulation, learning rate, precision, clipping), so they always agree with the run.
DEEPSPEED_PRESETS: dict[str, dict[str, Any]] = {
    "zero2": {
        "zero_optimization": {
            "stage": 2,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
        },
    },
    "zero3": {
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": True,  # final/ is a normal HF model
        },
    },
}
DEEPSPEED_PRESETS["zero3-offload"] = {
    "zero_optimization": {
        **DEEPSPEED_PRESETS["zero3"]["zero_optimization"],
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True},
    },
}
_DEEPSPEED_AUTO = {
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
}


def deepspeed_config(value: str) -> dict[str, Any]:
    """The DeepSpeed config that ``training.distributed.deepspeed`` names: a preset, or a JSON file."""
    if value in DEEPSPEED_PRESETS:
        return {**_DEEPSPEED_AUTO, **DEEPSPEED_PRESETS[value]}
    path = Path(value).expanduser()
    if not path.is_file():
        close = difflib.get_close_matches(value, list(DEEPSPEED_PRESETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TunesmithError(
            f"training.distributed.deepspeed: '{value}' is neither a preset nor a file{hint}",
            details=[f"presets: {', '.join(DEEPSPEED_PRESETS)}; or the path of a DeepSpeed JSON config"],
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TunesmithError(f"training.distributed.deepspeed: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise TunesmithError(f"training.distributed.deepspeed: {path} does not hold a JSON object")
    return data


def decoder_layers(model: Any) -> list[str]:
    """The model's repeated block classes (``_no_split_modules``): FSDP wraps one per unit."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(getattr(base, "_no_split_modules", None) or [])


def trainer_kwargs(
    d: DistributedConfig, model: Any, *, world_size: int, activation_checkpointing: bool
) -> dict[str, Any]:
    """``TrainingArguments`` keywords for ``d``; FSDP and DeepSpeed only with several processes."""
    kwargs: dict[str, Any] = {
        "ddp_find_unused_parameters": bool(d.find_unused_parameters),
        "ddp_timeout": d.timeout_minutes * 60,
    }
    if world_size <= 1:
        return kwargs
    if d.strategy == "fsdp":
        fsdp_config: dict[str, Any] = {
            "version": 2,
            "reshard_after_forward": True,  # full shard
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "SHARDED_STATE_DICT" if d.fsdp_sharded_checkpoints else "FULL_STATE_DICT",
            "cpu_offload": d.fsdp_offload,
            "activation_checkpointing": activation_checkpointing,  # FSDP's own, not the Trainer's
        }
        layers = decoder_layers(model) if model is not None else []
        if layers:
            fsdp_config["transformer_layer_cls_to_wrap"] = layers
        kwargs.update(fsdp=True, fsdp_config=fsdp_config, activation_checkpointing=False)
    elif d.strategy == "deepspeed":
        kwargs["deepspeed"] = deepspeed_config(d.deepspeed)
    return kwargs


def full_state_dict(model: Any) -> dict[str, Any] | None:
    """The model's whole weights when they are sharded across processes (FSDP2, DeepSpeed ZeRO-3),
    gathered into CPU memory; ``None`` when every process holds them whole (one process, DDP,
    ZeRO-2). Every process must call it: the gathering is collective."""
    from transformers.distributed.fsdp import is_fsdp_managed_module
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_fsdp_managed_module(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_deepspeed_zero3_enabled():
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return None


def check(
    d: DistributedConfig,
    *,
    device_type: str,
    world_size: int,
    method: str,
    quantization_config: Any = None,
) -> None:
    """Refuse a distributed setup that cannot work, before any model loads or anything is written."""
    if world_size <= 1:
        return
    where = "training.distributed"
    if d.strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise TunesmithError(
                f"{where}.strategy: deepspeed is not installed",
                details=["pip install deepspeed (it needs CUDA), or use strategy: fsdp or ddp"],
            )
        if device_type != "cuda":
            raise TunesmithError(
                f"{where}.strategy: DeepSpeed trains on CUDA GPUs; this machine trains on {device_type}",
                details=["use strategy: ddp (or fsdp) here"],
            )
        deepspeed_config(d.deepspeed)  # a bad name or file is refused now, not after the model loads
    if d.strategy == "fsdp" and device_type != "cuda":
        raise TunesmithError(
            f"{where}.strategy: FSDP trains on GPUs; this machine trains on {device_type}",
            details=[
                "accelerate shards only GPU models: on CPU it would train with DDP whatever fsdp says",
                "use strategy: ddp here; tunesmith run CONFIG --nproc N --dry-run shows what FSDP would run",
            ],
        )
    if d.strategy == "fsdp" and quantization_config is not None:
        storage = str(getattr(quantization_config, "bnb_4bit_quant_storage", "uint8")).removeprefix("torch.")
        if getattr(quantization_config, "load_in_8bit", False):
            storage = "int8"
        if "int" in storage:
            raise TunesmithError(
                f"{where}.strategy: fsdp cannot shard the quantised weights of method '{method}' "
                f"(stored as {storage})",
                details=[
                    "FSDP needs every weight in one floating-point dtype: QLoRA under FSDP needs 4-bit weights "
                    "stored as bfloat16 (bnb_4bit_quant_storage), which this method does not set",
                    "use strategy: ddp (each device holds the whole 4-bit model), or method lora with fsdp",
                ],
            )


__all__ = [
    "DEEPSPEED_PRESETS",
    "check",
    "decoder_layers",
    "deepspeed_config",
    "full_state_dict",
    "trainer_kwargs",
]
