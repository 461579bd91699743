"""Preparing a run's data: read, format, validate and tokenize every split, before any model loads.

Everything that can be wrong with the user's input (records, the tokenizer, lengths) is found here and
reported at once, so a mistake costs seconds and leaves nothing behind. ``data check`` stops here.

Prepared splits live on Arrow (:mod:`tunesmith.datastore`) and are cached (:mod:`tunesmith.cache`,
``data/``) under a key of everything that changes them: the data files' contents, each source's and
formatter's options, the tokenizer and chat template, the ``data`` and ``template`` sections, the seed
of a mixed split and tunesmith's version. A second identical run loads them instead of preparing them
again; ``data.cache: false`` turns that off. Under ``torch.distributed`` the first process prepares and
writes the entry, and the others load it once it is there (:func:`prepare`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith import cache
from tunesmith.config import SPLITS, Resolved
from tunesmith.data_checks import DataChecks, check_data
from tunesmith.errors import TunesmithError
from tunesmith.examples import Example, RecordProblem
from tunesmith.plugins import Plugins
from tunesmith.runs import base_model_path

MAX_PROBLEMS_SHOWN = 50
#: Bumped when what an entry holds changes shape.
CACHE_FORMAT = 1


@dataclass
class PreparedData:
    """Validated examples and their tokenization, per split.

    ``examples`` and ``tokenized`` are sequences: lists for data read in memory, Arrow-backed
    (:class:`tunesmith.datastore.ExampleList` / ``TokenizedList``) for prepared runs, whose training
    rows are ``tokenized[split].rows`` (see :func:`training_rows`).
    """

    examples: dict[str, Sequence[Example]]
    tokenized: dict[str, Sequence[Any]] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    problems: list[RecordProblem] = field(default_factory=list)
    #: Duplicates in the training split and overlap with held-out data (``tunesmith.data_checks``).
    checks: DataChecks | None = None
    #: Whether any training chat was rendered with thinking on (None: not known yet).
    thinking: bool | None = None
    #: "hit" when the splits came from the cache, "stored" when they were prepared and cached, else "off".
    cache: str = "off"
    #: Example kinds in the training split (checked against the objective's).
    kinds: set[str] = field(default_factory=set)


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


# ------------------------------------------------------------------------------------------ reading


@dataclass
class _Read:
    """Each split's parts as stored examples, before checks and mixing."""

    parts: dict[str, list[Any]]
    problems: list[RecordProblem]
    dropped: dict[str, int]


def _read_splits(resolved: Resolved, work: Path) -> _Read:
    """Read and format every split into Arrow, collecting (not raising) bad records so all are reported."""
    from tunesmith.data import format_records
    from tunesmith.datastore import write_examples
    from tunesmith.mixing import parts_of

    read = _Read({}, [], {})
    unreadable = []
    for split, source in resolved.sources.items():
        stored = []
        bad: list[RecordProblem] = []
        try:
            for index, part in enumerate(parts_of(source)):

                def examples(part: Any = part, index: int = index, bad: list = bad) -> Any:
                    for item in format_records(part.source, part.formatter or resolved.formatter):
                        if isinstance(item, RecordProblem):
                            bad.append(item)
                        else:
                            yield item, index

                stored.append(write_examples(examples(), work / f"{split}-{index}.arrow"))
        except TunesmithError as e:  # a missing or unreadable file: read the other splits, then list all
            unreadable.append(f"data.{split}: {e}")
            continue
        read.parts[split] = stored
        read.dropped[split] = len(bad)
        read.problems.extend(bad)
    if unreadable:
        raise TunesmithError(
            f"{len(unreadable)} data split(s) cannot be read:" if len(unreadable) > 1 else unreadable[0],
            details=unreadable if len(unreadable) > 1 else [],
        )
    return read


