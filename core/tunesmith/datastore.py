"""A split on Arrow: formatted examples, tokenized sequences and training rows as memory-mapped files.

Prepared data never has to fit in Python lists: examples are written to Arrow as they are read,
tokenized with ``datasets.Dataset.map`` (``num_proc`` processes), packed into rows on Arrow, and read
back through :class:`ExampleList` / :class:`TokenizedList`, sequences that decode one batch at a time.
An example is stored as JSON text, so any field a formatter sets (and any key of a message) comes back
exactly as it was. Every function here writes into a directory it is given; :mod:`tunesmith.prepare`
decides whether that is a cache entry or a temporary directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

from tunesmith.chat import ChatFormat, ChatPolicy
from tunesmith.data import IGNORE_INDEX, TokenizedExample, TokenStats, first_fit_decreasing, tokenize_example
from tunesmith.examples import Example, InvalidRecord, RecordProblem

_FIELDS = [f.name for f in dataclasses.fields(Example)]
#: Rows decoded at a time when a stored split is read in order.
BATCH = 1024


def encode_example(example: Example) -> str:
    return json.dumps(
        {name: getattr(example, name) for name in _FIELDS if getattr(example, name) is not None},
        ensure_ascii=False,
    )


def decode_example(text: str) -> Example:
    return Example(**json.loads(text))


def quiet() -> None:
    """No progress bars from ``datasets``: the run shows its own steps."""
    from datasets.utils import disable_progress_bars

    disable_progress_bars()


def files_of(dataset: Any) -> list[str]:
    return [f["filename"] for f in dataset.cache_files]


def open_files(files: Sequence[str | Path]) -> Any:
    """A dataset memory-mapped from Arrow files (in order)."""
    from datasets import Dataset, concatenate_datasets
    from datasets.arrow_reader import ArrowReader

    # Named by their path: datasets would otherwise hash each table to name it (most of a cached load).
    parts = [
        Dataset(ArrowReader.read_table(str(f)), fingerprint=hashlib.sha256(str(f).encode()).hexdigest()[:16])
        for f in files
    ]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def flat(dataset: Any, path: Path) -> Any:
    """``dataset`` as whole files holding exactly its rows, in order (written to ``path`` unless it is
    already that): what the lists read and what an entry keeps. A ``select`` or ``interleave`` gives
    an indices mapping, and a contiguous ``select`` a slice of a larger file; both are written out."""
    from datasets import Dataset
    from datasets.arrow_writer import ArrowWriter

    files = files_of(dataset)
    if (
        dataset._indices is None
        and files
        and sum(Dataset.from_file(f).num_rows for f in files) == len(dataset)
    ):
        return dataset
    with ArrowWriter(features=dataset.features, path=str(path), writer_batch_size=BATCH) as writer:
        for table in dataset.with_format("arrow").iter(batch_size=BATCH):
            writer.write_table(table)
        writer.finalize()
    return open_files([path])


# ------------------------------------------------------------------------------------------- lists


class _Rows(Sequence[Any]):
    """A stored dataset read as a sequence, one batch of rows decoded at a time."""

    def __init__(self, dataset: Any) -> None:
        assert dataset._indices is None, "flatten the dataset first"
        self.dataset = dataset
        self._start = -1
        self._batch: list[Any] = []  # the last decoded batch, for reading in order
        self._table: Any = None

    def _decode(self, row: dict[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _rows(self, start: int, stop: int) -> list[Any]:
        if self._table is None:  # read through maps of our own (see map_files); in memory if none
            files = files_of(self.dataset)
            self._table, self._release = map_files(files) if files else (self.dataset.data, lambda: None)
            assert self._table.num_rows == len(self), "a dataset whose files hold exactly its rows"
        rows = self._table.slice(start, stop - start).to_pylist()
        self._release()
        return [self._decode(row) for row in rows]

    def __len__(self) -> int:
        return self.dataset.num_rows

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._rows(start, max(start, stop))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if not self._start <= index < self._start + len(self._batch):
            self._start = index - index % BATCH
            self._batch = self._rows(self._start, min(self._start + BATCH, len(self)))
        return self._batch[index - self._start]

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, len(self), BATCH):
            yield from self._rows(start, min(start + BATCH, len(self)))


class ExampleList(_Rows):
    """A split's formatted examples on Arrow; ``content_hash`` is :func:`tunesmith.manifest.hash_examples`
    of them, computed when they were stored."""

    def __init__(self, dataset: Any, content_hash: str | None = None) -> None:
        super().__init__(dataset)
        self.content_hash = content_hash

    def _decode(self, row: dict[str, Any]) -> Example:
        return decode_example(row["example"])

    def kinds(self) -> set[str]:
        import pyarrow.compute as pc

        return set(pc.unique(self.dataset.data.column("kind")).to_pylist())


class TokenizedList(_Rows):
    """A split's tokenized sequences on Arrow; ``rows`` are its training rows (packed or not)."""

    def __init__(self, dataset: Any, rows: Any = None) -> None:
        super().__init__(dataset)
        self.rows = rows

    def _decode(self, row: dict[str, Any]) -> TokenizedExample:
        return TokenizedExample(row["input_ids"], row["labels"], row["origin"], row["truncated"])


