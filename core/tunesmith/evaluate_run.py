"""Re-scoring a finished run: its saved artifact on a fresh base model, next to the base model itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunesmith.config import resolve
from tunesmith.errors import TunesmithError
from tunesmith.plugins import Plugins
from tunesmith.rundir import RunDir, write_json
from tunesmith.ui import Quiet


def load_base(run: RunDir, resolved: Any) -> tuple[Any, Any]:
    """(base model, tokenizer) for a complete run; the tokenizer is the run's saved one."""
    from transformers import AutoTokenizer

    from tunesmith.models import load_model, model_path, torch_dtype
    from tunesmith.training import Device

    device = Device.detect()
    cfg = resolved.config
    dtype = torch_dtype(cfg.model, device.precision(cfg.training.precision))
    tokenizer = AutoTokenizer.from_pretrained(str(run.final))
    path = model_path(cfg.model)
    base = load_model(
        cfg.model,
        path,
        dtype=dtype,
        extra=resolved.method.model_load_kwargs(device.type),
        head=resolved.objective.model_kind,
    )
    if (
        device.type != "cpu"
        and not getattr(base, "hf_device_map", None)
        and not getattr(base, "is_quantized", False)
    ):
        base.to(device.type)
    return base, tokenizer


def evaluate_run(
    run_dir: Path,
    plugins: Plugins,
    *,
    evaluators: list[str],
    splits: list[str],
    compare_base: bool = True,
    ui: Any = None,
) -> dict[str, Any]:
    """Score a finished run again, optionally with other evaluators or splits; writes evals/<time>.json."""
    from tunesmith.pipeline import check_problems, evaluate, read_data

    ui = ui or Quiet()
    run = RunDir.open_complete(run_dir)
    data = run.config()
    if evaluators:
        data["evaluators"] = [{"name": name} for name in evaluators]
    if splits:
        data["evaluation"]["splits"] = splits
    resolved = resolve(data, plugins)
    prepared = read_data(resolved)
    check_problems(resolved, prepared)
    missing = [s for s in splits if s not in prepared.examples]
    if missing:
        raise TunesmithError(
            f"the run has no split named {', '.join(missing)}",
            details=[f"splits: {', '.join(prepared.examples)}"],
        )
    base, tokenizer = load_base(run, resolved)
    metrics: dict[str, Any] = {"base": {}, "tuned": {}}
    if compare_base:
        ui.step("Evaluating the base model")
        metrics["base"], _, _ = evaluate(base, tokenizer, resolved, prepared, "base", ui, run.path / "review")
    ui.step("Loading the tuned model")
    tuned = resolved.method.load(base, str(run.final))
    ui.step("Evaluating the tuned model")
    metrics["tuned"], _, metrics["errors"] = evaluate(
        tuned, tokenizer, resolved, prepared, "tuned", ui, run.path / "review"
    )
    write_json(run.path / "evals" / f"{time.strftime('%Y%m%d-%H%M%S')}.json", metrics)
    return metrics
