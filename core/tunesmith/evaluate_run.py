"""Re-scoring a finished run: its saved artifact on a fresh base model, next to the base model itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.evaluation import evaluate
from tunesmith.plugins import Plugins
from tunesmith.prepare import check_problems, read_data
from tunesmith.rundir import write_json
from tunesmith.runs import LoadedRun, load_base, open_run
from tunesmith.ui import Quiet


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
    from tunesmith.config import resolve

    ui = ui or Quiet()
    loaded = open_run(run_dir, plugins)
    data = loaded.run.config()
    if evaluators:
        data["evaluators"] = [{"name": name} for name in evaluators]
    if splits:
        data["evaluation"]["splits"] = splits
    resolved = resolve(data, plugins, new_run=False)
    loaded = LoadedRun(loaded.run, resolved)
    prepared = read_data(resolved)
    check_problems(resolved, prepared)
    missing = [s for s in splits if s not in prepared.examples]
    if missing:
        raise TunesmithError(
            f"the run has no split named {', '.join(missing)}",
            details=[f"splits: {', '.join(prepared.examples)}"],
        )
    base, tokenizer = load_base(loaded, plugins)
    review = loaded.run.path / "review"
    metrics: dict[str, Any] = {"base": {}, "tuned": {}}
    if compare_base:
        ui.step("Evaluating the base model")
        metrics["base"], _, _, _ = evaluate(base, tokenizer, resolved, prepared, "base", ui, review)
    ui.step("Loading the tuned model")
    tuned = resolved.method.load(base, str(loaded.run.final))
    ui.step("Evaluating the tuned model")
    metrics["tuned"], _, metrics["errors"], metrics["gates"] = evaluate(
        tuned, tokenizer, resolved, prepared, "tuned", ui, review
    )
    write_json(loaded.run.path / "evals" / f"{time.strftime('%Y%m%d-%H%M%S')}.json", metrics)
    return metrics
