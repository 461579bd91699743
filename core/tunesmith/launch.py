"""``tunesmith run --nproc N``: start N processes on this machine with torch's own launcher.

This is what ``torchrun --standalone --nproc-per-node N -m tunesmith.cli run ...`` does (torch's
elastic launcher, a rendezvous on a free local port, no restarts), called in-process so that the
exit status is the main process's own: 2 for a mistake in the config or data, 3 for a failed gate.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import Any

from tunesmith.errors import TunesmithError


def launch(nproc: int, args: list[str]) -> int:
    """Run ``tunesmith <args>`` in ``nproc`` processes; returns the exit status to use."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise TunesmithError(
            f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPU(s); use one process per GPU"
        )
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun does: N processes share the cores
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    # The processes print their own errors; the launcher's failure summary would repeat them.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-m", "tunesmith.cli", *args)
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in exc.failures.items()}
        if codes.get(0, 0) > 0:
            return codes[0]
        return next((code for _, code in sorted(codes.items()) if code > 0), 1)
    return 0


def dry_run(nproc: int, args: list[str], resolved: Any, plugins: Any) -> dict[str, Any]:
    """What ``launch`` would start and what the Trainer would get in each process, without training:
    the command, the distributed ``TrainingArguments`` (the DeepSpeed JSON included) and whether
    this machine would refuse it. The model is not loaded; only its config is read."""
    import torch

    from tunesmith import parallel
    from tunesmith.pipeline import distributed_training
    from tunesmith.runs import base_model_path

    d = distributed_training(resolved).distributed
    device = "cuda" if torch.cuda.is_available() else "cpu"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    try:
        parallel.check(
            d,
            device_type=device,
            world_size=nproc,
            method=resolved.method.name,
            quantization_config=resolved.method.model_load_kwargs(device).get("quantization_config"),
        )
        refused = None
    except TunesmithError as exc:
        refused = [exc.message, *exc.details]
    try:
        kwargs = parallel.trainer_kwargs(
            d,
            model_class(base_model_path(resolved, plugins)),
            world_size=nproc,
            activation_checkpointing=bool(resolved.config.training.gradient_checkpointing),
        )
    except TunesmithError as exc:  # a DeepSpeed JSON that cannot be read
        kwargs, refused = {}, [exc.message, *exc.details]
    return {
        "command": [*command, "-m", "tunesmith.cli", *args],
        "processes": nproc,
        "strategy": d.strategy if nproc > 1 else "one process",
        "device": device,
        "training_arguments": kwargs,
        "refused_here": refused,
    }


def model_class(path: str) -> Any:
    """The transformers class a model directory or hub id would load as (for its decoder layers)."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    return getattr(transformers, name, None) if isinstance(name, str) else None


__all__ = ["dry_run", "launch"]
