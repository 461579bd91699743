"""Built-in experiment trackers: ``mlflow``, ``wandb`` and ``trackio``. Each imports its library only
inside its methods, so listing plugins never loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tunesmith import option

#: What a tracker copies of the run directory when the run ends.
Artifacts = Literal["results", "all", "none"]

ARTIFACTS_HELP = (
    "What of the run directory to upload when the run ends: results (its top-level files: config, "
    "manifest, metrics, report, training log), all (the whole directory, checkpoints and final model "
    "included), or none; the directory's path is recorded in every case"
)


def artifacts_option() -> Artifacts:
    return option("results", help=ARTIFACTS_HELP)


def result_files(run_dir: Path) -> list[Path]:
    """The run directory's top-level files (not final/, checkpoints/, tensorboard/ ...), sorted."""
    return sorted(p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))
