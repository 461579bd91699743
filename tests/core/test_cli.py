"""User mistakes through the CLI: one line per problem, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from tunesmith.cli import cli as group
from tunesmith.config import read_yaml, resolve
from tunesmith.plugins import Plugins

BROKEN = (
    b'{"instruction": "Upper-case the word.", "input": "ab", "output": "AB"}\n'  # line 1: fine
    b'{"instruction": "Upper-case the word.", "input": "cd", "output": "CD"\n'  # 2: invalid JSON
    b'{"instruction": "Upper-case the word.", "input": "\xe9", "output": "E"}\n'  # 3: not UTF-8
    b'["not", "an", "object"]\n'  # 4
    b'{"instruction": "Upper-case the word.", "input": "ef"}\n'  # 5: missing output
    b'{"instruction": 7, "input": "gh", "output": "GH"}\n'  # 6: wrong type
    b'{"instruction": "Upper-case the word.", "input": "ij", "output": ""}\n'  # 7: empty completion
    b'{"instruction": "Upper-case the word.", "input": "k", "output": "' + b"K" * 400 + b'"}\n'  # 8: too long
)


def cli(*args: str):
    return CliRunner().invoke(group, list(args), obj=Plugins())


def broken_config(run_config, tmp_path):
    config = run_config()
    data = yaml.safe_load(config.read_text())
    bad = tmp_path / "data" / "broken.jsonl"
    bad.write_bytes(BROKEN)
    data["data"]["train"]["path"] = str(bad)
    config.write_text(yaml.safe_dump(data))
    return config, bad


def test_broken_records_get_one_line_each_with_file_and_line(run_config, tmp_path):
    config, bad = broken_config(run_config, tmp_path)
    for command in ("run", "data"):
        args = ("run", str(config)) if command == "run" else ("data", "check", str(config))
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        out = result.output
        for line, field in (
            (2, None),
            (3, None),
            (4, None),
            (5, "output"),
            (6, "instruction"),
            (7, "output"),
        ):
            assert f"{bad}:{line}:" in out, (line, out)
            if field:
                assert f"{bad}:{line}: field '{field}'" in out
        assert f"{bad}:1:" not in out
        assert not (config.parent / "runs").exists()  # nothing written


def test_overlong_records_are_reported_with_the_others(run_config, tmp_path):
    config, bad = broken_config(run_config, tmp_path)
    result = cli("data", "check", str(config))
    assert result.exit_code == 2 and "7 invalid record(s)" in result.output
    assert f"{bad}:8: example has" in result.output and "max_length 128" in result.output


def test_drop_skips_and_counts_invalid_records(run_config, tmp_path):
    config, _ = broken_config(run_config, tmp_path)
    result = cli("data", "check", str(config), "--set", "data.on_invalid=drop")
    assert result.exit_code == 0, result.output
    assert "dropped 7 invalid record(s)" in result.output and "data OK" in result.output
    truncating = cli(
        "data", "check", str(config), "--set", "data.on_invalid=drop", "--set", "data.truncate=true"
    )
    assert "dropped 6 invalid record(s)" in truncating.output  # line 8 is kept, truncated


def test_data_check_shows_stats_and_a_rendered_example(run_config):
    result = cli("data", "check", str(run_config()))
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "test" in result.output and "48" in result.output
    assert "Training example" in result.output and "Upper-case the word." in result.output


def test_config_typo_gets_did_you_mean(run_config):
    result = cli("run", str(run_config()), "--set", "training.learning_rte=1e-4")
    assert result.exit_code == 2
    assert "training.learning_rte: unknown option (did you mean 'learning_rate'?)" in result.output
    assert "Traceback" not in result.output


def test_unknown_component_lists_available_ones(run_config):
    result = cli("run", str(run_config()), "--set", "method.name=lorra")
    assert result.exit_code == 2 and "did you mean 'lora'" in result.output and "full" in result.output


def test_missing_config_file(tmp_path):
    result = cli("run", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "config file not found" in result.output


def test_init_writes_a_config_that_validates(tmp_path):
    path = tmp_path / "tunesmith.yaml"
    assert cli("init", str(path)).exit_code == 0
    resolved = resolve(read_yaml(path), Plugins())
    assert resolved.method.name == "lora" and resolved.config.model.path == "tiny"
    assert cli("init", str(path)).exit_code == 2  # refuses to overwrite


def test_plugins_show_unknown_name_suggests(tmp_path):
    result = cli("plugins", "show", "lorra")
    assert result.exit_code == 2 and "did you mean 'lora'" in result.output
