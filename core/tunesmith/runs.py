"""Finished runs as inputs: where a run's base model comes from, loading a run's trained model, merging.

A run's ``model.path`` may name a model provider (``tiny``), a hub id or directory, or another finished
run ("continue from that run", e.g. DPO after SFT), whose trained weights are merged into its base once
and cached as ``RUN/merged``. Run tools (``eval``, ``generate``, ``chat``, ``merge``) and plugins (a
reward model's run, through :func:`load_run`) load finished runs from here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import Resolved, resolve
from tunesmith.contexts import Device
from tunesmith.errors import TunesmithError
from tunesmith.model_card import write_model_card
from tunesmith.plugins import Plugins
from tunesmith.rundir import RunDir

Log = Callable[[str], None]


def _silent(message: str) -> None:
    return None


@dataclass
class LoadedRun:
    """A complete run directory with its config resolved against the installed plugins."""

    run: RunDir
    resolved: Resolved

    @property
    def name(self) -> str:
        return self.run.path.name


def open_run(path: Path, plugins: Plugins) -> LoadedRun:
    run = RunDir.open_complete(path)
    return LoadedRun(run, resolve(run.config(), plugins, new_run=False))


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "run.json").is_file()


def base_model_path(
    resolved: Resolved, plugins: Plugins, log: Log = _silent, *, tokenizer_only: bool = False
) -> str:
    """The directory or hub id holding the run's base model (its tokenizer alone with ``tokenizer_only``).

    A model provider builds or fetches it; a finished run is merged into its base (cached).
    """
    provider, path = resolved.model_provider, str(resolved.config.model.path)
    if provider is not None:
        return provider.tokenizer_path(log) if tokenizer_only else provider.path(log)
    if is_run_dir(path):
        return str(merged_model_dir(Path(path), plugins, log=log))
    return path


def load_base(loaded: LoadedRun, plugins: Plugins) -> tuple[Any, Any]:
    """(base model, tokenizer) for a complete run, loaded as the run trained it; the tokenizer is the
    run's saved one."""
    from transformers import AutoTokenizer

    from tunesmith.models import load_base_model

    resolved = loaded.resolved
    device = Device.detect()
    tokenizer = AutoTokenizer.from_pretrained(str(loaded.run.final))
    base = load_base_model(
        resolved.config.model,
        base_model_path(resolved, plugins),
        device,
        precision=device.precision(resolved.config.training.precision),
        method=resolved.method,
        head=resolved.objective.model_kind,
    )
    return base, tokenizer


def merged_model_dir(path: str | Path, plugins: Plugins | None = None, log: Log = _silent) -> Path:
    """A finished run as a plain model directory: ``final`` when it holds a whole model, else the run's
    artifact merged into its base once and cached as ``RUN/merged``.

    For plugins that hand a run to other tools (exporters, uploaders, evaluation harnesses). ``plugins``
    defaults to the installed ones; ``log`` hears about a merge, which takes a while on a large model."""
    path = Path(path)
    plugins = plugins or Plugins()
    loaded = open_run(path, plugins)
    if not loaded.resolved.method.produces_adapter and (loaded.run.final / "config.json").is_file():
        return loaded.run.final  # full fine-tuning, freeze: already a whole model
    merged = loaded.run.path / "merged"
    if not (merged / "config.json").is_file():
        log(f"merging {path} into its base model (cached in {merged})")
        merge_run(path, merged, plugins, overwrite=True)
    return merged


def merge_run(path: Path, out: Path, plugins: Plugins, *, overwrite: bool = False) -> Path:
    """Fold a run's trained weights into its base model; writes a plain transformers model to ``out``."""
    loaded = open_run(path, plugins)
    method = loaded.resolved.method
    if out.exists() and not overwrite:
        raise TunesmithError(f"{out} already exists (use --overwrite to replace it)")
    base, tokenizer = load_base(loaded, plugins)
    model = method.merge(method.load(base, str(loaded.run.final)))
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    write_model_card(partial, loaded.run.path, loaded.resolved, _metrics(loaded.run.path), merged=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return out


def _metrics(run_path: Path) -> dict[str, Any]:
    path = run_path / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@dataclass
class FinishedRun:
    """A finished run's trained model, ready to use: what :func:`load_run` returns."""

    path: Path
    model: Any  #: the base model with the run's artifact loaded (in eval mode)
    tokenizer: Any  #: the run's saved tokenizer (its chat template included)
    objective: str  #: the objective that trained it, e.g. "sft" or "reward"
    method: str  #: the method, e.g. "lora"
    model_kind: str  #: "causal-lm", or "sequence-classification" for a reward model


def load_run(path: str | Path, plugins: Plugins | None = None) -> FinishedRun:
    """Load a complete tunesmith run's trained model onto a fresh copy of its base model.

    For plugins that use another run's model (a reward model scoring completions, say). Raises
    :class:`tunesmith.TunesmithError` when ``path`` is not a complete run. ``plugins`` defaults to the
    installed ones: the run's method and objective must be installed to load it.
    """
    plugins = plugins or Plugins()
    loaded = open_run(Path(path), plugins)
    base, tokenizer = load_base(loaded, plugins)
    model = loaded.resolved.method.load(base, str(loaded.run.final))
    model.eval()
    objective = loaded.resolved.objective
    return FinishedRun(
        Path(path), model, tokenizer, objective.name, loaded.resolved.method.name, objective.model_kind
    )
