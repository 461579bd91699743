"""Bad input is a clean error before any compute: exit code 2, the file:line or config key in the
message, no traceback, no run directory, no model loaded.

Data cases are files under ``tests/data/bad``; config cases are ``--set`` overrides of a good config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything loads a model."""
    import tunesmith.models as models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models, "load_base_model", refuse)


def cli(*args: str):
    from tunesmith.cli import cli as group
    from tunesmith.plugins import Plugins

    return CliRunner().invoke(group, list(args), obj=Plugins(), catch_exceptions=False)


def refused(result, *expected: str) -> str:
    text = result.output
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    for part in expected:
        assert part in text, f"{part!r} not in:\n{text}"
    return text


# ------------------------------------------------------------------------------------------- data

CHAT_CASES = {
    # file: what the message must say (besides file:line)
    "lone_surrogate.jsonl": (2, "messages[1].content", "lone UTF-16 surrogate"),
    "assistant_first.jsonl": (2, "messages[0].role", "starts with an assistant turn"),
    "user_user.jsonl": (2, "messages[1].role", "two user turns in a row"),
    "assistant_assistant.jsonl": (2, "messages[2].role", "two assistant turns in a row"),
    "mid_system.jsonl": (2, "messages[2].role", "a system turn is only allowed first"),
}


@pytest.mark.parametrize("name", sorted(CHAT_CASES))
def test_bad_chat_records_name_their_line_and_field(name, run_config, tmp_path, no_model):
    line, field, message = CHAT_CASES[name]
    shutil.copy(BAD / name, tmp_path / name)
    config = run_config(data={"train": {"name": "jsonl", "path": str(tmp_path / name)}}, formatter="chat")
    for command in (("data", "check"), ("run",)):
        refused(cli(*command, str(config)), f"{name}:{line}", field, message)
    assert not (tmp_path / "runs").exists()


def test_the_alternation_check_can_be_turned_off_for_templates_that_accept_it(run_config, tmp_path):
    shutil.copy(BAD / "user_user.jsonl", tmp_path / "u.jsonl")
    config = run_config(
        data={"train": {"name": "jsonl", "path": str(tmp_path / "u.jsonl")}},
        formatter={"name": "chat", "alternate": False},
    )
    result = cli("data", "check", str(config))
    assert result.exit_code == 0, result.output


def test_a_chat_the_template_refuses_is_a_record_problem(run_config, tmp_path, no_model):
    """With the order check off, a conversation the template itself rejects is still that record's
    problem (file:line), not a traceback."""
    shutil.copy(BAD / "assistant_first.jsonl", tmp_path / "a.jsonl")
    template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with the user') }}"
        "{% endif %}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    config = run_config(
        data={"train": {"name": "jsonl", "path": str(tmp_path / "a.jsonl")}},
        formatter={"name": "chat", "alternate": False},
        template={"chat_template": template},
    )
    refused(cli("data", "check", str(config)), "a.jsonl:2", "the chat template rejected this conversation")


def test_a_utf16_file_says_so(run_config, tmp_path, no_model):
    shutil.copy(BAD / "utf16.jsonl", tmp_path / "u16.jsonl")
    config = run_config(
        data={"train": {"name": "jsonl", "path": str(tmp_path / "u16.jsonl")}}, formatter="chat"
    )
    refused(cli("run", str(config)), "u16.jsonl", "UTF-16 encoded", "iconv")


def test_a_corrupt_parquet_file_is_a_clean_error(run_config, tmp_path, no_model):
    shutil.copy(BAD / "corrupt.parquet", tmp_path / "c.parquet")
    config = run_config(data={"train": {"name": "parquet", "path": str(tmp_path / "c.parquet")}})
    refused(cli("run", str(config)), "c.parquet", "not a readable Parquet file")


def test_a_huge_line_is_refused_without_tokenizing_it(run_config, tmp_path, monkeypatch, no_model):
    import tunesmith.data as data

    record = {"instruction": "Repeat.", "input": "", "output": "x" * 5_000_000}
    path = tmp_path / "big.jsonl"
    path.write_text(
        json.dumps({"instruction": "a", "input": "", "output": "b"}) + "\n" + json.dumps(record) + "\n"
    )
    real = data._encode_chat

    def guarded(chat, messages, **kwargs):
        assert sum(len(m["content"]) for m in messages) < 1_000_000, "tokenized a 5 MB record"
        return real(chat, messages, **kwargs)

    monkeypatch.setattr(data, "_encode_chat", guarded)
    config = run_config(data={"train": {"name": "jsonl", "path": str(path)}, "max_length": 128})
    refused(cli("run", str(config)), "big.jsonl:2", "characters", "before tokenizing")


