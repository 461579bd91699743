"""The ``mlflow`` tracker: the run's parameters, metrics per step, held-out metrics and files in MLflow."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import Register, Tracker, hookimpl, option
from tunesmith_plugins.trackers import Artifacts, artifacts_option, result_files

#: URI schemes MLflow stores in a database (through SQLAlchemy, which mlflow-skinny leaves out).
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
#: MLflow accepts at most this many parameters per call, and this long a value.
PARAMS_PER_CALL, PARAM_LENGTH = 100, 6000


class Mlflow(Tracker):
    """Logs the run to MLflow: the resolved config as parameters, training and validation metrics at
    every logged step, the held-out metrics of the base and tuned models, and the run directory.

    `tracking_uri` is a local directory (MLflow's file store, kept for local use; tunesmith sets
    `MLFLOW_ALLOW_FILE_STORE=true` for it), a database URI such as `sqlite:///mlflow.db` (needs the full
    `mlflow` package), or an MLflow server `http(s)://...`. The run directory's absolute path is the
    tag `tunesmith.run_dir`; `artifacts` says what of it is copied into the MLflow run. Metric names are
    the training log's (`loss`, `learning_rate`, `eval_loss`, ...) and `tuned/<split>/<metric>`,
    `base/<split>/<metric>` for the held-out scores.
    """

    name = "mlflow"
    library = "mlflow"
    install = "tunesmith[mlflow]"

    @dataclass
    class Config:
        tracking_uri: str | None = option(
            None,
            help="Where runs are stored: a directory, sqlite:///file.db or http(s)://server "
            "(default: $MLFLOW_TRACKING_URI, else ./mlruns)",
        )
        experiment: str | None = option(
            None, help="Experiment name, created if missing (default: $MLFLOW_EXPERIMENT_NAME, else Default)"
        )
        run_name: str | None = option(None, help="MLflow run name (default: the run config's name)")
        tags: dict = option({}, help="Tags set on the MLflow run, e.g. {team: search}")
        artifacts: Artifacts = artifacts_option()

    def validate(self):  # noqa: ANN201
        yield from super().validate()
        scheme = self.uri().partition(":")[0].split("+")[0]
        if scheme in DATABASE_SCHEMES and not _installed("sqlalchemy"):
            why = f"a {scheme} store needs the full mlflow package (mlflow-skinny has no database stores)"
            yield "tracking_uri", f"{why}: pip install mlflow, or give a directory"

    def uri(self) -> str:
        return self.config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"

    def start(self, config: Mapping[str, Any], run_dir: Path, run_name: str) -> str:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.uri()
        if "://" not in uri and not uri.startswith("file:"):  # a directory: MLflow's file store
            uri = str(Path(uri).expanduser().resolve())
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.config.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        tags = {**{str(k): str(v) for k, v in self.config.tags.items()}, "tunesmith.run_dir": str(run_dir)}
        run = self.client.create_run(experiment_id, run_name=self.config.run_name or run_name, tags=tags)
        self.run_id = run.info.run_id
        self.last_step = 0
        params = [Param(key, str(value)[:PARAM_LENGTH]) for key, value in self.flat_config(config).items()]
        for i in range(0, len(params), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i : i + PARAMS_PER_CALL])
        return f"MLflow: run {self.run_id} in experiment '{experiment}' at {uri}"

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.last_step = step
        self._log_metrics(metrics, step)

    def finish(self, metrics: Mapping[str, Any], run_dir: Path) -> None:
        self._log_metrics(self.final_metrics(metrics), self.last_step)
        if self.config.artifacts == "all":
            self.client.log_artifacts(self.run_id, str(run_dir), artifact_path="run")
        elif self.config.artifacts == "results":
            for path in result_files(run_dir):
                self.client.log_artifact(self.run_id, str(path), artifact_path="run")
        self.client.set_terminated(self.run_id, "FINISHED")

    def abort(self, error: str) -> None:
        if getattr(self, "run_id", None):
            self.client.set_tag(self.run_id, "tunesmith.error", error[:PARAM_LENGTH])
            self.client.set_terminated(self.run_id, "FAILED")

    def _log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow's limit per call
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@hookimpl
def register_trackers(register: Register[Tracker]) -> None:
    register(Mlflow)
