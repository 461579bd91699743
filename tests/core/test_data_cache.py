"""Prepared data is cached on Arrow: a hit gives exactly what a cold run gives, every input that changes
the result changes the key, a broken entry is never read, and ``tunesmith cache`` reports and clears it.

The reference for "exactly" is the in-memory path (``tokenize_split`` + ``pack`` over the formatted
examples), which the Arrow path must reproduce row for row.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import upper_task, write_jsonl


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNESMITH_CACHE", str(root))
    return root


@pytest.fixture
def make(tmp_path, tiny_model_dir, cache_root):
    """``make(**changes)`` -> (prepared, tokenizer, resolved) for a small alpaca config; ``data`` keys
    in ``changes`` go into the data section, ``template`` replaces that section."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_jsonl(
        data_dir / "train.jsonl", upper_task(40, seed=1) + [{"instruction": "Long.", "output": "x" * 300}]
    )
    write_jsonl(data_dir / "test.jsonl", upper_task(6, seed=2))

    def build(**changes: Any) -> tuple[Any, Any, Any]:
        from tunesmith.config import resolve
        from tunesmith.plugins import Plugins
        from tunesmith.prepare import prepare
        from tunesmith.ui import Quiet

        config: dict[str, Any] = {
            "name": "t",
            "output_dir": str(tmp_path / "runs" / "{name}"),
            "model": {"path": str(tiny_model_dir)},
            "data": {
                "train": {"name": "jsonl", "path": str(data_dir / "train.jsonl")},
                "test": {"name": "jsonl", "path": str(data_dir / "test.jsonl")},
                "max_length": 96,
                "truncate": True,
            },
            "formatter": {"name": "alpaca"},
        }
        for key, value in changes.items():
            if key in ("formatter", "template"):
                config[key] = value
            else:
                config["data"][key] = value
        plugins = Plugins()
        resolved = resolve(config, plugins)
        prepared, tokenizer = prepare(resolved, Quiet(), plugins)
        return prepared, tokenizer, resolved

    build.data_dir = data_dir  # type: ignore[attr-defined]
    return build


def snapshot(prepared: Any, resolved: Any) -> dict[str, Any]:
    """Everything downstream reads from prepared data, as plain values."""
    from tunesmith.manifest import hash_examples
    from tunesmith.prepare import training_rows

    return {
        "examples": {s: [vars(e) for e in ex] for s, ex in prepared.examples.items()},
        "hashes": {s: hash_examples(ex) for s, ex in prepared.examples.items()},
        "tokenized": {s: [vars(t) for t in tok] for s, tok in prepared.tokenized.items()},
        "rows": [dict(r) for r in training_rows(resolved, prepared.tokenized["train"])],
        "stats": prepared.stats,
        "dropped": prepared.dropped,
        "checks": {k: v for k, v in prepared.checks.to_dict().items() if k != "seconds"},
        "thinking": prepared.thinking,
    }


def entries(root: Path) -> list[str]:
    folder = root / "data"
    return sorted(p.name for p in folder.iterdir() if (p / "COMPLETE").is_file()) if folder.is_dir() else []


def test_a_hit_gives_what_a_cold_run_gives_row_for_row(make, cache_root):
    from tunesmith.data import pack, tokenize_split
    from tunesmith.manifest import hash_examples
    from tunesmith.prepare import chat_format

    cold, tokenizer, resolved = make(cache=False)
    assert cold.cache == "off" and entries(cache_root) == []
    stored, _, _ = make()
    hit, _, _ = make()
    assert (stored.cache, hit.cache) == ("stored", "hit") and len(entries(cache_root)) == 1
    reference = snapshot(cold, resolved)
    assert snapshot(stored, resolved) == reference
    assert snapshot(hit, resolved) == reference
    assert reference["stats"]["train"]["truncated"] == 1  # the long record was cut, and counted

    # The Arrow path reproduces the in-memory one: the same sequences, the same packed rows.
    examples = list(hit.examples["train"])
    tokenized, problems, _ = tokenize_split(
        examples, tokenizer, max_length=96, truncate=True, chat=chat_format(resolved, tokenizer)
    )
    assert problems == [] and [vars(t) for t in tokenized] == reference["tokenized"]["train"]
    assert pack(tokenized, 96) == reference["rows"]
    assert reference["hashes"]["train"] == hash_examples(examples)  # the manifest's hash, unchanged


