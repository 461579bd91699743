"""Preparing a run's data: read, format, validate and tokenize every split, before any model loads.

Everything that can be wrong with the user's input (records, the tokenizer, lengths) is found here and
reported at once, so a mistake costs seconds and leaves nothing behind. ``data check`` stops here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tunesmith.config import Resolved
from tunesmith.data_checks import DataChecks, check_data
from tunesmith.errors import TunesmithError
from tunesmith.examples import Example, RecordProblem
from tunesmith.plugins import Plugins
from tunesmith.runs import base_model_path

MAX_PROBLEMS_SHOWN = 50


@dataclass
class PreparedData:
    """Validated examples and their tokenization, per split."""

    examples: dict[str, list[Example]]
    tokenized: dict[str, list[Any]] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    problems: list[RecordProblem] = field(default_factory=list)
    #: Duplicates in the training split and overlap with held-out data (``tunesmith.data_checks``).
    checks: DataChecks | None = None


def check_problems(resolved: Resolved, prepared: PreparedData) -> None:
    """Raise one error listing every bad record, unless data.on_invalid is drop (then they are counted)."""
    problems = prepared.problems
    if problems and resolved.config.data.on_invalid != "drop":
        shown = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        shown.append("fix the records, or set data.on_invalid: drop to skip them (they are counted)")
        raise TunesmithError(f"{len(problems)} invalid record(s) in the data:", details=shown)
    if not prepared.examples.get("train") or (prepared.tokenized and not prepared.tokenized.get("train")):
        raise TunesmithError("the training split has no usable examples")


def read_data(resolved: Resolved) -> PreparedData:
    """Read and format every split, collecting (not raising) bad records so all are reported at once."""
    from tunesmith.data import read_split

    prepared = PreparedData(examples={})
    unreadable = []
    for split, source in resolved.sources.items():
        try:
            examples, bad = read_split(source, resolved.formatter)
        except TunesmithError as e:  # a missing or unreadable file: read the other splits, then list all
            unreadable.append(f"data.{split}: {e}")
            continue
        prepared.examples[split] = examples
        prepared.dropped[split] = len(bad)
        prepared.problems.extend(bad)
    if unreadable:
        raise TunesmithError(
            f"{len(unreadable)} data split(s) cannot be read:" if len(unreadable) > 1 else unreadable[0],
            details=unreadable if len(unreadable) > 1 else [],
        )
    if prepared.examples.get("train"):
        _check_kinds(resolved, prepared.examples["train"])
    return prepared


def _check_kinds(resolved: Resolved, examples: list[Example]) -> None:
    """The formatter's examples must be what the objective trains on (e.g. DPO needs preference pairs)."""
    wanted = resolved.objective.example_kinds
    found = sorted({ex.kind for ex in examples})
    wrong = [k for k in found if k not in wanted]
    if wrong:
        raise TunesmithError(
            f"objective '{resolved.objective.name}' trains on {' or '.join(wanted)} examples, but formatter "
            f"'{resolved.formatter.name}' produced {', '.join(wrong)} examples",
            details=["choose a formatter that produces the right kind (see: tunesmith plugins list)"],
        )


def tokenize_data(resolved: Resolved, tokenizer: Any, prepared: PreparedData) -> PreparedData:
    """Tokenize and mask every split; over-long records are problems unless data.truncate is set."""
    from tunesmith.data import tokenize_split

    d = resolved.config.data
    chat = chat_format(resolved, tokenizer)
    for split, examples in prepared.examples.items():
        tokenized, bad, stats = tokenize_split(
            examples,
            tokenizer,
            max_length=d.max_length,
            train_on_prompt=d.train_on_prompt,
            truncate=d.truncate,
            chat=chat,
        )
        prepared.tokenized[split] = tokenized
        prepared.stats[split] = dataclasses.asdict(stats)
        prepared.dropped[split] = prepared.dropped.get(split, 0) + len(bad)
        prepared.problems.extend(bad)
    return prepared


def chat_format(resolved: Resolved, tokenizer: Any) -> Any:
    """How this run renders chats: the tokenizer's template under the config's ``template`` policy."""
    from tunesmith.chat import ChatFormat, ChatPolicy

    return ChatFormat(tokenizer, ChatPolicy.from_config(resolved.config.template))


def training_rows(resolved: Resolved, tokenized: list[Any]) -> list[dict[str, Any]]:
    from tunesmith.data import pack

    d = resolved.config.data
    if d.packing:
        return pack(tokenized, d.max_length)
    return [{"input_ids": t.input_ids, "labels": t.labels} for t in tokenized]


def prepare(resolved: Resolved, ui: Any, plugins: Plugins) -> tuple[PreparedData, Any]:
    """Data and tokenizer, validated: everything a run or ``data check`` needs before any model loads.

    Only the tokenizer is fetched: a model provider that builds its model (``tiny``) builds it later,
    so a data mistake is reported in seconds.
    """
    from tunesmith.models import load_tokenizer

    ui.step("Reading and validating data")
    prepared = read_data(resolved)
    ui.step("Checking for duplicates and contamination")
    prepared.examples["train"], prepared.checks = check_data(prepared.examples, resolved.config.data)
    for warning in prepared.checks.warnings():
        ui.warn(warning)
    ui.step("Loading tokenizer")
    path = base_model_path(resolved, plugins, ui.note, tokenizer_only=True)
    tokenizer, notes = load_tokenizer(resolved.config.model, path, resolved.config.template.chat_template)
    for note in notes:
        ui.warn(note)
    prepared = tokenize_data(resolved, tokenizer, prepared)
    check_problems(resolved, prepared)
    for split, n in prepared.dropped.items():
        if n:
            ui.warn(f"{split}: dropped {n} invalid record(s) (data.on_invalid: drop)")
    return prepared, tokenizer


def thinking_used(resolved: Resolved, tokenizer: Any, prepared: PreparedData) -> bool:
    """Whether training chats were rendered with thinking on: generate and chat prompt the same way."""
    chat = chat_format(resolved, tokenizer)
    return any(
        chat.thinking_for(chat.prepare(ex.messages)) for ex in prepared.examples["train"] if ex.messages
    )
