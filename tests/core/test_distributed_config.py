"""training.distributed: what the Trainer receives for DDP, FSDP and DeepSpeed, and what is refused early.

The keywords are checked by building transformers' own ``TrainingArguments`` from them (its parser is
the reference), not by comparing against a hand-written copy.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.parallel import DEEPSPEED_PRESETS, check, deepspeed_config, trainer_kwargs
from tunesmith.schema import DistributedConfig


@pytest.fixture(scope="module")
def tiny_lora():
    from peft import LoraConfig, get_peft_model

    from tunesmith.testing.models import build_random_model, build_tokenizer

    model = build_random_model(build_tokenizer(), seed=0)
    return get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))


def test_ddp_looks_for_no_unused_parameters_by_default():
    kwargs = trainer_kwargs(DistributedConfig(), None, world_size=2, activation_checkpointing=False)
    assert kwargs == {"ddp_find_unused_parameters": False, "ddp_timeout": 1800}


def test_one_process_ignores_the_strategy(tiny_lora):
    for strategy in ("fsdp", "deepspeed"):
        d = DistributedConfig(strategy=strategy)
        kwargs = trainer_kwargs(d, tiny_lora, world_size=1, activation_checkpointing=False)
        assert "fsdp" not in kwargs and "deepspeed" not in kwargs


def test_fsdp_wraps_each_decoder_layer_and_transformers_accepts_it(tiny_lora, tmp_path):
    from transformers import TrainingArguments

    d = DistributedConfig(strategy="fsdp", fsdp_sharded_checkpoints=True)
    kwargs = trainer_kwargs(d, tiny_lora, world_size=2, activation_checkpointing=True)
    cfg = kwargs["fsdp_config"]
    assert cfg["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]  # from the PEFT model's base
    assert cfg["state_dict_type"] == "SHARDED_STATE_DICT"
    assert cfg["activation_checkpointing"] is True and kwargs["activation_checkpointing"] is False
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)
    plugin = args._process_fsdp_args()
    assert plugin["fsdp_version"] == 2
    assert plugin["reshard_after_forward"] is True  # full shard
    assert plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"


@pytest.mark.parametrize("preset", sorted(DEEPSPEED_PRESETS))
def test_deepspeed_presets_leave_batch_and_precision_to_the_trainer(preset):
    config = deepspeed_config(preset)
    stage = config["zero_optimization"]["stage"]
    assert stage == (2 if preset == "zero2" else 3)
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto"  # transformers fills these in from TrainingArguments
    if stage == 3:
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    kwargs = trainer_kwargs(
        DistributedConfig(strategy="deepspeed", deepspeed=preset),
        None,
        world_size=2,
        activation_checkpointing=False,
    )
    assert kwargs["deepspeed"] == config


def test_deepspeed_reads_a_users_json(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    assert deepspeed_config(str(path)) == {"zero_optimization": {"stage": 1}}
    with pytest.raises(TunesmithError, match="did you mean 'zero3'"):
        deepspeed_config("zero-3")
    path.write_text("[1, 2]")
    with pytest.raises(TunesmithError, match="JSON object"):
        deepspeed_config(str(path))


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_not_installed_is_refused_before_anything_runs():
    with pytest.raises(TunesmithError, match="deepspeed is not installed"):
        check(DistributedConfig(strategy="deepspeed"), device_type="cuda", world_size=2, method="lora")


def test_qlora_weights_cannot_be_sharded_by_fsdp():
    from transformers import BitsAndBytesConfig

    fsdp = DistributedConfig(strategy="fsdp")
    uint8 = BitsAndBytesConfig(load_in_4bit=True)
    with pytest.raises(TunesmithError, match="stored as uint8") as err:
        check(fsdp, device_type="cuda", world_size=2, method="qlora", quantization_config=uint8)
    assert any("strategy: ddp" in line for line in err.value.details)
    with pytest.raises(TunesmithError, match="int8"):
        eight = BitsAndBytesConfig(load_in_8bit=True)
        check(fsdp, device_type="cuda", world_size=2, method="qlora", quantization_config=eight)
    import torch

    bf16 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage=torch.bfloat16)
    check(fsdp, device_type="cuda", world_size=2, method="qlora", quantization_config=bf16)  # what FSDP needs
    check(
        replace(fsdp, strategy="ddp"),
        device_type="cuda",
        world_size=2,
        method="qlora",
        quantization_config=uint8,
    )
    check(fsdp, device_type="cuda", world_size=1, method="qlora", quantization_config=uint8)  # one process


def test_the_section_is_validated_like_every_other(run_config):
    from tunesmith.config import load_config
    from tunesmith.plugins import Plugins

    plugins = Plugins()
    resolved = load_config(
        run_config(),
        ["training.distributed.strategy=fsdp", "training.distributed.fsdp_sharded_checkpoints=true"],
        plugins,
    )
    assert resolved.training.distributed.strategy == "fsdp"
    assert resolved.to_dict()["training"]["distributed"]["fsdp_sharded_checkpoints"] is True
    with pytest.raises(TunesmithError) as err:
        load_config(
            run_config(), ["training.distributed.strategy=zero3", "training.distributed.timeout=5"], plugins
        )
    text = "\n".join(err.value.details)
    assert "training.distributed.strategy" in text
    assert "training.distributed.timeout: unknown option (did you mean 'timeout_minutes'?)" in text


def test_find_unused_parameters_is_on_only_when_asked_or_declared(run_config):
    from tunesmith.config import load_config
    from tunesmith.pipeline import distributed_training
    from tunesmith.plugins import Plugins

    plugins = Plugins()
    resolved = load_config(run_config(), [], plugins)
    assert distributed_training(resolved).distributed.find_unused_parameters is False
    type(resolved.method).ddp_find_unused_parameters = True  # what a method that needs it declares
    try:
        assert distributed_training(resolved).distributed.find_unused_parameters is True
    finally:
        del type(resolved.method).ddp_find_unused_parameters
    asked = load_config(run_config(), ["training.distributed.find_unused_parameters=true"], plugins)
    assert distributed_training(asked).distributed.find_unused_parameters is True


def test_fsdp_without_gpus_is_refused_rather_than_quietly_run_as_ddp():
    # accelerate enables FSDP only for GPU process groups; on CPU the Trainer would train with DDP.
    with pytest.raises(TunesmithError, match="FSDP trains on GPUs"):
        check(DistributedConfig(strategy="fsdp"), device_type="cpu", world_size=2, method="lora")
    check(DistributedConfig(strategy="fsdp"), device_type="cpu", world_size=1, method="lora")


def test_dry_run_prints_what_would_be_launched(run_config, tmp_path):
    import torch
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins

    config = run_config()
    args = ["run", str(config), "--nproc", "2", "--dry-run", "--set", "training.distributed.strategy=fsdp"]
    result = CliRunner().invoke(cli, args, obj=Plugins(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output[result.output.index("{") :])
    assert plan["command"][2:5] == ["torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert plan["command"][-3:] == ["run", str(config), "--set=training.distributed.strategy=fsdp"]
    fsdp = plan["training_arguments"]["fsdp_config"]
    assert fsdp["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]  # read from the model's config
    assert plan["training_arguments"]["ddp_find_unused_parameters"] is False
    if not torch.cuda.is_available():
        assert "FSDP trains on GPUs" in plan["refused_here"][0]
    assert not (tmp_path / "runs").exists()  # nothing ran