def test_every_missing_data_file_is_named(run_config, tmp_path, no_model):
    config = run_config(
        data={
            "train": {"name": "jsonl", "path": str(tmp_path / "nope-train.jsonl")},
            "test": {"name": "jsonl", "path": str(tmp_path / "nope-test.jsonl")},
        }
    )
    refused(cli("run", str(config)), "nope-train.jsonl", "nope-test.jsonl")


def test_a_test_split_that_is_the_training_data_is_refused(run_config, tmp_path, no_model):
    config = run_config()
    train = {"name": "jsonl", "path": str(tmp_path / "data" / "train.jsonl")}
    refused(cli("run", str(config), "--set", f"data.test={json.dumps(train)}"), "data.test: the same data as")
    copy = tmp_path / "copy.jsonl"
    shutil.copy(tmp_path / "data" / "train.jsonl", copy)
    refused(
        cli("run", str(config), "--set", f"data.test.path={copy}"),
        "every test example (48) is also a training example",
    )
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------------- config

CONFIG_CASES = [
    ("training.learning_rate=-1e-4", "training.learning_rate: must be greater than 0"),
    ("training.batch_size=0", "training.batch_size: must be at least 1"),
    ("training.gradient_accumulation_steps=0", "training.gradient_accumulation_steps: must be at least 1"),
    ("method.r=0", "method.r: must be at least 1"),
    (
        "training.lr_scheduler=cosin",
        "training.lr_scheduler: unknown scheduler 'cosin' (did you mean 'cosine'?)",
    ),
    (
        "training.optimizer=adamw_torhc",
        "training.optimizer: unknown optimizer 'adamw_torhc' (did you mean 'adamw_torch'?)",
    ),
    ("training.epochs=[1", "--set training.epochs=[1: the value is not valid YAML"),
    ("evaluators.5.name=x", "evaluators has 2 entries, so there is no index 5"),
    ("evaluators.x=1", "evaluators is a list; index it by number"),
    ("output_dir=runs/{nmae}", "output_dir: unknown placeholder {nmae} (did you mean '{name}'?)"),
    ("output_dir=runs/{}", "output_dir: 'runs/{}' is not a valid pattern"),
    ("evaluation.splits=[tset]", "evaluation.splits[0]: unknown split 'tset' (did you mean 'test'?)"),
    ("training.warmup_ratio=5", "training.warmup_ratio: must be less than 1, got 5"),
    ("training.save_steps=-5", "training.save_steps: must be at least 0, got -5"),
    ("model.trust_remote_code='yes'", "model.trust_remote_code: expected bool, got 'yes'"),
    ("training.lr=1e-4", "training.lr: unknown option (did you mean 'learning_rate'?)"),
    ("name=../../x", "name: '../../x' is not a valid run name"),
    ("name=", "name: '' is not a valid run name"),
    ("training.precision=fp16", "training.precision: fp16 needs a CUDA GPU"),
]


@pytest.mark.parametrize(("override", "message"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_values_fail_before_anything_runs(override, message, run_config, tmp_path, no_model):
    config = run_config(evaluators=["perplexity", "exact-match"])
    refused(cli("run", str(config), "--set", override), message)
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path.parent / "x").exists()


def test_all_config_mistakes_are_listed_together(run_config, no_model):
    config = run_config()
    result = cli(
        "run", str(config), "--set", "training.batch_size=0", "--set", "method.r=0", "--set", "training.lr=1"
    )
    refused(result, "training.batch_size", "method.r", "training.lr")


# --------------------------------------------------------------------------------- run directory


def test_a_file_where_the_run_directory_goes_is_a_clean_error(run_config, tmp_path, no_model, monkeypatch):
    import tunesmith.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_base", lambda *a, **k: pytest.fail("loaded a model"))
    config = run_config()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "t").write_text("not a directory")
    refused(cli("run", str(config)), "exists and is a file")


def test_a_non_finite_number_is_out_of_range(run_config, no_model):
    config = run_config()
    refused(cli("run", str(config), "--set", "training.learning_rate=.nan"), "must be a finite number")


def test_a_finished_run_is_read_without_the_new_run_checks(tmp_path):
    """A run made under older rules (a name with a slash, say) stays usable by eval, generate, merge."""
    from tunesmith.config import resolve
    from tunesmith.plugins import Plugins

    data = {"name": "exp/1", "data": {"train": {"name": "jsonl", "path": "gone.jsonl"}}}
    with pytest.raises(Exception, match="not a valid run name"):
        resolve(dict(data), Plugins())
    assert resolve(dict(data), Plugins(), new_run=False).config.name == "exp/1"
