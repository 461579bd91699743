"""The ``wandb`` tracker: the run's config, metrics per step, held-out metrics and files in Weights & Biases."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunesmith import Register, Tracker, hookimpl, option
from tunesmith_plugins.trackers import Artifacts, artifacts_option, result_files


class Wandb(Tracker):
    """Logs the run to Weights & Biases: the resolved config, training and validation metrics at every
    logged step, the held-out metrics of the base and tuned models (in the run summary) and the run
    directory.

    With `mode: offline` nothing leaves the machine: W&B writes the run under `dir` (by default the run
    directory's `wandb/`), and `wandb sync` uploads it later. `online` needs `wandb login` (or
    `WANDB_API_KEY`). The run directory's absolute path is the config key `run_dir`; `artifacts` says
    what of it is logged as a W&B artifact of type `tunesmith-run`. W&B's own console capture is off:
    tunesmith keeps its training log in the run directory.
    """

    name = "wandb"
    library = "wandb"
    install = "tunesmith[wandb]"

    @dataclass
    class Config:
        project: str | None = option(None, help="W&B project (default: $WANDB_PROJECT, else W&B's own)")
        entity: str | None = option(None, help="W&B team or user (default: your default entity)")
        run_name: str | None = option(None, help="W&B run name (default: the run config's name)")
        group: str | None = option(None, help="Group the run belongs to")
        tags: list[str] = option([], help="Tags on the W&B run")
        mode: Literal["online", "offline", "disabled"] | None = option(
            None,
            help="online, offline (upload later with wandb sync) or disabled (default: $WANDB_MODE, else online)",
        )
        dir: str | None = option(
            None, help="Directory W&B writes its files under (default: the run directory)"
        )
        artifacts: Artifacts = artifacts_option()

    def start(self, config: Mapping[str, Any], run_dir: Path, run_name: str) -> str:
        import wandb

        directory = Path(self.config.dir).expanduser().resolve() if self.config.dir else run_dir
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.config.project,
            entity=self.config.entity,
            name=self.config.run_name or run_name,
            group=self.config.group,
            tags=self.config.tags or None,
            mode=self.config.mode,
            dir=str(directory),
            config={**config, "run_dir": str(run_dir)},
            reinit="create_new",  # this run's own object: several runs in one process stay apart
            settings=wandb.Settings(console="off", silent=True),
        )
        if self.run.offline:
            where = Path(self.run.dir).parent  # the offline-run-* directory that wandb sync uploads
            return f"W&B: run {self.run.id} (offline) in {where}; upload it with wandb sync"
        return f"W&B: run {self.run.id} at {self.run.url or self.run.dir}"

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def finish(self, metrics: Mapping[str, Any], run_dir: Path) -> None:
        import wandb

        self.run.summary.update(self.final_metrics(metrics))
        if self.config.artifacts != "none":
            name = re.sub(r"[^A-Za-z0-9._-]", "-", f"run-{self.run.name or self.run.id}")
            artifact = wandb.Artifact(name, type="tunesmith-run", metadata={"run_dir": str(run_dir)})
            own = Path(self.run.dir).parent.parent  # W&B's own files, still being written: not part of it
            if self.config.artifacts == "all":
                files = [p for p in sorted(run_dir.rglob("*")) if p.is_file() and own not in p.parents]
            else:
                files = result_files(run_dir)
            for path in files:
                artifact.add_file(str(path), name=str(path.relative_to(run_dir)))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0)

    def abort(self, error: str) -> None:
        if getattr(self, "run", None) is not None:
            self.run.finish(exit_code=1)


@hookimpl
def register_trackers(register: Register[Tracker]) -> None:
    register(Wandb)
