"""Gates: an evaluator's pass/fail judgement reaches metrics.json, the report and the exit status."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from tunesmith import Evaluator, Register, hookimpl, option


class Strict(Evaluator):
    """Fails its gate on the tuned model when told to."""

    name = "strict"

    @dataclass
    class Config:
        passed: bool = option(False, help="the gate's verdict")
        fail_run: bool = option(True, help="whether a failure fails the run")

    def evaluate(self, ctx):
        if ctx.label == "tuned":
            ctx.gate("verdict", self.config.passed, "as configured", fail_run=self.config.fail_run)
        return {"score": 1.0}


class Plugin:
    @hookimpl
    def register_evaluators(self, register: Register[Evaluator]) -> None:
        register(Strict)


def test_gates_are_collected_per_evaluator_and_split():
    from tunesmith.evaluation import run_evaluators
    from tunesmith.testing.models import build_random_model, build_tokenizer

    tok = build_tokenizer()
    result = run_evaluators(build_random_model(tok), tok, [Strict()], [], split="test", label="tuned")
    assert result.gates == [
        {
            "evaluator": "strict",
            "split": "test",
            "name": "verdict",
            "passed": False,
            "detail": "as configured",
            "fail_run": True,
        }
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("options", "exit_code"), [({"passed": True}, 0), ({"fail_run": False}, 0), ({}, 3)])
def test_a_failed_gate_marks_the_report_and_the_exit_status(run_config, options, exit_code):
    from click.testing import CliRunner

    from tunesmith.cli import cli as group
    from tunesmith.plugins import Plugins, PluginSource, entry_point_sources

    plugins = Plugins([*entry_point_sources(), PluginSource("strict", "test", "0", "strict", Plugin)])
    config = run_config(evaluators=[{"name": "strict", **options}])
    result = CliRunner().invoke(group, ["run", str(config)], obj=plugins, catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    run_dir = config.parent / "runs" / "t"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"  # artifacts are kept
    gates = json.loads((run_dir / "metrics.json").read_text())["gates"]
    assert gates and gates[0]["passed"] == options.get("passed", False)
    report = (run_dir / "report.md").read_text()
    assert "## Gates" in report
    if exit_code:
        assert "**FAIL**" in report and "gate failed" in result.output