def _whole(parts: list[Any]) -> Any:
    from datasets import concatenate_datasets

    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _mixed(resolved: Resolved, split: str, parts: list[Any], work: Path) -> Any:
    """One split's examples: its parts (less what the checks dropped) mixed by weight, written in order."""
    from tunesmith.datastore import flat
    from tunesmith.mixing import Mixture, mix

    source = resolved.sources[split]
    if not isinstance(source, Mixture):
        return flat(parts[0], work / f"{split}-kept.arrow")
    kept = [(p, d) for p, d in zip(source.parts, parts, strict=True) if len(d)]
    mixture = Mixture([p for p, _ in kept] or source.parts)
    mixed = mix(
        [d for _, d in kept] or parts[:1],
        mixture,
        seed=resolved.config.training.seed,
        stopping=resolved.config.data.mix_stopping,
    )
    return flat(mixed, work / f"{split}-mixed.arrow")


def read_data(resolved: Resolved) -> PreparedData:
    """Every split's examples in memory (mixed as a run mixes them), bad records collected: for
    evaluating a finished run, which needs no tokenized rows."""
    from tunesmith.datastore import ExampleList

    if resolved.config.data.streaming:  # a streamed training split is never read whole
        from tunesmith.streaming import with_training_head

        resolved = with_training_head(resolved)
    work = Path(tempfile.mkdtemp(prefix="tunesmith-read-"))
    try:
        read = _read_splits(resolved, work)
        prepared = PreparedData(examples={}, dropped=read.dropped, problems=read.problems)
        for split, parts in read.parts.items():
            prepared.examples[split] = list(ExampleList(_mixed(resolved, split, parts, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if prepared.examples.get("train"):
        _check_kinds(resolved, {ex.kind for ex in prepared.examples["train"]})
    return prepared


def _check_kinds(resolved: Resolved, found: set[str]) -> None:
    """The formatter's examples must be what the objective trains on (e.g. DPO needs preference pairs)."""
    wanted = resolved.objective.example_kinds
    wrong = [k for k in sorted(found) if k not in wanted]
    if wrong:
        raise TunesmithError(
            f"objective '{resolved.objective.name}' trains on {' or '.join(wanted)} examples, but formatter "
            f"'{resolved.formatter.name}' produced {', '.join(wrong)} examples",
            details=["choose a formatter that produces the right kind (see: tunesmith plugins list)"],
        )


def _kinds(dataset: Any) -> set[str]:
    from tunesmith.datastore import ExampleList

    return ExampleList(dataset).kinds()


# ----------------------------------------------------------------------------------------- building


def tokenize_data(resolved: Resolved, tokenizer: Any, prepared: PreparedData) -> PreparedData:
    """Tokenize and mask every split held in memory; over-long records are problems unless data.truncate
    is set (the lists path: :func:`prepare` tokenizes on Arrow)."""
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


def _build(resolved: Resolved, tokenizer: Any, work: Path, ui: Any) -> tuple[PreparedData, dict[str, Any]]:
    """Prepare every split into ``work``; returns the data and what an entry's ``meta.json`` records."""
    from tunesmith.datastore import (
        ExampleList,
        Tokenize,
        TokenizedList,
        pack_dataset,
        token_stats,
        tokenize_dataset,
        unpacked_rows,
    )
    from tunesmith.manifest import content_hash

    d = resolved.config.data
    read = _read_splits(resolved, work)
    kinds = _kinds(_whole(read.parts["train"])) if "train" in read.parts else set()
    _check_kinds(resolved, kinds)
    ui.step("Checking for duplicates and contamination")
    whole = {split: ExampleList(_whole(parts)) for split, parts in read.parts.items()}
    kept, checks = check_data(whole, d, indices=True)
    for warning in checks.warnings():
        ui.warn(warning)
    if "train" in read.parts:
        read.parts["train"] = _keep(read.parts["train"], kept, work)
    ui.step("Tokenizing")
    tokenize = Tokenize(
        tokenizer, chat_format(resolved, tokenizer).policy, d.max_length, d.train_on_prompt, d.truncate
    )
    prepared = PreparedData(examples={}, dropped=read.dropped, problems=read.problems, checks=checks)
    meta: dict[str, Any] = {"layout": CACHE_FORMAT, "kinds": sorted(kinds), "splits": {}}
    for split, parts in read.parts.items():
        mixed = _mixed(resolved, split, parts, work)
        examples = ExampleList(mixed, content_hash(ExampleList(mixed)))
        tokenized, bad, thinking = tokenize_dataset(
            mixed, tokenize, work / f"{split}-tokens.arrow", d.num_proc
        )
        rows = None
        if split in ("train", "validation"):
            rows = pack_dataset(tokenized, d.max_length, work / f"{split}-rows.arrow") if d.packing else None
        stats, per_source = token_stats(tokenized)
        prepared.examples[split] = examples
        prepared.tokenized[split] = TokenizedList(
            tokenized, rows if rows is not None else unpacked_rows(tokenized)
        )
        prepared.stats[split] = {**dataclasses.asdict(stats), **_sources(resolved, split, mixed, per_source)}
        prepared.dropped[split] = prepared.dropped.get(split, 0) + len(bad)
        prepared.problems.extend(bad)
        if split == "train":
            prepared.thinking = thinking
        meta["splits"][split] = {
            "examples": _names(mixed, work),
            "hash": examples.content_hash,
            "tokenized": _names(tokenized, work),
            "rows": _names(rows, work) if rows is not None else None,
            "stats": prepared.stats[split],
        }
    meta.update(
        dropped=prepared.dropped,
        problems=[dataclasses.asdict(p) for p in prepared.problems],
        checks=checks.to_dict(),
        thinking=prepared.thinking,
    )
    return prepared, meta


def _keep(parts: list[Any], kept: list[int], work: Path) -> list[Any]:
    """The parts of the training split without the examples the data checks dropped."""
    from tunesmith.datastore import flat

    total = sum(len(p) for p in parts)
    if len(kept) == total:
        return parts
    out, start = [], 0
    for index, part in enumerate(parts):
        own = [i - start for i in kept if start <= i < start + len(part)]
        out.append(flat(part.select(own), work / f"train-{index}-checked.arrow"))
        start += len(part)
    return out


def _sources(resolved: Resolved, split: str, mixed: Any, per_source: list[dict[str, int]]) -> dict[str, Any]:
    """Per-source counts of a mixed split (nothing for a single source)."""
    from collections import Counter

    from tunesmith.mixing import Mixture

    source = resolved.sources[split]
    if not isinstance(source, Mixture):
        return {}
    examples = Counter(mixed.data.column("source").to_pylist())
    out = []
    for i, part in enumerate(source.parts):
        counts = per_source[i] if i < len(per_source) else {"sequences": 0, "tokens": 0, "trained_tokens": 0}
        out.append(
            {
                "source": part.source.describe(),
                "formatter": (part.formatter or resolved.formatter).name,
                "weight": part.weight,
                "examples": examples.get(i, 0),
                **counts,
            }
        )
    return {"sources": out}


def _names(dataset: Any, work: Path) -> list[str]:
    from tunesmith.datastore import files_of

    return [str(Path(f).relative_to(work)) for f in files_of(dataset)]


def _load(path: Path) -> PreparedData:
    """A cache entry's data, memory-mapped (held-out examples in memory: they are small)."""
    from tunesmith.data_checks import DataChecks
    from tunesmith.datastore import ExampleList, TokenizedList, open_files

    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    prepared = PreparedData(
        examples={},
        dropped=meta["dropped"],
        problems=[RecordProblem(**p) for p in meta["problems"]],
        checks=DataChecks.from_dict(meta["checks"]),
        thinking=meta["thinking"],
        cache="hit",
    )
    for split, entry in meta["splits"].items():
        examples = ExampleList(open_files([path / f for f in entry["examples"]]), entry["hash"])
        tokenized = open_files([path / f for f in entry["tokenized"]])
        rows = (
            open_files([path / f for f in entry["rows"]])
            if entry["rows"]
            else tokenized.select_columns(["input_ids", "labels"])
        )
        prepared.examples[split] = examples if split == "train" else list(examples)
        prepared.tokenized[split] = TokenizedList(tokenized, rows)
        prepared.stats[split] = entry["stats"]
    prepared.kinds = set(meta["kinds"])
    return prepared


def _prune(work: Path, meta: dict[str, Any]) -> None:
    """Delete the intermediate files of a build: an entry keeps what ``meta.json`` names."""
    keep = {
        name
        for entry in meta["splits"].values()
        for key in ("examples", "tokenized", "rows")
        for name in entry[key] or []
    }
    for file in work.iterdir():
        if file.is_file() and file.name not in keep:
            file.unlink()


# -------------------------------------------------------------------------------------------- keys


def cache_key(resolved: Resolved, tokenizer: Any) -> str:
    """The key of everything that changes prepared data (see the module docstring)."""
    from tunesmith import __version__
    from tunesmith.config import component_dict
    from tunesmith.manifest import hash_tokenizer
    from tunesmith.mixing import Mixture, parts_of

    cfg = resolved.config
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in (*SPLITS, "cache", "num_proc")}
    splits = {
        split: [
            {
                "source": fingerprint(component_dict(p.source)),
                "weight": p.weight,
                "formatter": fingerprint(component_dict(p.formatter)) if p.formatter else None,
            }
            for p in parts_of(source)
        ]
        for split, source in resolved.sources.items()
    }
    mixed = any(isinstance(s, Mixture) for s in resolved.sources.values())
    return cache.key_of(
        {
            "layout": CACHE_FORMAT,
            "version": __version__,
            "splits": splits,
            "formatter": fingerprint(component_dict(resolved.formatter)),
            "data": fingerprint(data),
            "template": dataclasses.asdict(cfg.template),
            "tokenizer": hash_tokenizer(tokenizer),
            "seed": cfg.training.seed if mixed else None,
            "code": code_hashes(resolved),
        }
    )


#: The modules whose code decides what prepared data holds, besides the sources' and formatters' own.
PREPARING_MODULES = ("chat", "data", "datastore", "data_checks", "examples", "mixing", "prepare")


def code_hashes(resolved: Resolved) -> dict[str, str]:
    """Hashes of the code that prepares data: tunesmith's modules and the files defining each source and
    formatter class, so that an upgraded plugin, or an edited checkout, never reads an older entry."""
    import importlib
    import inspect

    from tunesmith.mixing import parts_of

    classes: list[Any] = [type(resolved.formatter)]
    for source in resolved.sources.values():
        for p in parts_of(source):
            classes += [type(p.source), type(p.formatter)] if p.formatter else [type(p.source)]
    files = {importlib.import_module(f"tunesmith.{m}").__file__ for m in PREPARING_MODULES}
    for cls in classes:
        try:
            files.add(inspect.getsourcefile(cls))
        except TypeError:  # defined outside a file (an interactive session): its name stands for it
            files.add(f"{cls.__module__}.{cls.__qualname__}")
    return {f: cache.hash_file(Path(f)) if Path(f).is_file() else f for f in sorted(f for f in files if f)}


def fingerprint(options: Any) -> Any:
    """``options`` with every string that names an existing file or directory paired with its contents'
    hash: a data file edited in place changes the key."""
    if isinstance(options, dict):
        return {k: fingerprint(v) for k, v in options.items()}
    if isinstance(options, list):
        return [fingerprint(v) for v in options]
    if isinstance(options, str) and options and len(options) < 4096:
        path = Path(options).expanduser()
        try:
            if path.exists():
                return {"path": options, "sha256": cache.hash_path(path)}
        except OSError:
            pass
    return options


# ------------------------------------------------------------------------------------------ prepare


def chat_format(resolved: Resolved, tokenizer: Any) -> Any:
    """How this run renders chats: the tokenizer's template under the config's ``template`` policy."""
    from tunesmith.chat import ChatFormat, ChatPolicy

    return ChatFormat(tokenizer, ChatPolicy.from_config(resolved.config.template))


def training_rows(resolved: Resolved, tokenized: Sequence[Any]) -> Any:
    """The rows an objective trains on: packed (``data.packing``) or one per sequence. Prepared splits
    carry theirs, on Arrow; a list of :class:`tunesmith.data.TokenizedExample` is packed here."""
    from tunesmith.data import pack

    rows = getattr(tokenized, "rows", None)
    if rows is not None:
        return rows
    d = resolved.config.data
    if d.packing:
        return pack(tokenized, d.max_length)
    return [{"input_ids": t.input_ids, "labels": t.labels} for t in tokenized]


def prepare(resolved: Resolved, ui: Any, plugins: Plugins) -> tuple[PreparedData, Any]:
    """Data and tokenizer, validated: everything a run or ``data check`` needs before any model loads.

    Only the tokenizer is fetched: a model provider that builds its model (``tiny``) builds it later,
    so a data mistake is reported in seconds. When ``torch.distributed`` is initialised, the process of
    global rank 0 prepares the data and caches it; the others wait for it, then load the entry (each
    prepares by itself only when it cannot see that entry, e.g. a node with its own disk). A data
    mistake is raised in every process.
    """
    if resolved.config.data.streaming:  # the training split streams while training: prepare its head
        from tunesmith.streaming import training_head

        resolved = training_head(resolved, plugins)
    ranks = _ranks()
    if ranks is None:
        return _prepare(resolved, ui, plugins, use_cache=resolved.config.data.cache)
    return ranks.main_first(lambda: _prepare(resolved, ui, plugins, use_cache=True))


def _ranks() -> Any:
    """This process's :class:`tunesmith.distributed.Ranks` when ``torch.distributed`` is initialised with
    several processes, else None (torch is not imported for that: if it is not loaded, no group is)."""
    import sys

    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    from tunesmith.distributed import Ranks

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size())


def _prepare(resolved: Resolved, ui: Any, plugins: Plugins, *, use_cache: bool) -> tuple[PreparedData, Any]:
    from tunesmith.models import load_tokenizer

    ui.step("Loading tokenizer")
    path = base_model_path(resolved, plugins, ui.note, tokenizer_only=True)
    tokenizer, notes = load_tokenizer(resolved.config.model, path, resolved.config.template.chat_template)
    for note in notes:
        ui.warn(note)
    key = cache_key(resolved, tokenizer) if use_cache else None
    found = cache.entry("data", key) if key else None
    if found is not None:
        ui.step(f"Loading prepared data from the cache ({found.name[:12]})")
        prepared = _load(found)
        _check_kinds(resolved, prepared.kinds)
        if prepared.checks is not None:
            for warning in prepared.checks.warnings():
                ui.warn(warning)
    else:
        ui.step("Reading and validating data")
        prepared = _fresh(resolved, tokenizer, key, ui)
    check_problems(resolved, prepared)
    for split, n in prepared.dropped.items():
        if n:
            ui.warn(f"{split}: dropped {n} invalid record(s) (data.on_invalid: drop)")
    return prepared, tokenizer


def _fresh(resolved: Resolved, tokenizer: Any, key: str | None, ui: Any) -> PreparedData:
    """Prepare the data; store it under ``key`` unless caching is off or a record is refused."""
    if key is None:
        work = Path(tempfile.mkdtemp(prefix="tunesmith-data-"))
        _remove_at_exit(work)  # memory-mapped until the process ends
        return _build(resolved, tokenizer, work, ui)[0]
    with cache.writing("data", key) as work:
        prepared, meta = _build(resolved, tokenizer, work, ui)
        if prepared.problems and resolved.config.data.on_invalid != "drop":
            check_problems(resolved, prepared)  # raises: nothing is stored
        _prune(work, meta)
        (work / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    found = cache.entry("data", key)
    if found is None:  # pragma: no cover - the entry was removed at once
        raise TunesmithError(f"the data cache entry {key} vanished while it was written")
    prepared = _load(found)
    prepared.cache = "stored"
    return prepared


def _remove_at_exit(path: Path) -> None:
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)


def thinking_used(resolved: Resolved, tokenizer: Any, prepared: PreparedData) -> bool:
    """Whether training chats were rendered with thinking on: generate and chat prompt the same way."""
    if prepared.thinking is not None:
        return prepared.thinking
    chat = chat_format(resolved, tokenizer)
    return any(
        chat.thinking_for(chat.prepare(ex.messages)) for ex in prepared.examples["train"] if ex.messages
    )
