"""Training data larger than memory: with ``data.streaming`` the training split is read while training.

Records are read, formatted, tokenized and packed lazily, one buffer of ``data.stream_buffer`` examples at a
time, and reach the objective's trainer as a ``datasets.IterableDataset`` of rows: memory holds one
buffer, whatever the size of the data.

- **Before any model loads** only the split's first :data:`HEAD` records are read and checked (example
  kinds, lengths, bad records, duplicates and overlap with held-out data among them, the manifest's data
  hash). The rest is validated as it streams: a bad record stops the run with its ``file:line``
  (``data.on_invalid: error``) or is skipped with a warning (``drop``).
- **Order**: each buffer is packed (``data.packing``) and its rows shuffled by a generator seeded with
  ``training.seed``, the pass and the buffer's index. Passes over the data follow each other without end,
  so ``training.max_steps`` is required: it is what stops training.
- **Resume**: the stream is a pure function of the data and the seed, and it never ends, so the
  trainer's epoch is always 0 and ``transformers.Trainer`` fast-forwards a resumed run by skipping
  exactly the batches already trained (``accelerate.skip_first_batches``): the run continues at the same
  row, in the middle of a pass or not, and its final weights equal an uninterrupted run's. Skipped batches
  are read and tokenized again (not trained): resuming late in a large stream takes that reading time.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from tunesmith.config import Resolved
from tunesmith.errors import TunesmithError
from tunesmith.examples import InvalidRecord, RecordProblem
from tunesmith.plugins import Plugins

#: Records of the training split read and checked before training starts.
HEAD = 1000


def check_streaming(resolved: Resolved, streaming_objectives: list[str]) -> None:
    """Refuse what a stream cannot do, before anything is read: an unknown length, another objective."""
    from tunesmith.mixing import Mixture

    cfg, objective = resolved.config, resolved.objective
    if cfg.training.max_steps <= 0:
        raise TunesmithError(
            "data.streaming: true needs training.max_steps: a stream has no known length, so "
            "training.epochs cannot say when to stop",
            details=["set training.max_steps (e.g. --set training.max_steps=1000), or data.streaming: false"],
        )
    if not objective.streams:
        raise TunesmithError(
            f"objective '{objective.name}' cannot train on a stream (data.streaming: true)",
            details=[
                f"objectives that can: {', '.join(sorted(streaming_objectives)) or '(none)'}",
                "or set data.streaming: false",
            ],
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by torchrun and accelerate launch
        raise TunesmithError(
            "data.streaming: true trains in one process: several processes would each need their own "
            "share of the stream, which it does not split yet",
            details=["run it in one process, or set data.streaming: false (prepared data is shared)"],
        )
    if isinstance(resolved.sources.get("train"), Mixture):
        raise TunesmithError(
            "data.streaming: true reads one training source; a training split mixed from several is "
            "not streamed",
            details=["list one source under data.train, or set data.streaming: false"],
        )


def training_head(resolved: Resolved, plugins: Plugins) -> Resolved:
    """``resolved`` checked for streaming, with a training source that yields only its first :data:`HEAD`
    records: what is prepared (checked, hashed, measured) before training; the whole split streams later."""
    objectives = plugins.components["objective"].items()
    check_streaming(resolved, [name for name, cls in objectives if getattr(cls, "streams", False)])
    return with_training_head(resolved)


def with_training_head(resolved: Resolved) -> Resolved:
    """``resolved`` whose training source yields only its first :data:`HEAD` records (a streamed split is
    never read whole outside training: ``tunesmith eval`` of a finished run reads this too)."""
    source = resolved.sources["train"]
    head = copy.copy(source)
    head.read = lambda: islice(source.read(), HEAD)  # type: ignore[method-assign]
    return dataclasses.replace(resolved, sources={**resolved.sources, "train": head})


def training_stream(resolved: Resolved, tokenizer: Any, warn: Callable[[str], None]) -> Any:
    """The training split as an endless ``datasets.IterableDataset`` of rows (see the module docstring)."""
    from datasets.io.generator import GeneratorDatasetInputStream

    rows = RowStream(resolved, tokenizer, warn)
    # A fingerprint of our own: datasets would otherwise hash the generator (tokenizer and all) to name it.
    return GeneratorDatasetInputStream(generator=rows, streaming=True, fingerprint="tunesmith-stream").read()


class RowStream:
    """Calling it yields rows: passes over the training split, read, tokenized and packed lazily."""

    def __init__(self, resolved: Resolved, tokenizer: Any, warn: Callable[[str], None] = print) -> None:
        from tunesmith.chat import ChatFormat, ChatPolicy

        cfg = resolved.config
        self.source = resolved.sources["train"]
        self.formatter = resolved.formatter
        self.tokenizer = tokenizer
        self.chat = ChatFormat(tokenizer, ChatPolicy.from_config(cfg.template))
        self.data = cfg.data
        self.seed = cfg.training.seed
        self.warn = warn

    def __call__(self) -> Iterator[dict[str, list[int]]]:
        for epoch in range(1_000_000_000):  # endless in practice: training.max_steps stops it
            produced = 0
            buffer: list[Any] = []
            for example in self.tokenized(report=epoch == 0):
                buffer.append(example)
                if len(buffer) == self.data.stream_buffer:
                    yield from self.rows(buffer, epoch, produced)
                    produced, buffer = produced + 1, []
            if buffer:
                yield from self.rows(buffer, epoch, produced)
                produced += 1
            if not produced:
                raise TunesmithError("the training split has no usable examples")

    def tokenized(self, *, report: bool) -> Iterator[Any]:
        """Each usable example's token sequences; a bad record stops or is skipped per data.on_invalid
        (reported once, in the first pass; those among the first :data:`HEAD` were reported before training)."""
        from tunesmith.data import format_records, tokenize_example

        d = self.data
        for number, item in enumerate(format_records(self.source, self.formatter)):
            if isinstance(item, RecordProblem):
                problem = item
            else:
                try:
                    sequences = tokenize_example(
                        item,
                        self.tokenizer,
                        max_length=d.max_length,
                        train_on_prompt=d.train_on_prompt,
                        truncate=d.truncate,
                        chat=self.chat,
                    )
                except InvalidRecord as e:
                    problem = RecordProblem(item.origin, e.message, e.field)
                else:
                    yield from sequences
                    continue
            if d.on_invalid != "drop":
                raise TunesmithError(
                    f"invalid record in the training stream: {problem}",
                    details=[
                        f"streamed records are validated as they are read (the first {HEAD} before "
                        "training): fix the record, or set data.on_invalid: drop to skip such records"
                    ],
                )
            if report and number >= HEAD:
                self.warn(f"train: skipped invalid record {problem} (data.on_invalid: drop)")

    def rows(self, buffer: list[Any], epoch: int, index: int) -> list[dict[str, list[int]]]:
        """One buffer's rows, packed or not, in an order seeded by the run's seed, the pass and the buffer."""
        from tunesmith.data import pack

        if self.data.packing:
            rows = pack(buffer, self.data.max_length)
        else:
            rows = [{"input_ids": t.input_ids, "labels": t.labels} for t in buffer]
        random.Random(f"{self.seed}:{epoch}:{index}").shuffle(rows)
        return rows
