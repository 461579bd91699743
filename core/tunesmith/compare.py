"""``tunesmith compare``: held-out metrics of several finished runs side by side.

One row per run (its tuned model's metrics) plus a ``base`` row (the base model's metrics, from the
first run that scored its base model); columns are every ``split/metric`` any run has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.rundir import RunDir


@dataclass
class Comparison:
    """The rows (name -> {column: value}), columns in first-seen order, and notes for the reader."""

    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "notes": self.notes}


def flatten(per_split: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{split: {metric: value}}`` -> ``{"split/metric": value}``."""
    return {
        f"{split}/{name}": value for split, metrics in per_split.items() for name, value in metrics.items()
    }


def _base_model(run: RunDir) -> str | None:
    try:
        model = (run.config() or {}).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(model, dict):
        return model.get("path")
    return model if isinstance(model, str) else None


def _metrics(run: RunDir) -> dict[str, Any]:
    path = run.path / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TunesmithError(f"{run.path} has no metrics.json") from exc
    except ValueError as exc:
        raise TunesmithError(f"{path} is not valid JSON: {exc}") from exc


def names_for(paths: list[Path]) -> list[str]:
    """Row names: each run directory's name, or more of its path where two names clash."""
    names = [p.name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def compare_runs(paths: list[Path]) -> Comparison:
    """Read every run (each must be complete) and build the comparison."""
    if not paths:
        raise TunesmithError("give at least one run directory")
    runs = [RunDir.open_complete(Path(p)) for p in paths]
    metrics = [_metrics(run) for run in runs]
    models = [_base_model(run) for run in runs]
    names = names_for([run.path for run in runs])
    result = Comparison()
    tuned = [flatten(m.get("tuned") or {}) for m in metrics]
    base_index = next((i for i, m in enumerate(metrics) if m.get("base")), None)
    base = flatten(metrics[base_index]["base"]) if base_index is not None else {}
    for row in [base, *tuned]:
        for column in row:
            if column not in result.columns:
                result.columns.append(column)
    if base_index is None:
        result.notes.append("no run scored its base model (evaluation.compare_base was off)")
    else:
        result.rows.append(
            {"name": "base", "run": str(runs[base_index].path), "model": models[base_index], "metrics": base}
        )
        if base_index != 0:
            result.notes.append(f"the first run has no base metrics; the base row is {names[base_index]}'s")
    known = {m for m in models if m is not None}
    if len(known) > 1:
        listing = ", ".join(f"{n}: {m}" for n, m in zip(names, models, strict=True))
        where = names[base_index] if base_index is not None else names[0]
        result.notes.append(f"the runs have different base models ({listing}); the base row is {where}'s")
    for name, run, model, row in zip(names, runs, models, tuned, strict=True):
        result.rows.append({"name": name, "run": str(run.path), "model": model, "metrics": row})
    return result


__all__ = ["Comparison", "compare_runs", "flatten"]