# ----------------------------------------------------------------------------------------- writing


def write_examples(items: Iterable[tuple[Example, int]], path: Path) -> Any:
    """Examples (each with the index of the source it came from) written to one Arrow file."""
    from datasets import Features, Value
    from datasets.arrow_writer import ArrowWriter

    features = Features({"example": Value("string"), "kind": Value("string"), "source": Value("int32")})
    with ArrowWriter(features=features, path=str(path), writer_batch_size=BATCH) as writer:
        for example, source in items:
            writer.write({"example": encode_example(example), "kind": example.kind, "source": source})
        writer.finalize()
    return open_files([path])


# -------------------------------------------------------------------------------------- tokenizing


@dataclasses.dataclass
class Tokenize:
    """The ``Dataset.map`` function that tokenizes a batch of stored examples (picklable, for ``num_proc``).

    An example the tokenizer cannot use becomes one row with its ``problem`` (and ``field``) set and no
    tokens, so problems keep their origin and are listed once the whole split is done.
    """

    tokenizer: Any
    policy: ChatPolicy
    max_length: int
    train_on_prompt: bool
    truncate: bool

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        chat = ChatFormat(self.tokenizer, self.policy)
        out: dict[str, list[Any]] = {name: [] for name in TOKENIZED_COLUMNS}
        for text, source in zip(batch["example"], batch["source"], strict=True):
            example = decode_example(text)
            thinking = bool(example.messages) and chat.thinking_for(chat.prepare(example.messages or []))
            try:
                done = tokenize_example(
                    example,
                    self.tokenizer,
                    max_length=self.max_length,
                    train_on_prompt=self.train_on_prompt,
                    truncate=self.truncate,
                    chat=chat,
                )
                rows: list[tuple[TokenizedExample, str | None, str | None]] = [(t, None, None) for t in done]
            except InvalidRecord as e:
                rows = [(TokenizedExample([], [], example.origin), e.message, e.field)]
            for t, problem, field in rows:
                out["input_ids"].append(t.input_ids)
                out["labels"].append(t.labels)
                out["origin"].append(example.origin)
                out["truncated"].append(t.truncated)
                out["trained"].append(t.num_trained)
                out["source"].append(source)
                out["thinking"].append(thinking)
                out["problem"].append(problem)
                out["field"].append(field)
        return out


TOKENIZED_COLUMNS = (
    "input_ids",
    "labels",
    "origin",
    "truncated",
    "trained",
    "source",
    "thinking",
    "problem",
    "field",
)


def tokenized_features() -> Any:
    from datasets import Features, List, Value

    return Features(
        {
            "input_ids": List(Value("int32")),
            "labels": List(Value("int32")),
            "origin": Value("string"),
            "truncated": Value("bool"),
            "trained": Value("int32"),
            "source": Value("int32"),
            "thinking": Value("bool"),
            "problem": Value("string"),
            "field": Value("string"),
        }
    )


def auto_num_proc(num_proc: int, rows: int) -> int:
    """``data.num_proc``; 0 (auto) is one process per core (at most 8) for splits of 20k examples or more,
    where starting the processes pays for itself, else 1."""
    if num_proc:
        return num_proc
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 8) if rows >= 20_000 else 1


def tokenize_dataset(
    examples: Any, tokenize: Tokenize, path: Path, num_proc: int
) -> tuple[Any, list[RecordProblem], bool]:
    """Tokenized sequences of stored examples (problems removed), the problems, and whether any chat
    was rendered with thinking on."""
    import pyarrow.compute as pc

    quiet()
    procs = auto_num_proc(num_proc, len(examples))
    mapped = examples.map(
        tokenize,
        batched=True,
        batch_size=256,
        writer_batch_size=256,  # rows held as Python lists before they are written
        remove_columns=examples.column_names,
        features=tokenized_features(),
        num_proc=procs if procs > 1 and len(examples) >= 2 * procs else None,
        cache_file_name=str(path),
        load_from_cache_file=False,
        new_fingerprint=f"{path.stem}-tokenized",
        desc=None,
    )
    table = mapped.data
    bad = pc.is_valid(table.column("problem"))
    problems: list[RecordProblem] = []
    thinking = bool(pc.any(table.column("thinking")).as_py())
    if pc.any(bad).as_py():
        bad_rows = table.filter(bad).select(["origin", "problem", "field"]).to_pylist()
        problems = [RecordProblem(r["origin"], r["problem"], r["field"]) for r in bad_rows]
        good = pc.invert(bad).to_numpy(zero_copy_only=False).nonzero()[0]
        mapped = flat(mapped.select(good), path.with_name(path.stem + "-kept.arrow"))
    return mapped, problems, thinking


