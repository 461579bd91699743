"""The built-in trackers (mlflow, wandb, trackio), read back with each library's own reader.

One short run of the tiny model reports to all of them at once, plus an MLflow tracker whose server is
unreachable: the run must complete, the good trackers must hold exactly what the run's own
``train_log.jsonl`` and ``metrics.json`` say, and the bad one must be recorded, not fatal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner
from conftest import upper_task, write_jsonl

from tunesmith.cli import cli

LIBRARIES = ("mlflow", "wandb", "trackio")


def invoke(*args: str):
    from tunesmith.plugins import Plugins

    return CliRunner().invoke(cli, list(args), obj=Plugins())


def config_for(root: Path, model_dir: Path, tracking: list) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "train.jsonl", upper_task(48, seed=1))
    write_jsonl(data / "validation.jsonl", upper_task(8, seed=3))
    write_jsonl(data / "test.jsonl", upper_task(8, seed=2))
    config = {
        "name": "tracked",
        "output_dir": str(root / "runs" / "{name}"),
        "model": {"path": str(model_dir)},
        "data": {
            "train": {"name": "jsonl", "path": str(data / "train.jsonl")},
            "validation": {"name": "jsonl", "path": str(data / "validation.jsonl")},
            "test": {"name": "jsonl", "path": str(data / "test.jsonl")},
            "max_length": 128,
        },
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "training": {"max_steps": 6, "batch_size": 4, "logging_steps": 2, "eval_steps": 3, "save_steps": 6},
        "evaluators": ["perplexity", "exact-match"],
        "evaluation": {"max_new_tokens": 8},
        "tracking": tracking,
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model_dir):
    """One run reporting to every built-in tracker and to an MLflow server that is down."""
    root = tmp_path_factory.mktemp("tracked")
    tracking = [
        {
            "name": "mlflow",
            "tracking_uri": str(root / "mlruns"),
            "experiment": "dates",
            "tags": {"team": "x"},
        },
        {"name": "wandb", "project": "p", "mode": "offline", "tags": ["tiny"], "artifacts": "all"},
        {"name": "trackio", "project": "p", "dir": str(root / "trackio")},
        {"name": "mlflow", "tracking_uri": "http://127.0.0.1:9", "experiment": "down"},
    ]
    config = config_for(root, tiny_model_dir, tracking)
    # A fresh process, as `tunesmith run` is: trackio fixes its store when first imported, and other
    # tests in this process may have imported it already.
    env = {k: v for k, v in os.environ.items() if k != "TRACKIO_DIR"}
    env |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}  # the server is down
    done = subprocess.run(
        [sys.executable, "-m", "tunesmith.cli", "run", str(config)], env=env, capture_output=True, text=True
    )
    run_dir = root / "runs" / "tracked"
    return {
        "root": root,
        "result": SimpleNamespace(exit_code=done.returncode, output=done.stdout + done.stderr),
        "run_dir": run_dir,
        "log": [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()],
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
    }


def logged(log: list[dict], key: str) -> dict[int, float]:
    """``{step: value}`` of one metric, as the run's own training log has it."""
    return {entry["step"]: entry[key] for entry in log if key in entry}


def held_out(metrics: dict) -> dict[str, float]:
    return {
        f"{side}/{split}/{name}": value
        for side in ("base", "tuned")
        for split, scores in metrics[side].items()
        for name, value in scores.items()
    }


@pytest.mark.slow
def test_a_tracker_that_fails_is_reported_and_the_run_goes_on(tracked):
    result, metrics = tracked["result"], tracked["metrics"]
    assert result.exit_code == 0, result.output
    assert json.loads((tracked["run_dir"] / "run.json").read_text())["status"] == "complete"
    [error] = metrics["tracker_errors"]
    assert error.startswith("tracker 'mlflow' failed in start")
    assert "tracker 'mlflow' failed in start" in " ".join(result.output.split())
    assert len(logged(tracked["log"], "loss")) >= 3 and logged(tracked["log"], "eval_loss")


@pytest.mark.slow
def test_mlflow_holds_the_config_the_metrics_per_step_and_the_results(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny reads file stores only with it

    client = MlflowClient(tracking_uri=str(tracked["root"] / "mlruns"))
    experiment = client.get_experiment_by_name("dates")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.tags["team"] == "x"
    assert run.data.tags["tunesmith.run_dir"] == str(tracked["run_dir"].resolve())
    assert run.data.params["training.max_steps"] == "6" and run.data.params["method.name"] == "lora"
    for key in ("loss", "eval_loss", "learning_rate"):
        history = client.get_metric_history(run.info.run_id, key)
        assert {m.step: m.value for m in history} == pytest.approx(logged(tracked["log"], key)), key
    final = held_out(tracked["metrics"])
    assert final and {k: run.data.metrics[k] for k in final} == pytest.approx(final)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/metrics.json", "run/config.yaml", "run/train_log.jsonl"} <= artifacts


@pytest.mark.slow
def test_wandb_offline_run_files_hold_the_metrics(tracked):
    """Read with W&B's own reader of its transaction log (``wandb leet inspect``)."""
    [wandb_file] = (tracked["run_dir"] / "wandb").glob("offline-run-*/run-*.wandb")
    inspect = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_file)]
    records = [
        json.loads(line)
        for line in subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.splitlines()
    ]
    history: dict[int, dict] = {}
    for record in records:
        if record["type"] == "history":
            history.setdefault(record["history"]["step"].get("num", 0), {}).update(record["history"]["item"])
    for key in ("loss", "eval_loss"):
        got = {step: row[key] for step, row in history.items() if key in row}
        assert got == pytest.approx(logged(tracked["log"], key)), key
    [run] = [r["run"] for r in records if r["type"] == "run"]
    assert run["display_name"] == "tracked" and run["project"] == "p" and run["tags"] == ["tiny"]
    summary = json.loads(
        subprocess.run([*inspect, "--summary"], capture_output=True, text=True, check=True).stdout
    )
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["config"]["run_dir"] == str(tracked["run_dir"].resolve())
    assert summary["config"]["training"]["max_steps"] == 6
    final = held_out(tracked["metrics"])
    assert {k: summary["summary"][k] for k in final} == pytest.approx(final)
    [artifact] = [r["artifact"] for r in records if r["type"] == "artifact"]
    paths = {entry["path"] for entry in artifact["manifest"]["contents"]}
    assert artifact["type"] == "tunesmith-run" and {"metrics.json", "final/adapter_config.json"} <= paths
    assert not any(path.startswith("wandb/") for path in paths)  # W&B's own files stay out


