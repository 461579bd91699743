"""Data sources: every record keeps an origin a user can open, and bad records are reported, not fatal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith import Record, RecordProblem, TunesmithError
from tunesmith.data import read_split
from tunesmith_plugins.formatters import ChatFormatter
from tunesmith_plugins.sources import (
    CsvSource,
    HfSource,
    JsonlSource,
    JsonSource,
    ParquetSource,
    register_data_sources,
)


def chat(answer: str = "4", role: str = "assistant") -> dict:
    return {"messages": [{"role": "user", "content": "2+2?"}, {"role": role, "content": answer}]}


def line(value: object) -> bytes:
    return json.dumps(value).encode() + b"\n"


def test_broken_jsonl_gives_one_problem_per_record_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(
        line(chat())  # 1 ok
        + b'{"messages": [\n'  # 2 invalid JSON
        + b'{"messages": "caf\xe9"}\n'  # 3 Latin-1 byte, not UTF-8
        + b"[1, 2]\n"  # 4 not an object
        + b"\n"  # 5 blank: skipped
        + line({"conversation": []})  # 6 missing field
        + line({"messages": "hello"})  # 7 wrong type
        + line(chat(role="assistent"))  # 8 unknown role
        + line(chat(answer=""))  # 9 empty completion
        + line(chat("5"))  # 10 ok
    )
    source = JsonlSource(JsonlSource.Config(path=str(path)))
    examples, problems = read_split(source, ChatFormatter())

    assert [e.origin for e in examples] == [f"{path}:1", f"{path}:10"]
    assert examples[1].reference == "5"
    got = {p.origin.rsplit(":", 1)[1]: p for p in problems}
    assert sorted(got, key=int) == ["2", "3", "4", "6", "7", "8", "9"]
    assert all(p.origin.startswith(f"{path}:") for p in problems)
    assert "invalid JSON" in got["2"].message
    assert "UTF-8" in got["3"].message and "0xe9" in got["3"].message
    assert "expected a JSON object, got an array" in got["4"].message
    assert (got["6"].field, got["6"].message) == ("messages", "missing")
    assert got["7"].field == "messages" and "got a string" in got["7"].message
    assert got["8"].field == "messages[1].role" and "did you mean 'assistant'" in got["8"].message
    assert got["9"].field == "messages[1].content" and "empty completion" in got["9"].message
    assert str(got["9"]) == f"{path}:9: field 'messages[1].content': empty completion"


def test_jsonl_skips_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line({"text": "a"}))
    assert list(JsonlSource(JsonlSource.Config(path=str(path))).read()) == [
        Record({"text": "a"}, f"{path}:1")
    ]


@pytest.mark.parametrize("cls", [JsonlSource, JsonSource, CsvSource, ParquetSource])
def test_missing_file_is_a_user_error(cls: type, tmp_path: Path) -> None:
    with pytest.raises(TunesmithError, match="not found"):
        list(cls(cls.Config(path=str(tmp_path / "nope"))).read())


def test_json_array_records_carry_their_line(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('[\n  {"text": "a"},\n  "oops",\n\n  {"text": "b,]"}\n]\n')
    items = list(JsonSource(JsonSource.Config(path=str(path))).read())
    assert items == [
        Record({"text": "a"}, f"{path}:2"),
        RecordProblem(f"{path}:3", "expected a JSON object, got a string"),
        Record({"text": "b,]"}, f"{path}:5"),
    ]


def test_json_field_selects_the_nested_array(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"version": {"x": [1, 2]},\n "data": [\n {"text": "a"}, {"text": "b"}]}')
    items = list(JsonSource(JsonSource.Config(path=str(path), field="data")).read())
    assert [(i.fields["text"], i.origin) for i in items] == [("a", f"{path}:3"), ("b", f"{path}:3")]


def test_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n {"text": "a"},\n {"text": }\n]')
    with pytest.raises(TunesmithError, match=r"bad.json:3: invalid JSON"):
        list(JsonSource(JsonSource.Config(path=str(path))).read())


def test_csv_rows_carry_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b'text,label\n"two\nlines",1\nshort\n\ncaf\xe9,2\nok,3\n')
    items = list(CsvSource(CsvSource.Config(path=str(path))).read())
    assert items == [
        Record({"text": "two\nlines", "label": "1"}, f"{path}:2"),
        RecordProblem(f"{path}:4", "expected 2 columns, got 1"),
        RecordProblem(f"{path}:6", "not valid UTF-8"),
        Record({"text": "ok", "label": "3"}, f"{path}:7"),
    ]


def test_parquet_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "n": [1, 2]}), path)
    items = list(ParquetSource(ParquetSource.Config(path=str(path))).read())
    assert items == [
        Record({"text": "a", "n": 1}, f"{path} row 0"),
        Record({"text": "b", "n": 2}, f"{path} row 1"),
    ]


@pytest.fixture
def sources_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep datasets' cache inside the test's directory and never reach for the network."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def test_hf_reads_a_local_dataset_directory_offline(tmp_path: Path, sources_hf_cache: None) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(line({"text": "t"}))
    (folder / "validation.jsonl").write_bytes(line({"text": "v0"}) + line({"text": "v1"}))
    source = HfSource(HfSource.Config(path=str(folder), split="validation"))
    items = list(source.read())
    assert [(i.fields, i.origin) for i in items] == [
        ({"text": "v0"}, f"hf:{folder}[validation] row 0"),
        ({"text": "v1"}, f"hf:{folder}[validation] row 1"),
    ]


def test_hf_builder_with_data_files(tmp_path: Path, sources_hf_cache: None) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(line({"text": "x"}))
    source = HfSource(HfSource.Config(path="json", data_files=[str(path)]))
    assert [i.fields for i in source.read()] == [{"text": "x"}]


def test_hf_missing_dataset_is_a_user_error(tmp_path: Path, sources_hf_cache: None) -> None:
    with pytest.raises(TunesmithError, match="cannot load dataset"):
        list(HfSource(HfSource.Config(path=str(tmp_path / "nope"))).read())


def test_registration_and_light_import() -> None:
    registered: list[type] = []
    register_data_sources(registered.append)
    assert [c.name for c in registered] == ["jsonl", "json", "csv", "parquet", "hf"]
    assert all(c.summary() and all(f.metadata["help"] for f in c.options()) for c in registered)
    code = (
        "import sys, tunesmith_plugins.sources, tunesmith_plugins.formatters, tunesmith.data;"
        "print(sorted({'torch', 'datasets', 'pyarrow', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_binary_parquet_file_full_of_zero_bytes_is_not_taken_for_utf16(tmp_path):
    """The UTF-16 check is for text files: a Parquet file's many zero bytes must not trip it."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from tunesmith.config import build_component
    from tunesmith.plugins import Plugins

    path = tmp_path / "zeros.parquet"
    rows = 200
    table = pa.table(
        {"text": ["x"] * rows, "id": list(range(rows)), "score": [0.0] * rows, "label": [0] * rows}
    )
    pq.write_table(table, path)
    source = build_component(Plugins(), "data_source", {"name": "parquet", "path": str(path)})
    assert len(list(source.read())) == rows