def token_stats(tokenized: Any) -> tuple[TokenStats, list[dict[str, int]]]:
    """Token counts of a tokenized split, overall and per source (index order)."""
    import numpy as np
    import pyarrow.compute as pc

    table = tokenized.data
    count = table.num_rows
    if not count:
        return TokenStats(), []
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
    trained = table.column("trained").to_numpy(zero_copy_only=False).astype("int64")
    ordered = np.sort(lengths)
    stats = TokenStats(
        count=count,
        min_tokens=int(ordered[0]),
        mean_tokens=float(lengths.mean()),
        p95_tokens=int(ordered[int(np.ceil(0.95 * count)) - 1]),
        max_tokens=int(ordered[-1]),
        trained_tokens=int(trained.sum()),
        truncated=int(pc.sum(table.column("truncated").cast("int64")).as_py() or 0),
    )
    sources = table.column("source").to_numpy(zero_copy_only=False)
    per_source = [
        {
            "sequences": int((sources == s).sum()),
            "tokens": int(lengths[sources == s].sum()),
            "trained_tokens": int(trained[sources == s].sum()),
        }
        for s in range(int(sources.max()) + 1)
    ]
    return stats, per_source


# ----------------------------------------------------------------------------------------- packing


def pack_dataset(tokenized: Any, max_length: int, path: Path) -> Any:
    """Packed training rows (``input_ids``, ``labels``, ``position_ids``) written to Arrow, 256 at a time.

    A row gathers samples from anywhere in the split, so the tokenized files are read through
    :func:`map_files`, whose pages are handed back after each batch of rows, and rows are assembled
    as arrays, not Python lists: memory holds one batch, not the split.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Features, List, Value
    from datasets.arrow_writer import ArrowWriter

    lengths = pc.list_value_length(tokenized.data.column("input_ids")).to_numpy(zero_copy_only=False)
    plan = first_fit_decreasing(lengths.tolist(), max_length)  # as tunesmith.data.pack packs
    features = Features({name: List(Value("int32")) for name in ("input_ids", "labels", "position_ids")})
    with (
        mapped(files_of(tokenized)) as (table, release),
        ArrowWriter(features=features, path=str(path)) as writer,
    ):
        assert table.num_rows == len(lengths), "pack a dataset whose files hold exactly its rows"
        ids_column, labels_column = table.column("input_ids"), table.column("labels")
        for start in range(0, len(plan), 256):
            rows = plan[start : start + 256]
            ids, labels = [], []
            for k in range(0, len(rows), 16):  # copied out, pages handed back every 16 rows
                for i in (i for row in rows[k : k + 16] for i in row):
                    ids.append(ids_column[i].values.to_numpy(zero_copy_only=False).copy())
                    labels.append(labels_column[i].values.to_numpy(zero_copy_only=False).copy())
                release()
            for sample in labels:
                sample[:1] = IGNORE_INDEX  # nothing before a sample's first token predicts it
            offsets = np.cumsum(
                [0] + [int(lengths[row].sum()) for row in map(np.asarray, rows)], dtype=np.int32
            )
            columns = {
                "input_ids": np.concatenate(ids),
                "labels": np.concatenate(labels),
                "position_ids": np.concatenate([np.arange(len(x), dtype=np.int32) for x in ids]),
            }
            batch = pa.table(
                {
                    k: pa.ListArray.from_arrays(pa.array(offsets), pa.array(v, pa.int32()))
                    for k, v in columns.items()
                }
            )
            writer.write_table(batch, writer_batch_size=len(rows))
        writer.finalize()
    return open_files([path])


def map_files(files: Sequence[str]) -> tuple[Any, Callable[[], None]]:
    """The Arrow stream files as one table over memory maps of our own, and a function that hands the
    pages read so far back to the kernel (``madvise(MADV_DONTNEED)``): they stay in the page cache, out
    of the process, so reading a split once does not leave it all counted in the process's memory."""
    import mmap

    import pyarrow as pa

    maps = []
    for name in files:
        with open(name, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    table = pa.concat_tables([pa.ipc.open_stream(pa.py_buffer(m)).read_all() for m in maps])

    def release() -> None:
        for m in maps:
            m.madvise(mmap.MADV_DONTNEED)

    return table, release


@contextmanager
def mapped(files: Sequence[str]) -> Iterator[tuple[Any, Callable[[], None]]]:
    """:func:`map_files`, released at the end."""
    table, release = map_files(files)
    try:
        yield table, release
    finally:
        release()


def unpacked_rows(tokenized: Any) -> Any:
    return tokenized.select_columns(["input_ids", "labels"])
