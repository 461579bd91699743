"""Built-in data sources: local JSONL, JSON, CSV and Parquet files, and Hugging Face datasets.

Every record carries an origin a user can open in an editor (``path:line``) or index (``row N``, 0-based),
and an unreadable record becomes a :class:`RecordProblem` so one bad line never hides the others.
Heavy libraries (pyarrow, datasets) are imported inside ``read``: registering must stay cheap.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import DataSource, Record, RecordProblem, Register, TunesmithError, hookimpl, option

Item = Record | RecordProblem


def _existing(path: str, *, text: bool = True) -> Path:
    """The file at ``path``; a text file must not be UTF-16/32 (a binary one, Parquet, is not checked)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TunesmithError(f"data file not found: {path}")
    if text:
        _refuse_utf16(p, path)
    return p


_UTF16_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def _refuse_utf16(path: Path, shown: str) -> None:
    """A UTF-16/32 file is not "invalid UTF-8 at line N" (its line numbers would be wrong): say what it is."""
    with path.open("rb") as f:
        head = f.read(4096)
    encoding = next((name for bom, name in _UTF16_BOMS.items() if head.startswith(bom)), None)
    if encoding is None and head.count(b"\x00") > len(head) // 4 and len(head) >= 4:
        encoding = "UTF-16"  # no byte-order mark, but every other byte is zero
    if encoding:
        raise TunesmithError(
            f"{shown}: the file is {encoding} encoded; tunesmith reads UTF-8",
            details=[
                f"convert it, e.g.: iconv -f {encoding} -t UTF-8 {shown} > {Path(shown).stem}.utf8{path.suffix}"
            ],
        )


def _lone_surrogate(value: Any, where: str = "") -> str | None:
    """The field path of the first string holding a lone surrogate (valid JSON, but not Unicode text:
    ``"\\ud800"``), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "(value)"
        return None
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((found for key, v in items if (found := _lone_surrogate(v, key)) is not None), None)


def _json_record(value: Any, origin: str) -> Item:
    if not isinstance(value, dict):
        return RecordProblem(origin, f"expected a JSON object, got {_json_type(value)}")
    bad = _lone_surrogate(value)
    if bad is not None:
        return RecordProblem(
            origin, "holds a lone UTF-16 surrogate (an escape like \\ud800 with no pair): not text", field=bad
        )
    return Record(value, origin)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _decode_line(raw: bytes, origin: str) -> str | RecordProblem:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RecordProblem(origin, f"not valid UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}")


class JsonlSource(DataSource):
    """JSON Lines file: one JSON object per line.

    Blank lines are skipped. A line that is not valid UTF-8, not valid JSON or not an object is reported
    with its line number and reading goes on.
    """

    name = "jsonl"

    @dataclass
    class Config:
        path: str = option(help="Path to the .jsonl file")

    def describe(self) -> str:
        return f"jsonl:{self.config.path}"

    def read(self) -> Iterator[Item]:
        path = _existing(self.config.path)
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                origin = f"{self.config.path}:{number}"
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
                line = _decode_line(raw, origin)
                if isinstance(line, RecordProblem):
                    yield line
                    continue
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    yield RecordProblem(origin, f"invalid JSON: {e.msg} (column {e.colno})")
                    continue
                yield _json_record(value, origin)


class JsonSource(DataSource):
    """JSON file holding an array of objects (or an object whose ``field`` is that array).

    A syntax error makes the whole document unreadable and stops the run with its line and column;
    an element that is not an object is reported with its line and reading goes on.
    """

    name = "json"

    @dataclass
    class Config:
        path: str = option(help="Path to the .json file")
        field: str | None = option(None, help="Key of the top-level object that holds the array of records")

    def describe(self) -> str:
        return f"json:{self.config.path}"

    def read(self) -> Iterator[Item]:
        path = _existing(self.config.path)
        try:
            text = path.read_text(encoding="utf-8-sig")
            document = json.loads(text)
        except UnicodeDecodeError as e:
            raise TunesmithError(f"{self.config.path}: not valid UTF-8 at byte {e.start}") from None
        except json.JSONDecodeError as e:
            raise TunesmithError(
                f"{self.config.path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})"
            ) from None
        records = document
        if self.config.field is not None:
            if not isinstance(document, dict) or self.config.field not in document:
                raise TunesmithError(f"{self.config.path}: no top-level key '{self.config.field}'")
            records = document[self.config.field]
        if not isinstance(records, list):
            raise TunesmithError(
                f"{self.config.path}: expected an array of records, got {_json_type(records)}"
                + ("" if self.config.field else " (set `field` to the key holding the array)")
            )
        lines = _element_lines(text, self.config.field, len(records))
        for value, line in zip(records, lines, strict=True):
            yield _json_record(value, f"{self.config.path}:{line}")


def _element_lines(text: str, field: str | None, count: int) -> list[int]:
    """Line number where each element of the records array starts (the document is known to be valid)."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if field is not None:  # walk the top-level object's members to the array
        pos = _skip_ws(text, pos + 1)  # past "{"
        while True:
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ":"
            if key == field:
                break
            _, pos = decoder.raw_decode(text, pos)
            pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ","
    pos += 1  # past "["
    lines = []
    for _ in range(count):
        pos = _skip_ws(text, pos)
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)
        pos = _skip_ws(text, pos) + 1  # past "," or "]"
    return lines


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


