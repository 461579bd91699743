"""The lm-eval evaluator: lm-evaluation-harness tasks on the model in memory give the numbers lm-eval's own
command line gives on the same model saved to disk (the base directory, and ``tunesmith merge``'s output
for the tuned adapter). The tasks are local YAML files over JSONL shipped in tests/data/lm_eval_task."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunesmith.testing import EvaluatorConformance
from tunesmith_plugins.evaluators.lm_eval import LmEval

ROOT = Path(__file__).resolve().parents[2]
TASKS = "tests/data/lm_eval_task"  # the task YAMLs name their JSONL relative to the repository root
NAMES = ["tiny_sums", "tiny_copy", "tiny_echo"]  # multiple choice, log-likelihood, generation


def lm_eval_cli(model_dir: Path, out: Path) -> dict[str, float]:
    """lm-eval's own command line on a saved model, flattened like the evaluator's metrics."""
    from tunesmith_plugins.evaluators.lm_eval import flatten

    command = [sys.executable, "-m", "lm_eval", "--model", "hf"]
    command += ["--model_args", f"pretrained={model_dir},dtype=float32", "--device", "cpu"]
    command += [
        "--tasks",
        ",".join(NAMES),
        "--include_path",
        TASKS,
        "--batch_size",
        "4",
        "--output_path",
        str(out),
    ]
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**_env(), **env})
    assert result.returncode == 0, result.stderr[-3000:]
    (written,) = out.rglob("results_*.json")
    return flatten(json.loads(written.read_text())["results"])


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def assert_same(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert set(ours) == set(theirs) == {f"{t}/{m}" for t, m in TASK_METRICS}
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-5), name


TASK_METRICS = [
    ("tiny_sums", "acc"),
    ("tiny_sums", "acc_norm"),
    ("tiny_copy", "perplexity"),
    ("tiny_copy", "acc"),
    ("tiny_echo", "exact_match"),
    ("tiny_echo", "chrf"),
]


def test_flatten_keeps_numeric_metrics_and_names_filters() -> None:
    from tunesmith_plugins.evaluators.lm_eval import flatten

    results = {
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": 0.1,
            "exact_match,flexible-extract": 0.5,
        },
        "tiny_sums": {"acc,none": 1.0, "acc_stderr,none": "N/A", "sample_len": 12},
    }
    assert flatten(results) == {
        "gsm8k/exact_match/strict-match": 0.25,
        "gsm8k/exact_match/flexible-extract": 0.5,
        "tiny_sums/acc": 1.0,
    }


def task_with_absolute_data(name: str) -> str:
    """A folder holding task ``name`` whose data file is named by absolute path (the kit runs elsewhere)."""
    folder = Path(tempfile.mkdtemp(prefix="lm-eval-task-"))
    text = (ROOT / TASKS / f"{name}.yaml").read_text(encoding="utf-8")
    (folder / f"{name}.yaml").write_text(text.replace(f"{TASKS}/", f"{ROOT / TASKS}/"), encoding="utf-8")
    return str(folder)


class TestLmEvalConformance(EvaluatorConformance):
    """The evaluator kit's checks, on the log-likelihood task."""

    evaluator = LmEval
    options = {"tasks": ["tiny_copy"], "include_path": task_with_absolute_data("tiny_copy"), "limit": 4}


def test_options_are_checked_against_lm_evals_task_index(monkeypatch) -> None:
    from tunesmith_plugins.evaluators.lm_eval import LmEval

    monkeypatch.chdir(ROOT)
    assert list(LmEval(LmEval.Config(tasks=NAMES, include_path=TASKS)).validate()) == []
    problems = list(LmEval(LmEval.Config(tasks=["tiny_sum"], include_path=TASKS)).validate())
    assert problems and problems[0][0] == "tasks" and "did you mean 'tiny_sums'?" in problems[0][1]
    assert list(LmEval(LmEval.Config()).validate())[0][0] == "tasks"
    assert list(LmEval(LmEval.Config(tasks=NAMES, include_path="nowhere")).validate())[0][0] == "include_path"


def plugins_with_lm_eval():
    """The installed plugins, plus this one when the editable install predates its entry point."""
    from tunesmith.plugins import Plugins, PluginSource, entry_point_sources

    sources = entry_point_sources()
    if not any(s.name == "lm-eval" for s in sources):
        import tunesmith_plugins.evaluators.lm_eval as module

        sources.append(PluginSource("lm-eval", "tunesmith", "0", module.__name__, lambda: module))
    return Plugins(sources)


@pytest.mark.slow
def test_a_run_scores_base_and_tuned_like_lm_evals_cli(run_config, tiny_model_dir, tmp_path, monkeypatch):
    """A LoRA run with the lm-eval evaluator: its base numbers equal lm-eval's CLI on the base model
    directory, its tuned numbers (adapter in memory) lm-eval's CLI on ``tunesmith merge``'s output."""
    from tunesmith.cli import cli

    monkeypatch.chdir(ROOT)
    config = run_config(
        evaluators=[{"name": "lm-eval", "tasks": NAMES, "include_path": TASKS, "batch_size": 4}],
        training={
            "max_steps": 8,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "logging_steps": 4,
            "save_steps": 8,
        },
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(config)], obj=plugins_with_lm_eval(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "t"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ours = {
        label: {
            k.removeprefix("lm-eval/"): v
            for k, v in metrics[label]["test"].items()
            if k.startswith("lm-eval/")
        }
        for label in ("base", "tuned")
    }
    merged = tmp_path / "merged"
    result = runner.invoke(cli, ["merge", str(run_dir), "-o", str(merged)], obj=plugins_with_lm_eval())
    assert result.exit_code == 0, result.output

    assert_same(ours["base"], lm_eval_cli(tiny_model_dir, tmp_path / "cli-base"))
    assert_same(ours["tuned"], lm_eval_cli(merged, tmp_path / "cli-tuned"))
    # Training moved the model: the comparison is between two different sets of numbers.
    assert ours["tuned"]["tiny_copy/perplexity"] != pytest.approx(
        ours["base"]["tiny_copy/perplexity"], rel=1e-3
    )