@pytest.mark.slow
def test_trackio_local_store_holds_the_metrics(tracked):
    """Read with trackio's own storage API (the run wrote its store under the configured dir), in a
    process whose trackio was first imported with that store."""
    store = (tracked["root"] / "trackio").resolve()
    assert (store / "p.db").is_file()
    read = (
        "import json; from trackio import utils; from trackio.sqlite_storage import SQLiteStorage as S; "
        "print(json.dumps([str(utils.TRACKIO_DIR), S.get_logs('p', 'tracked'), S.get_run_config('p', 'tracked')], "
        "default=str))"
    )
    env = {**os.environ, "TRACKIO_DIR": str(store)}
    out = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, check=True)
    where, logs, config = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(where) == store
    for key in ("loss", "eval_loss"):
        got = {row["step"]: row[key] for row in logs if key in row}
        assert got == pytest.approx(logged(tracked["log"], key)), key
    final = held_out(tracked["metrics"])
    last = {k: v for row in logs for k, v in row.items() if k in final}
    assert last == pytest.approx(final)
    assert config["run_dir"] == str(tracked["run_dir"].resolve()) and config["method"]["name"] == "lora"


def test_an_unknown_tracker_gets_a_did_you_mean(run_config):
    config = run_config(tracking=[{"name": "mlfow", "experiment": "x"}])
    result = invoke("run", str(config))
    assert result.exit_code == 2, result.output
    assert "tracking[0]: unknown tracker 'mlfow' (did you mean 'mlflow'?)" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_missing_library_is_a_config_error_naming_the_install(run_config, monkeypatch, library):
    monkeypatch.setitem(sys.modules, library, None)  # what Python does for a module that is not installed
    config = run_config(tracking=[{"name": library}])
    result = invoke("run", str(config))
    assert result.exit_code == 2, result.output
    assert f"pip install 'tunesmith[{library}]'" in " ".join(result.output.split())


def test_listing_plugins_imports_no_tracker_library():
    """``--help``, ``plugins list`` and ``plugins show`` and loading every plugin leave the libraries alone."""
    code = (
        "import sys\n"
        "from tunesmith.cli import main\n"
        "from tunesmith.plugins import Plugins\n"
        "for args in (['--help'], ['plugins', 'list'], ['plugins', 'show', 'mlflow']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
        "assert {'mlflow', 'wandb', 'trackio'} <= set(Plugins().components['tracker'])\n"
        f"print('MODULES', *sorted(m for m in sys.modules if m.split('.')[0] in {LIBRARIES!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [modules] = [line for line in done.stdout.splitlines() if line.startswith("MODULES")]
    assert modules == "MODULES"


def test_a_tracker_that_raises_mid_run_is_closed_and_dropped_while_the_others_go_on(tmp_path):
    from tunesmith import Tracker
    from tunesmith.tracking import Tracking

    class Recording(Tracker):
        name = "recording"

        def __init__(self, fail_at: int | None = None) -> None:
            super().__init__()
            self.fail_at, self.calls = fail_at, []

        def start(self, config, run_dir, run_name):
            self.calls.append(("start", run_name))
            return f"recording {run_name}"

        def log(self, step, metrics):
            if step == self.fail_at:
                raise ConnectionError("server went away")
            self.calls.append(("log", step))

        def finish(self, metrics, run_dir):
            self.calls.append(("finish", self.final_metrics(metrics)))

        def abort(self, error):
            self.calls.append(("abort", error))

    failing, steady, warnings = Recording(fail_at=2), Recording(), []
    tracking = Tracking([failing, steady], warnings.append)
    assert tracking.start({}, tmp_path, "r") == ["recording r", "recording r"]
    for step in (1, 2, 3):
        tracking.log(step, {"loss": 1.0 / step})
    tracking.finish({"tuned": {"test": {"acc/acc": 0.5}}, "base": {}}, tmp_path)
    assert failing.calls[:2] == [("start", "r"), ("log", 1)] and failing.calls[2][0] == "abort"
    assert len(failing.calls) == 3  # not called again after it failed
    assert steady.calls == [
        ("start", "r"),
        ("log", 1),
        ("log", 2),
        ("log", 3),
        ("finish", {"tuned/test/acc/acc": 0.5}),
    ]
    assert tracking.errors == warnings
    assert tracking.errors == [
        "tracker 'recording' failed in log (ConnectionError: server went away); it is off for the rest of the run"
    ]
