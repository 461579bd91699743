"""Streaming the training split: the same rows as preparing it, packed samples kept apart, clear refusals,
bad records named by file:line, and a resumed run that ends with the weights of an uninterrupted one."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import pytest

from tunesmith import streaming
from tunesmith.config import resolve
from tunesmith.data import IGNORE_INDEX
from tunesmith.errors import TunesmithError
from tunesmith.plugins import Plugins
from tunesmith.prepare import prepare, read_data, training_rows
from tunesmith.streaming import RowStream
from tunesmith.ui import Quiet


def records(n: int) -> list[dict[str, str]]:
    """Distinct alpaca records of varied lengths (no duplicates: preparing would drop them)."""
    return [
        {
            "instruction": "Repeat the word.",
            "input": f"w{i}" + "x" * (i % 23),
            "output": f"w{i}" + "x" * (i % 23),
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def config(tmp_path: Path, model_dir: Path, train: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "s",
        "output_dir": str(tmp_path / "runs" / "{name}"),
        "model": {"path": str(model_dir)},
        "data": {
            "train": {"name": "jsonl", "path": str(train)},
            "max_length": 96,
            "streaming": True,
            "stream_buffer": 7,
            "cache": False,
            "dedup": "off",
            "near_dedup": "off",
            **data,
        },
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "training": {"max_steps": 5},
    }


def rows_key(row: Any) -> tuple:
    return tuple(row["input_ids"]), tuple(row["labels"])


@pytest.mark.parametrize("packing", [False, True])
def test_one_pass_of_the_stream_holds_the_prepared_rows(tmp_path, tiny_model_dir, packing) -> None:
    """Without packing the stream's first pass is exactly the prepared rows (in a seeded order); with
    packing it holds exactly the prepared samples, packed by buffer, each with its own positions."""
    plugins = Plugins()
    train = write_jsonl(tmp_path / "train.jsonl", records(40))
    streamed = resolve(config(tmp_path, tiny_model_dir, train, packing=packing), plugins)
    plain = resolve(config(tmp_path, tiny_model_dir, train, packing=False, streaming=False), plugins)
    prepared, tokenizer = prepare(plain, Quiet(), plugins)
    reference = [dict(r) for r in training_rows(plain, prepared.tokenized["train"])]
    assert len(reference) == 40

    stream = RowStream(streamed, tokenizer)
    if not packing:
        first_pass = list(islice(stream(), 40))
        assert Counter(map(rows_key, first_pass)) == Counter(map(rows_key, reference))
        assert [rows_key(r) for r in first_pass] != [rows_key(r) for r in reference]  # shuffled
        second_pass = list(islice(stream(), 80))[40:]
        assert Counter(map(rows_key, second_pass)) == Counter(map(rows_key, reference))  # passes repeat
        return

    samples: list[tuple] = []
    rows = stream()
    while len(samples) < len(reference):  # a pass ends with its last buffer: its rows hold every sample once
        row = next(rows)
        assert len(row["input_ids"]) <= 96
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
        for start, end in pairwise(starts):
            assert row["position_ids"][start:end] == list(range(end - start))  # positions restart per sample
            assert row["labels"][start] == IGNORE_INDEX  # nothing trained across the boundary
            samples.append((tuple(row["input_ids"][start:end]), tuple(row["labels"][start + 1 : end])))
    assert Counter(samples) == Counter((ids, labels[1:]) for ids, labels in map(rows_key, reference))


def test_streaming_refuses_what_a_stream_cannot_do(tmp_path, tiny_model_dir, monkeypatch) -> None:
    plugins = Plugins()
    train = write_jsonl(tmp_path / "train.jsonl", records(8))
    endless = config(tmp_path, tiny_model_dir, train)
    endless["training"] = {"epochs": 1}
    with pytest.raises(TunesmithError, match="needs training.max_steps"):
        prepare(resolve(endless, plugins), Quiet(), plugins)
    dpo = config(tmp_path, tiny_model_dir, train)
    dpo["objective"] = {"name": "dpo"}
    with pytest.raises(TunesmithError, match="cannot train on a stream") as caught:
        prepare(resolve(dpo, plugins), Quiet(), plugins)
    assert "objectives that can: sft" in "\n".join(caught.value.details)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun
    with pytest.raises(TunesmithError, match="trains in one process"):
        prepare(resolve(config(tmp_path, tiny_model_dir, train), plugins), Quiet(), plugins)


def test_only_the_head_is_prepared_before_training(tmp_path, tiny_model_dir, monkeypatch) -> None:
    monkeypatch.setattr(streaming, "HEAD", 10)
    plugins = Plugins()
    train = write_jsonl(tmp_path / "train.jsonl", records(30))
    resolved = resolve(config(tmp_path, tiny_model_dir, train), plugins)
    prepared, _ = prepare(resolved, Quiet(), plugins)
    assert len(prepared.examples["train"]) == 10
    assert len(read_data(resolved).examples["train"]) == 10  # what tunesmith eval reads: no more either
    assert sum(1 for _ in resolved.sources["train"].read()) == 30


@pytest.mark.parametrize("on_invalid", ["error", "drop"])
def test_a_bad_record_past_the_head_is_named_by_file_and_line(
    tmp_path, tiny_model_dir, monkeypatch, on_invalid
) -> None:
    monkeypatch.setattr(streaming, "HEAD", 5)
    plugins = Plugins()
    lines: list[Any] = records(12)
    lines.insert(8, "{not json")  # line 9
    train = write_jsonl(tmp_path / "train.jsonl", lines)
    resolved = resolve(config(tmp_path, tiny_model_dir, train, on_invalid=on_invalid), plugins)
    _, tokenizer = prepare(resolved, Quiet(), plugins)  # the head is clean: nothing found yet
    warnings: list[str] = []
    stream = RowStream(resolved, tokenizer, warnings.append)
    if on_invalid == "error":
        with pytest.raises(TunesmithError, match=r"train\.jsonl:9: invalid JSON"):
            list(islice(stream(), 30))
        return
    rows = list(islice(stream(), 24))  # two passes of the 12 good records
    assert Counter(map(rows_key, rows[:12])) == Counter(map(rows_key, rows[12:]))
    assert len(warnings) == 1 and "train.jsonl:9" in warnings[0]  # reported once, in the first pass


@pytest.mark.slow
def test_a_resumed_streaming_run_ends_with_the_weights_of_an_uninterrupted_one(
    tmp_path, tiny_model_dir
) -> None:
    """Interrupted (Ctrl-C) right after the checkpoint of step 4, in the middle of a pass over the data,
    then resumed to step 14 (past the end of the first pass, step 10): the final adapter equals a straight run's."""
    import types

    import torch
    import yaml
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from tunesmith import hookimpl
    from tunesmith.cli import cli as group
    from tunesmith.plugins import PluginSource, entry_point_sources

    train = write_jsonl(tmp_path / "train.jsonl", records(40))  # 40 rows of 1 sample: 10 steps a pass
    runs = {}
    for name in ("straight", "resumed"):
        cfg = config(tmp_path, tiny_model_dir, train, packing=False, stream_buffer=16)
        cfg["name"] = name
        cfg["training"] = {"max_steps": 14, "batch_size": 4, "save_steps": 4, "logging_steps": 2}
        cfg["evaluation"] = {"compare_base": False}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        runs[name] = (path, tmp_path / "runs" / name)

    def cli(*args: str, plugins: Plugins | None = None) -> Any:
        return CliRunner().invoke(group, list(args), obj=plugins or Plugins(), catch_exceptions=False)

    assert cli("run", str(runs["straight"][0])).exit_code == 0

    def on_checkpoint(run_dir, checkpoint_dir, step):
        if step == 4:
            raise KeyboardInterrupt  # as if the process were stopped right after the checkpoint

    interrupter = types.ModuleType("interrupter")
    interrupter.on_checkpoint = hookimpl(on_checkpoint)  # type: ignore[attr-defined]
    plugins = Plugins(
        [*entry_point_sources(), PluginSource("stop", "stop", "1", "stop", lambda: interrupter)]
    )
    result = cli("run", str(runs["resumed"][0]), plugins=plugins)
    run_dir = runs["resumed"][1]
    assert result.exit_code != 0 and json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()
    assert not (run_dir / "checkpoints" / "checkpoint-8").exists()

    result = cli("run", "--resume", str(run_dir))
    assert result.exit_code == 0, result.output
    straight = load_file(runs["straight"][1] / "final" / "adapter_model.safetensors")
    resumed = load_file(run_dir / "final" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.slow
def test_a_bad_record_met_while_training_stops_the_run_naming_it(
    tmp_path, tiny_model_dir, monkeypatch
) -> None:
    import yaml
    from click.testing import CliRunner

    from tunesmith.cli import cli as group

    monkeypatch.setattr(streaming, "HEAD", 5)
    lines: list[Any] = records(12)
    lines.insert(9, '{"instruction": "Repeat the word.", "input": "w"}')  # line 10: no output
    cfg = config(tmp_path, tiny_model_dir, write_jsonl(tmp_path / "train.jsonl", lines))
    cfg["training"] = {"max_steps": 20, "batch_size": 2}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    result = CliRunner().invoke(group, ["run", str(path)], obj=Plugins(), catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "train.jsonl:10" in result.output and "output" in result.output
    assert json.loads((tmp_path / "runs" / "s" / "run.json").read_text())["status"] == "failed"
