"""Every built-in method through the real pipeline (CLI run): it trains, saves, and `tunesmith eval`
reloads its artifact and reproduces the tuned metrics; the report lists its trainable parameters."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tunesmith.cli import cli as group
from tunesmith.plugins import Plugins

pytestmark = pytest.mark.slow

OPTIONS = {
    "lora": {"r": 4},
    "qlora": {"r": 4},
    "dora": {"r": 4},
    "freeze": {"last_n_layers": 1},
    "adapter": {"bottleneck": 8},
    "prefix-tuning": {"num_virtual_tokens": 4},
    "prompt-tuning": {"num_virtual_tokens": 4},
    "p-tuning": {"num_virtual_tokens": 4},
}


def methods() -> list[str]:
    return sorted(Plugins().components["method"])


@pytest.mark.parametrize("method", methods())
def test_method_runs_end_to_end_and_reloads(method, run_config):
    config = run_config(
        method={"name": method, **OPTIONS.get(method, {})},
        training__max_steps=3,
        evaluation={"compare_base": False, "max_new_tokens": 4},
    )
    plugins = Plugins()
    result = CliRunner().invoke(group, ["run", str(config)], obj=plugins, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = config.parent / "runs" / "t"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["parameters"]["trainable"] <= metrics["parameters"]["total"]
    report = (run_dir / "report.md").read_text()
    assert f"method: `{method}`" in report and "trainable parameters:" in report
    assert "| test | exact-match/exact_match |" in report

    again = CliRunner().invoke(
        group, ["eval", str(run_dir), "--no-base"], obj=plugins, catch_exceptions=False
    )
    assert again.exit_code == 0, again.output
    rerun = json.loads(next((run_dir / "evals").iterdir()).read_text())
    assert rerun["tuned"]["test"] == pytest.approx(metrics["tuned"]["test"], rel=1e-4, abs=1e-6)
