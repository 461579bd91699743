"""Data checks: duplicates in the training split and training data that overlaps held-out data.

Duplicates, near-duplicates and test leaks are planted in generated data; every planted one must be
reported with both origins, and nothing in clean data. Templated data (one instruction for every
record, as in examples/dates) must not count as contamination.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import write_jsonl

from tunesmith.cli import cli as group
from tunesmith.data_checks import DataChecks, check_data, normalize, write_data_checks
from tunesmith.errors import TunesmithError
from tunesmith.examples import Example
from tunesmith.plugins import Plugins
from tunesmith.schema import DataConfig

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION = "Summarise the passage in one sentence."
_rng = random.Random(0)
VOCAB = sorted(
    {
        "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_rng.randint(3, 9)))
        for _ in range(4000)
    }
)


def cli(*args: str):
    return CliRunner().invoke(group, list(args), obj=Plugins())


def record(rng: random.Random, words: int = 100) -> dict:
    return {
        "instruction": INSTRUCTION,
        "input": " ".join(rng.choice(VOCAB) for _ in range(words)),
        "output": " ".join(rng.choice(VOCAB) for _ in range(12)),
    }


def reword(rec: dict, rng: random.Random, changes: int = 3) -> dict:
    """The record with ``changes`` words of its input replaced, spread over it."""
    words = rec["input"].split()
    step = len(words) // changes
    for k in range(changes):
        words[k * step + rng.randrange(step)] = rng.choice(VOCAB) + "x"
    return {**rec, "input": " ".join(words)}


def example(rec: dict, origin: str) -> Example:
    """What the alpaca formatter makes of ``rec``."""
    user = rec["instruction"] + ("\n\n" + rec["input"] if rec.get("input") else "")
    return Example(
        messages=[{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}],
        origin=origin,
    )


def examples(records: list[dict], path: str) -> list[Example]:
    return [example(r, f"{path}:{n}") for n, r in enumerate(records, 1)]


def pairs(checks: DataChecks, check: str, against: str = "train") -> set[tuple[str, str]]:
    return {(f.origin, f.other) for f in checks.findings if f.check == check and f.against == against}


@pytest.fixture
def planted() -> tuple[list[dict], list[dict], dict[str, set[tuple[str, str]]]]:
    """400 clean training records and 60 test records, then planted: 4 exact duplicates (respelled),
    4 near-duplicates (3 words changed) and 5 test records reworded by 3 words, at random places.

    Returns the records and, per check, the (training origin, other origin) pairs it must report.
    """
    rng = random.Random(7)
    train = [record(rng) for _ in range(400)]
    test = [record(rng) for _ in range(60)]
    planted: dict[str, list[tuple[dict, dict]]] = {"duplicate": [], "near-duplicate": [], "contamination": []}
    for k, source in enumerate((3, 50, 120, 260)):  # the same text once normalised: case, spaces, NFKC
        copy = dict(train[source])
        copy["input"] = ["  ", "\t", " ", "\n"][k] + copy["input"].upper().replace(" ", "  ", 3)
        copy["output"] = copy["output"].replace("a", "ａ")  # full-width a: the same letter under NFKC
        planted["duplicate"].append((copy, train[source]))
    for source in (10, 77, 199, 333):
        planted["near-duplicate"].append((reword(train[source], rng), train[source]))
    for source in (0, 13, 29, 41, 59):
        planted["contamination"].append((reword(test[source], rng), test[source]))
    for copy, _ in [p for pairs in planted.values() for p in pairs]:
        train.insert(rng.randrange(len(train) + 1), copy)
    line = {id(r): n for n, r in enumerate(train, 1)}
    test_line = {id(r): n for n, r in enumerate(test, 1)}
    expected: dict[str, set[tuple[str, str]]] = {check: set() for check in planted}
    for check, pairs in planted.items():
        for copy, source in pairs:
            if check == "contamination":
                expected[check].add((f"train.jsonl:{line[id(copy)]}", f"test.jsonl:{test_line[id(source)]}"))
            else:  # reported as the later of the two, matched with the earlier
                first, later = sorted((line[id(copy)], line[id(source)]))
                expected[check].add((f"train.jsonl:{later}", f"train.jsonl:{first}"))
    return train, test, expected


def test_clean_data_has_no_findings():
    rng = random.Random(1)
    train, test = [record(rng) for _ in range(400)], [record(rng) for _ in range(60)]
    kept, checks = check_data(
        {"train": examples(train, "train.jsonl"), "test": examples(test, "test.jsonl")}, DataConfig()
    )
    assert len(kept) == 400 and checks.findings == []
    assert [(c.check, c.against) for c in checks.checks] == [
        ("duplicate", "train"),
        ("near-duplicate", "train"),
        ("contamination", "test"),
    ]


def test_every_planted_duplicate_and_leak_is_reported_with_both_origins(planted):
    train, test, expected = planted
    config = dataclasses.replace(DataConfig(), contamination_test="warn")
    data = {"train": examples(train, "train.jsonl"), "test": examples(test, "test.jsonl")}
    kept, checks = check_data(data, config)
    assert pairs(checks, "duplicate") == expected["duplicate"]
    assert pairs(checks, "near-duplicate") == expected["near-duplicate"]
    assert pairs(checks, "contamination", "test") == expected["contamination"]
    # defaults: exact duplicates dropped (the later copy), near-duplicates kept; test leaks here warned
    assert {f.action for f in checks.findings if f.check == "duplicate"} == {"dropped"}
    assert {f.action for f in checks.findings if f.check != "duplicate"} == {"kept"}
    assert len(kept) == len(train) - 4
    assert all(f.match.startswith("Jaccard 0.") for f in checks.findings if f.check == "near-duplicate")
    shown = "\n".join(f.pair() for f in checks.findings)
    for later, first in expected["duplicate"]:
        assert f"{first} ↔ {later} (exact, dropped {later})" in shown
    for train_origin, test_origin in expected["contamination"]:
        assert f"{train_origin} ↔ {test_origin} (" in shown


def test_test_leaks_are_an_error_naming_both_origins(planted):
    train, test, expected = planted
    with pytest.raises(TunesmithError) as info:
        check_data(
            {"train": examples(train, "train.jsonl"), "test": examples(test, "test.jsonl")}, DataConfig()
        )
    assert (
        "5 training example(s) overlap the test split (data.contamination_test: error)" in info.value.message
    )
    details = "\n".join(info.value.details)
    for train_origin, test_origin in expected["contamination"]:
        assert f"{train_origin} ↔ {test_origin}" in details


def test_leaks_are_found_without_the_ngram_check_and_without_the_near_check(planted):
    """Each of the two detectors alone finds the reworded leaks: 13-grams survive three changed words,
    and most of the test record's 3-grams are in the training copy."""
    train, test, expected = planted
    leaks = expected["contamination"]
    data = {"train": examples(train, "train.jsonl"), "test": examples(test, "test.jsonl")}
    base = dataclasses.replace(DataConfig(), contamination_test="warn")
    for config, how in (
        (dataclasses.replace(base, contamination_ngram=0), ("Jaccard", "contained")),
        (dataclasses.replace(base, near_duplicate_threshold=0), ("13-gram",)),
    ):
        _, checks = check_data(data, config)
        found = [f for f in checks.findings if f.check == "contamination"]
        assert {(f.origin, f.other) for f in found} == leaks
        assert all(any(h in f.match for h in how) for f in found), [f.match for f in found]


