"""Several sources in one split, mixed by weight: proportions, per-source formatters, determinism under
the seed, both stopping strategies, per-source counts where users read them, and config mistakes."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import write_jsonl

N = 400


@pytest.fixture
def sources(tmp_path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    a = write_jsonl(
        tmp_path / "a.jsonl",
        [{"instruction": f"Repeat item {i} of set a.", "output": f"a{i}"} for i in range(N)],
    )
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Question {i} of b?"},
                    {"role": "assistant", "content": f"b{i}"},
                ]
            }
            for i in range(N)
        ],
    )
    return a, b


def config(tmp_path: Path, model: Path, a: Path, b: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "mix",
        "output_dir": str(tmp_path / "runs" / "{name}"),
        "model": {"path": str(model)},
        "formatter": "alpaca",
        "data": {
            "train": [
                {"name": "jsonl", "path": str(a), "weight": 0.7},
                {"name": "jsonl", "path": str(b), "weight": 0.3, "formatter": {"name": "chat"}},
            ],
            "max_length": 64,
            "near_dedup": "off",
            **data,
        },
    }


def prepared_for(cfg: dict[str, Any], seed: int = 42) -> Any:
    from tunesmith.config import resolve
    from tunesmith.plugins import Plugins
    from tunesmith.prepare import prepare
    from tunesmith.ui import Quiet

    cfg = {**cfg, "training": {"seed": seed}}
    plugins = Plugins()
    return prepare(resolve(cfg, plugins), Quiet(), plugins)[0]


def origins(prepared: Any) -> list[str]:
    return [ex.origin for ex in prepared.examples["train"]]


def test_weights_set_the_proportions_and_each_source_keeps_its_formatter(tmp_path, tiny_model_dir, sources):
    a, b = sources
    prepared = prepared_for(config(tmp_path, tiny_model_dir, a, b))
    examples = list(prepared.examples["train"])
    from_a = [ex for ex in examples if ex.origin.startswith(str(a))]
    from_b = [ex for ex in examples if ex.origin.startswith(str(b))]
    assert len(from_a) + len(from_b) == len(examples)
    # first_exhausted: it ends when a runs out, so a is used whole and no example repeats.
    assert len(from_a) == N and len(set(origins(prepared))) == len(examples)
    share = len(from_a) / len(examples)
    assert abs(share - 0.7) < 4 * math.sqrt(0.7 * 0.3 / len(examples)), share
    # Each source was formatted by its own formatter: a by the run's (alpaca), b by chat.
    assert from_a[0].messages[0]["content"].startswith("Repeat item")
    for ex in from_b[:5]:
        i = int(ex.origin.rsplit(":", 1)[1]) - 1  # the record on that line
        assert ex.messages == [
            {"role": "user", "content": f"Question {i} of b?"},
            {"role": "assistant", "content": f"b{i}"},
        ]
    # Per-source counts: examples from the origins, tokens from the tokenized sequences.
    counted = {p["source"]: p for p in prepared.stats["train"]["sources"]}
    assert counted[f"jsonl:{a}"]["examples"] == len(from_a) and counted[f"jsonl:{b}"]["examples"] == len(
        from_b
    )
    assert (counted[f"jsonl:{a}"]["formatter"], counted[f"jsonl:{b}"]["formatter"]) == ("alpaca", "chat")
    tokens = Counter()
    for t in prepared.tokenized["train"]:
        tokens[f"jsonl:{a}" if t.origin.startswith(str(a)) else f"jsonl:{b}"] += len(t.input_ids)
    assert {s: p["tokens"] for s, p in counted.items()} == dict(tokens)
    assert sum(tokens.values()) == sum(len(r["input_ids"]) for r in prepared.tokenized["train"].rows)


def test_the_mix_is_deterministic_under_the_seed(tmp_path, tiny_model_dir, sources):
    a, b = sources
    cfg = config(tmp_path, tiny_model_dir, a, b)
    first = origins(prepared_for(cfg, seed=1))
    cold = origins(prepared_for({**cfg, "data": {**cfg["data"], "cache": False}}, seed=1))
    other = origins(prepared_for(cfg, seed=2))
    assert first == cold  # the same seed gives the same order, cached or not
    assert first != other  # another seed is another draw (and another cache entry)


def test_all_exhausted_sees_every_record_and_repeats_the_smaller_share(tmp_path, tiny_model_dir, sources):
    a, b = sources
    prepared = prepared_for(config(tmp_path, tiny_model_dir, a, b, mix_stopping="all_exhausted"))
    seen = Counter(origins(prepared))
    assert {o.rsplit(":", 1)[0] for o in seen} == {str(a), str(b)}
    assert len(seen) == 2 * N  # every record of both sources at least once
    from_b = sum(n for o, n in seen.items() if o.startswith(str(b)))
    assert from_b == N  # it ends when b, drawn 30 % of the time, has been seen whole
    assert max(seen.values()) > 1  # a was repeated to keep its 70 %
    share = from_b / sum(seen.values())
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / sum(seen.values()))


def cli(*args: str) -> Any:
    from tunesmith.cli import cli as group
    from tunesmith.plugins import Plugins

    return CliRunner().invoke(group, list(args), obj=Plugins(), catch_exceptions=False)


def test_data_check_and_the_report_show_each_source(tmp_path, tiny_model_dir, sources):
    import yaml

    from tunesmith.report import mixed_source_lines

    a, b = sources
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, tiny_model_dir, a, b)), encoding="utf-8")
    result = cli("data", "check", str(path), "--json")
    assert result.exit_code == 0, result.output
    mixed = json.loads(result.stdout)["splits"]["train"]["sources"]
    assert [(p["source"], p["weight"]) for p in mixed] == [(f"jsonl:{a}", 0.7), (f"jsonl:{b}", 0.3)]
    table = cli("data", "check", str(path))
    assert "Mixed sources" in table.output and "chat" in table.output
    lines = "\n".join(mixed_source_lines({"train": {"sources": mixed}}))
    assert f"`jsonl:{a}` | alpaca | 0.7 |" in lines and f"`jsonl:{b}` | chat | 0.3 |" in lines


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ({"pth": "x"}, "data.train[1].pth: unknown option (did you mean 'path'?)"),
        ({"weigth": 2}, "data.train[1].weigth: unknown option (did you mean 'weight'?)"),
        ({"weight": 0}, "data.train[1].weight: must be greater than 0, got 0"),
        ({"weight": -1}, "data.train[1].weight: must be greater than 0, got -1"),
        ({"weight": "lots"}, "data.train[1].weight: expected a number, got 'lots'"),
        ({"formatter": "chta"}, "did you mean 'chat'"),
    ],
)
def test_mistakes_in_a_mixed_split_exit_2_naming_the_key(tmp_path, tiny_model_dir, sources, part, expected):
    import yaml

    a, b = sources
    cfg = config(tmp_path, tiny_model_dir, a, b)
    cfg["data"]["train"][1] = {"name": "jsonl", "path": str(b), **part}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    result = cli("data", "check", str(path))
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