class CsvSource(DataSource):
    """CSV file with a header row; every value is read as a string.

    A row with the wrong number of columns or bytes that are not UTF-8 is reported with its line and
    reading goes on.
    """

    name = "csv"

    @dataclass
    class Config:
        path: str = option(help="Path to the .csv file")
        delimiter: str = option(",", help="Column separator (one character), e.g. ';' or '\\t'")

    def describe(self) -> str:
        return f"csv:{self.config.path}"

    def read(self) -> Iterator[Item]:
        path = _existing(self.config.path)
        # surrogateescape keeps undecodable bytes as lone surrogates so the bad row alone is reported
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f, delimiter=self.config.delimiter)
            header = next(reader, None)
            if header is None:
                return
            if any(_has_surrogate(v) for v in header):
                raise TunesmithError(f"{self.config.path}:1: header is not valid UTF-8")
            start = reader.line_num + 1
            for row in reader:
                origin = f"{self.config.path}:{start}"
                start = reader.line_num + 1
                if not row:  # a blank line
                    continue
                if any(_has_surrogate(v) for v in row):
                    yield RecordProblem(origin, "not valid UTF-8")
                elif len(row) != len(header):
                    yield RecordProblem(origin, f"expected {len(header)} columns, got {len(row)}")
                else:
                    yield Record(dict(zip(header, row, strict=True)), origin)


def _has_surrogate(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


class ParquetSource(DataSource):
    """Parquet file, read in batches with pyarrow; origins are 0-based row numbers."""

    name = "parquet"

    @dataclass
    class Config:
        path: str = option(help="Path to the .parquet file")

    def describe(self) -> str:
        return f"parquet:{self.config.path}"

    def read(self) -> Iterator[Item]:
        import pyarrow
        import pyarrow.parquet as pq

        path = _existing(self.config.path, text=False)
        row = 0
        try:  # a corrupt footer raises OSError ("Couldn't deserialize thrift"), a bad page ArrowException
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=1024):
                for fields in batch.to_pylist():
                    yield Record(fields, f"{self.config.path} row {row}")
                    row += 1
        except (pyarrow.ArrowException, OSError) as e:
            where = f" (after row {row - 1})" if row else ""
            raise TunesmithError(f"{self.config.path}: not a readable Parquet file{where}: {e}") from None


class HfSource(DataSource):
    """A dataset through ``datasets.load_dataset``: a local dataset directory, or a hub id when online.

    Origins are ``hf:PATH[SPLIT] row N`` with 0-based row numbers, as in ``dataset[N]``.
    """

    name = "hf"

    @dataclass
    class Config:
        path: str = option(help="Dataset directory, builder name (json, csv, ...) or hub id")
        split: str = option("train", help="Split to read, e.g. train, validation, train[:1000]")
        name: str | None = option(None, help="Dataset configuration name (subset)")
        data_files: list[str] | None = option(None, help="Files to read, for builders like json or csv")
        revision: str | None = option(None, help="Hub revision (branch, tag or commit)")

    def describe(self) -> str:
        return f"hf:{self.config.path}[{self.config.split}]"

    def read(self) -> Iterator[Item]:
        import datasets

        c = self.config
        try:
            dataset = datasets.load_dataset(
                c.path, name=c.name, split=c.split, data_files=c.data_files, revision=c.revision
            )
        except (datasets.exceptions.DatasetsError, FileNotFoundError, ValueError, ConnectionError) as e:
            raise TunesmithError(f"cannot load dataset {self.describe()}: {e}") from None
        for row, fields in enumerate(dataset):
            yield Record(fields, f"{self.describe()} row {row}")


def jsonl_records(path: Path, what: str) -> tuple[list[Record], list[str]]:
    """The records of a JSONL file read by the ``jsonl`` source (its checks, ``file:line`` origins) and
    the lines it could not read, for plugins that ship or take small data files: the caller adds its
    own field problems and reports them all at once. ``what`` names the file ("canary file")."""
    if not Path(path).expanduser().is_file():
        raise TunesmithError(
            f"{what} not found: {path}", details=["a relative path is relative to the working directory"]
        )
    records: list[Record] = []
    problems: list[str] = []
    for item in JsonlSource(JsonlSource.Config(path=str(path))).read():
        if isinstance(item, Record):
            records.append(item)
        else:
            problems.append(str(item))
    return records, problems


def line_number(problem: str) -> int:
    """The line of a ``file:line: message`` problem, for listing problems in file order."""
    found = re.search(r":(\d+): ", problem)
    return int(found.group(1)) if found else 0


@hookimpl
def register_data_sources(register: Register[DataSource]) -> None:
    for cls in (JsonlSource, JsonSource, CsvSource, ParquetSource, HfSource):
        register(cls)