def test_drop_policies_train_without_the_findings(planted):
    train, test, _ = planted
    config = dataclasses.replace(DataConfig(), near_dedup="drop", contamination_test="drop")
    data = {"train": examples(train, "train.jsonl"), "test": examples(test, "test.jsonl")}
    kept, checks = check_data(data, config)
    assert len(kept) == len(train) - 4 - 4 - 5
    assert len(checks.dropped) == 13 and not set(checks.dropped) & {ex.origin for ex in kept}
    off = dataclasses.replace(DataConfig(), dedup="off", near_duplicate_threshold=0, contamination_test="off")
    kept, checks = check_data(data, off)
    assert len(kept) == len(train) and checks.findings == []


def test_templated_data_is_not_contamination():
    """Every record shares a 20-word instruction and only a few words differ: the instruction's
    n-grams are template, so disjoint splits report nothing."""
    instruction = (
        "Read the following short list of words carefully and then write the same words again in "
        "reverse order separated by single spaces please"
    )
    rng = random.Random(3)

    def rec() -> dict:
        words = [rng.choice(VOCAB) for _ in range(4)]
        return {"instruction": instruction, "input": " ".join(words), "output": " ".join(reversed(words))}

    train, test = [rec() for _ in range(300)], [rec() for _ in range(40)]
    data = {"train": examples(train, "train.jsonl"), "test": examples(test, "test.jsonl")}
    kept, checks = check_data(data, DataConfig())
    assert checks.findings == [] and len(kept) == 300
    assert all(c.template_3grams for c in checks.checks if c.check != "duplicate")
    # without the template rule every training record would share the instruction's 13-grams
    with pytest.raises(TunesmithError, match="300 training example"):
        check_data(data, dataclasses.replace(DataConfig(), common_ngram_share=1.0))


def test_contamination_files_are_checked_like_the_test_split(tmp_path):
    rng = random.Random(5)
    train = [record(rng) for _ in range(100)]
    bench = tmp_path / "bench.jsonl"
    bench_records = [
        {"id": 1, "question": "q", "choices": ["a", "b"]},
        {
            "id": 2,
            "prompt": train[42]["instruction"] + " " + train[42]["input"],
            "answer": train[42]["output"],
        },
    ]
    write_jsonl(bench, bench_records)
    config = dataclasses.replace(DataConfig(), contamination_files=[str(bench)])
    with pytest.raises(TunesmithError) as info:
        check_data({"train": examples(train, "train.jsonl")}, config)
    assert f"overlap {bench}" in info.value.message
    assert f"train.jsonl:43 ↔ {bench}:2" in "\n".join(info.value.details)