CHANGES = {
    "max_length": {"max_length": 80},
    "train_on_prompt": {"train_on_prompt": True},
    "truncate": {"truncate": False, "on_invalid": "drop"},
    "packing": {"packing": False},
    "formatter option": {"formatter": {"name": "alpaca", "system_field": "sys"}},
    "template": {"template": {"system_message": "merge"}},
    "chat template": {"template": {"chat_template": "chatml"}},
    "data checks": {"dedup": "warn"},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_option_that_changes_prepared_data_rebuilds_it(make, cache_root, change):
    first, _, _ = make()
    changed, _, resolved = make(**CHANGES[change])
    assert changed.cache == "stored", f"{change} did not change the key"
    assert len(entries(cache_root)) == 2
    again, _, _ = make(**CHANGES[change])
    assert again.cache == "hit" and snapshot(again, resolved) == snapshot(changed, resolved)


def test_data_content_source_options_and_version_change_the_key(make, cache_root, monkeypatch):
    import tunesmith

    make()
    train = make.data_dir / "train.jsonl"
    # The same file at another path: the source's options changed.
    shutil.copy(train, make.data_dir / "copy.jsonl")
    moved, _, _ = make(train={"name": "jsonl", "path": str(make.data_dir / "copy.jsonl")})
    assert moved.cache == "stored"
    # The file edited in place (same path, same size): its contents changed.
    text = train.read_text(encoding="utf-8")
    train.write_text(text.replace('"Upper-case', '"upper-case', 1), encoding="utf-8")
    edited, _, _ = make()
    assert edited.cache == "stored"
    assert edited.examples["train"][0].messages != moved.examples["train"][0].messages
    # Another tunesmith version.
    monkeypatch.setattr(tunesmith, "__version__", "999.0")
    assert make()[0].cache == "stored"
    assert len(entries(cache_root)) == 4


def test_a_half_written_or_corrupt_entry_is_never_read(make, cache_root):
    from tunesmith.prepare import cache_key

    good, tokenizer, resolved = make()
    key = cache_key(resolved, tokenizer)
    entry = cache_root / "data" / key
    reference = snapshot(good, resolved)
    # A crash mid-write leaves a temporary directory, and an entry without its marker.
    (entry / "COMPLETE").unlink()
    (entry / "meta.json").write_text("{not json", encoding="utf-8")
    (cache_root / "data" / f".tmp-{key}-deadbeef").mkdir()
    rebuilt, _, _ = make()
    assert rebuilt.cache == "stored" and snapshot(rebuilt, resolved) == reference
    assert json.loads((entry / "meta.json").read_text(encoding="utf-8"))["splits"]
    assert make()[0].cache == "hit"


def test_refused_records_are_not_cached(make, cache_root):
    with pytest.raises(Exception, match="invalid record"):
        make(truncate=False)
    assert entries(cache_root) == [] and not list((cache_root / "data").iterdir())


def test_cache_info_and_clear(make, cache_root):
    from tunesmith.cli import cli

    make()
    runner = CliRunner()
    info = runner.invoke(cli, ["cache", "info", "--json"], catch_exceptions=False)
    assert info.exit_code == 0, info.output
    data = {k["kind"]: k for k in json.loads(info.output)["kinds"]}["data"]
    assert data["entries"] == 1 and data["bytes"] > 0 and data["incomplete"] == 0
    table = runner.invoke(cli, ["cache", "info"], catch_exceptions=False)
    assert "data" in table.output and "total" in table.output
    (cache_root / "other").mkdir()
    (cache_root / "other" / "x").write_text("keep", encoding="utf-8")
    cleared = runner.invoke(cli, ["cache", "clear"], catch_exceptions=False)
    assert cleared.exit_code == 0 and "freed" in cleared.output
    assert entries(cache_root) == [] and (cache_root / "other" / "x").is_file()
    assert make()[0].cache == "stored"
    assert runner.invoke(cli, ["cache", "clear", "--all"], catch_exceptions=False).exit_code == 0
    assert not cache_root.exists()


WORKER = Path(__file__).with_name("prepare_worker.py")


def prepare_on_two_processes(config: Path, out: Path, cache: Path) -> list[dict[str, Any]]:
    import os
    import subprocess
    import sys

    out.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
        "TUNESMITH_CACHE": str(cache),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(WORKER), str(config), str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(2)]


@pytest.mark.slow
def test_under_torchrun_the_main_process_prepares_and_the_other_reads_its_entry(run_config, tmp_path):
    import yaml

    config = run_config(data__cache=False)  # several processes share the entry even so
    first, second = prepare_on_two_processes(config, tmp_path / "out", tmp_path / "cache")
    assert (first["cache"], second["cache"]) == ("stored", "hit")
    assert first["rows"] == second["rows"] and first["rows"]

    # A bad record is reported by every process (no process waits for the other).
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": 3}\n', encoding="utf-8")
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["data"]["train"]["path"] = str(bad)
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    first, second = prepare_on_two_processes(config, tmp_path / "bad", tmp_path / "cache")
    assert f"{bad}:2" in " ".join(first["details"])
    assert "error" in second


def test_tokenizing_in_two_processes_gives_the_same_rows_and_the_same_entry(make, cache_root):
    one, _, resolved = make(cache=False, num_proc=1)
    two, _, _ = make(cache=False, num_proc=2)
    assert snapshot(two, resolved) == snapshot(one, resolved)
    make(num_proc=2)
    assert make(num_proc=1)[0].cache == "hit"  # num_proc changes how, not what: same key


def test_data_hash_counts_tool_definitions():
    """Two chats that differ only in the tools they may call are different training data."""
    from tunesmith.examples import Example
    from tunesmith.manifest import hash_examples

    chat = [{"role": "user", "content": "time?"}, {"role": "assistant", "content": "noon"}]
    plain = Example(messages=chat)
    tool = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}
    assert hash_examples([plain]) != hash_examples([Example(messages=chat, tools=[tool])])
    assert hash_examples([plain]) == hash_examples([Example(messages=list(chat))])