def test_normalisation():
    assert normalize("  Ｆｉｎｅ\u00a0\tTUNING\n") == "fine tuning"
    assert normalize("Straße") == normalize("STRASSE")


# ----------------------------------------------------------------------------------------- the CLI


def dates_config(tmp_path: Path, extra_test_lines: list[int]) -> tuple[Path, Path]:
    """The dates demo's config with its training file copied, plus the given test records appended."""
    train = tmp_path / "train.jsonl"
    shutil.copy(ROOT / "examples/dates/train.jsonl", train)
    test_lines = (ROOT / "examples/dates/test.jsonl").read_text(encoding="utf-8").splitlines()
    with train.open("a", encoding="utf-8") as f:
        for n in extra_test_lines:
            f.write(test_lines[n - 1] + "\n")
    config = yaml.safe_load((ROOT / "examples/dates/demo.yaml").read_text(encoding="utf-8"))
    config["data"]["train"]["path"] = str(train)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, train


def test_the_dates_demo_reports_no_contamination(monkeypatch):
    monkeypatch.chdir(ROOT)  # the demo's paths are relative to the repository
    result = cli("data", "check", "examples/dates/demo.yaml", "--json")
    assert result.exit_code == 0, result.output
    checks = json.loads(result.stdout)["data_checks"]
    assert checks["findings"] == [] and checks["dropped"] == []
    assert {(c["check"], c["against"]) for c in checks["checks"]} == {
        ("duplicate", "train"),
        ("near-duplicate", "train"),
        ("contamination", "validation"),
        ("contamination", "test"),
    }
    text = cli("data", "check", "examples/dates/demo.yaml")
    assert text.exit_code == 0 and "Data checks" in text.output
    assert "train overlapping test: none" in text.output


def test_five_test_records_copied_into_training_exit_2_naming_each(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    copied = [3, 17, 40, 66, 100]
    config, train = dates_config(tmp_path, copied)
    result = cli("data", "check", str(config))
    assert result.exit_code == 2, result.output
    assert "5 training example(s) overlap the test split" in result.output
    for k, n in enumerate(copied, 2001):
        assert f"{train}:{k} ↔ examples/dates/test.jsonl:{n} (exact)" in result.output
    assert "Traceback" not in result.output


def test_data_check_lists_findings_and_the_run_directory_gets_them(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    config, train = dates_config(tmp_path, [5, 6])
    result = cli("data", "check", str(config), "--set", "data.contamination_test=drop", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["splits"]["train"]["examples"] == 2000
    assert report["data_checks"]["dropped"] == [f"{train}:2001", f"{train}:2002"]
    text = cli("data", "check", str(config), "--set", "data.contamination_test=warn")
    assert text.exit_code == 0, text.output
    assert "train overlapping test: 2 found, kept" in text.output
    assert f"{train}:2001 ↔ examples/dates/test.jsonl:5 (exact)" in text.output

    from tunesmith.prepare import PreparedData
    from tunesmith.report import data_check_lines

    prepared = PreparedData(examples={})
    train_examples = [
        example({"instruction": "i", "input": "x y z", "output": "o"}, f"t.jsonl:{n}") for n in (1, 2)
    ]
    prepared.examples["train"], prepared.checks = check_data({"train": train_examples}, DataConfig())
    summary = write_data_checks(tmp_path, prepared)
    assert json.loads((tmp_path / "data_checks.json").read_text()) == summary
    assert summary is not None and summary["dropped"] == ["t.jsonl:2"]
    section = "\n".join(data_check_lines(tmp_path))
    assert "## Data checks" in section and "exact duplicates in train: 1 dropped" in section
    assert "`t.jsonl:1 ↔ t.jsonl:2 (exact, dropped t.jsonl:2)`" in section


def test_a_test_record_under_a_reworded_instruction_is_contamination():
    """In templated data the content is compared: a test date copied into training with another
    instruction is found, although the instruction is most of the record's words."""

    def read(name: str) -> list[dict]:
        lines = (ROOT / "examples/dates" / name).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    train, test = read("train.jsonl"), read("test.jsonl")
    reworded = [{**test[n - 1], "instruction": "Rewrite this date in American format."} for n in (3, 17)]
    data = {"train": examples(train + reworded, "train.jsonl"), "test": examples(test, "test.jsonl")}
    with pytest.raises(TunesmithError) as info:
        check_data(data, DataConfig())
    assert info.value.details[:2] == [
        "train.jsonl:2001 ↔ test.jsonl:3 (100% contained)",
        "train.jsonl:2002 ↔ test.jsonl:17 (100% contained)",
    ]
    assert check_data({**data, "train": examples(train, "train.jsonl")}, DataConfig())[1].findings == []
