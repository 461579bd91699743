"""Data checks: duplicates within the training split, and training data that overlaps held-out data.

``prepare`` runs both stages on the formatted examples, before a tokenizer or model loads:

- **Deduplication.** Exact duplicates (the same text after Unicode NFKC, case-folding and collapsing
  whitespace) and near-duplicates (MinHash LSH on word 3-grams proposes, exact Jaccard similarity
  decides) within the training split.
- **Decontamination.** A training example is contaminated by a held-out example (validation, test, or
  a record of ``data.contamination_files``) when both have the same text, share a word n-gram
  (13 words by default), or are near-duplicates (Jaccard or containment of their 3-grams).

Templated data repeats text by design (every record of a task may share its instruction), so a word
3-gram found in more than ``data.common_ngram_share`` of a split's records is template, and the words
it covers are left out before n-grams and 3-grams are compared: what is compared is what each record
says. Every finding names both origins (``train.jsonl:412 ↔ test.jsonl:17``); each check has a policy
(off, warn, drop, error), and the findings go to ``data check``, the run directory
(``data_checks.json``) and the report.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, overload

from tunesmith.errors import TunesmithError
from tunesmith.examples import Example
from tunesmith.schema import DataConfig

#: Words per shingle: near-duplicates compare word 3-grams, and template text is found by them.
SHINGLE = 3
#: MinHash permutations: a Jaccard estimate within about ±0.04 of the truth, to find candidates.
NUM_PERM = 128
#: A 3-gram is template only when at least this many records share it (small splits have few records).
MIN_COMMON = 5
#: Training records sampled (evenly) to find the training split's template 3-grams.
SAMPLE = 10_000
#: Finding lines in an error, in ``data check`` and in the report before "... and N more".
SHOWN = 50

HELD_OUT_SPLITS = ("validation", "test")
# Han ideographs and kana are words of their own (those scripts do not separate words with spaces).
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+")


# ------------------------------------------------------------------------------------------ results


@dataclass
class Finding:
    """One duplicate or contaminated training example, with the example it matches."""

    check: str  #: "duplicate", "near-duplicate" or "contamination"
    against: str  #: "train", "validation", "test", or a contamination file's path
    origin: str  #: the training example the policy acts on
    other: str  #: what it matches: the earlier training example it duplicates, or a held-out example
    match: str  #: how: "exact", "13-gram 'a b c ...'", "Jaccard 0.86"
    action: str  #: "kept", "dropped" or "refused"

    def pair(self) -> str:
        """Both origins, earlier training example first, then how they match and what was done."""
        first, second = (self.other, self.origin) if self.against == "train" else (self.origin, self.other)
        what = {"dropped": f", dropped {self.origin}", "refused": ""}.get(self.action, "")
        return f"{first} ↔ {second} ({self.match}{what})"


@dataclass
class Check:
    """One check that ran: what it compared, how, under which policy, and how much it found."""

    check: str
    against: str
    method: str
    policy: str
    found: int = 0
    template_3grams: int = 0  #: template 3-grams whose words were left out of the comparison


@dataclass
class DataChecks:
    """What the data checks found; ``prepare`` keeps it on ``PreparedData.checks``."""

    checks: list[Check] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    examples: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def dropped(self) -> list[str]:
        return list(dict.fromkeys(f.origin for f in self.findings if f.action == "dropped"))

    def warnings(self) -> list[str]:
        """One line per check that found something it keeps or drops (errors are raised instead)."""
        lines = []
        for check in self.checks:
            found = [f for f in self.findings_of(check) if f.action != "refused"]
            if found:
                first = found[0].pair()
                more = f" and {len(found) - 1} more" if len(found) > 1 else ""
                lines.append(f"{headline(check, len(found))}: {first}{more}")
        return lines

    def findings_of(self, check: Check) -> list[Finding]:
        """The findings of one check."""
        return [f for f in self.findings if f.check == check.check and f.against == check.against]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataChecks:
        """The inverse of :meth:`to_dict` (for prepared data read back from the cache)."""
        return cls(
            checks=[Check(**c) for c in data.get("checks", [])],
            findings=[Finding(**f) for f in data.get("findings", [])],
            examples=dict(data.get("examples", {})),
            seconds=data.get("seconds", 0.0),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``data check --json`` and ``data_checks.json``."""
        return {
            "seconds": round(self.seconds, 3),
            "examples": self.examples,
            "checks": [asdict(c) for c in self.checks],
            "findings": [asdict(f) for f in self.findings],
            "dropped": self.dropped,
        }


class _Prepared(Protocol):
    checks: DataChecks | None


def option_of(check: dict[str, Any]) -> str:
    """The config key of a check's policy."""
    if check["check"] == "duplicate":
        return "data.dedup"
    if check["check"] == "near-duplicate":
        return "data.near_dedup"
    if check["against"] in HELD_OUT_SPLITS:
        return f"data.contamination_{check['against']}"
    return "data.contamination_files_policy"


def headline(check: dict[str, Any] | Check, count: int) -> str:
    """``3 exact duplicate(s) in the training split (data.dedup: drop)``, for one check."""
    c = asdict(check) if isinstance(check, Check) else check
    if c["check"] == "duplicate":
        what = f"{count} exact duplicate(s) in the training split"
    elif c["check"] == "near-duplicate":
        what = f"{count} near-duplicate(s) in the training split"
    else:
        against = f"the {c['against']} split" if c["against"] in HELD_OUT_SPLITS else c["against"]
        what = f"{count} training example(s) overlap {against}"
    return f"{what} ({option_of(c)}: {c['policy']})"


def describe(summary: dict[str, Any], shown: int = SHOWN) -> list[tuple[str, list[str]]]:
    """For each check that ran: a line saying what it compared, how, and what it found; then its findings.

    Shared by ``data check`` and the report, from :meth:`DataChecks.to_dict` (or ``data_checks.json``).
    """
    out = []
    for c in summary.get("checks", []):
        found = [
            f
            for f in summary.get("findings", [])
            if f["check"] == c["check"] and f["against"] == c["against"]
        ]
        label = {"duplicate": "exact duplicates in train", "near-duplicate": "near-duplicates in train"}.get(
            c["check"], f"train overlapping {c['against']}"
        )
        verb = {"drop": "dropped", "warn": "found, kept"}.get(c["policy"], "found")
        result = f"{len(found)} {verb}" if found else "none"
        ignored = f", {c['template_3grams']} template 3-grams left out" if c.get("template_3grams") else ""
        line = f"{label}: {result} ({c['method']}{ignored}; {option_of(c)}: {c['policy']})"
        lines = [Finding(**f).pair() for f in found[:shown]]
        if len(found) > shown:
            lines.append(f"... and {len(found) - shown} more")
        out.append((line, lines))
    return out


def write_data_checks(run_dir_path: Path, prepared: _Prepared) -> dict[str, Any] | None:
    """``data_checks.json`` in the run directory: every finding, what was kept or dropped; returns it."""
    from tunesmith.rundir import write_json

    if prepared.checks is None:
        return None
    summary = prepared.checks.to_dict()
    write_json(Path(run_dir_path) / "data_checks.json", summary)
    return summary


# ------------------------------------------------------------------------------------------- texts


def texts(example: Example) -> list[str]:
    """The text an example is made of: message contents (and reasoning), text, answers."""
    parts = []
    for turns in (example.messages, example.prompt):
        for turn in turns or []:
            parts += [v for k, v in turn.items() if k != "role" and isinstance(v, str)]
    parts += [
        v for v in (example.text, example.chosen, example.rejected, example.completion) if v is not None
    ]
    return parts


def normalize(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed to single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_key(example: Example) -> bytes:
    """Equal for examples whose texts are equal after :func:`normalize` (and whose labels are equal)."""
    parts = [normalize(t) for t in texts(example)]
    if example.label is not None:
        parts.append(f"label={example.label}")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def words(example: Example) -> list[str]:
    return _TOKEN.findall(normalize("\n".join(texts(example))))


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[k : k + n]) for k in range(len(tokens) - n + 1)}


def shingles(tokens: list[str]) -> set[str]:
    """Word 3-grams; a shorter text is one shingle."""
    if len(tokens) <= SHINGLE:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[k : k + SHINGLE]) for k in range(len(tokens) - SHINGLE + 1)}


def template_of(token_lists: Iterable[list[str]], records: int, share: float) -> set[str]:
    """The word 3-grams found in more than ``share`` of ``records`` (and in at least MIN_COMMON of
    them): text that records share by design, such as an instruction every record repeats."""
    counts: Counter = Counter()
    for tokens in token_lists:
        counts.update(shingles(tokens))
    return {g for g, c in counts.items() if c > share * records and c >= MIN_COMMON}


def content(tokens: list[str], template: set[str]) -> tuple[list[str], set[str]]:
    """The words of ``tokens`` that no template 3-gram covers (what the record itself says), and
    their 3-grams."""
    if len(tokens) <= SHINGLE:
        whole = " ".join(tokens)
        return ([], set()) if not tokens or whole in template else (tokens, {whole})
    three = [" ".join(tokens[k : k + SHINGLE]) for k in range(len(tokens) - SHINGLE + 1)]
    covered = [k for k, x in enumerate(three) if x in template]
    if not covered:
        return tokens, set(three)
    mask = [False] * len(tokens)
    for k in covered:
        mask[k : k + SHINGLE] = [True] * SHINGLE
    said = [t for t, m in zip(tokens, mask, strict=True) if not m]
    return said, shingles(said)


def read_contamination_file(path: str) -> list[Example]:
    """A JSONL file of held-out records; every string in a record (nested ones too) is its text."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TunesmithError(f"data.contamination_files: cannot read {path}: {e}") from None
    out, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"{path}:{number}: invalid JSON: {e.msg} (column {e.colno})")
            continue
        strings = list(_strings(record))
        if strings:
            out.append(Example(text="\n".join(strings), origin=f"{path}:{number}"))
    if bad:
        raise TunesmithError(
            f"data.contamination_files: {len(bad)} unreadable line(s) in {path}:", details=bad
        )
    return out


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# ------------------------------------------------------------------------------------------- checks


@overload
def check_data(
    examples: Mapping[str, Sequence[Example]], config: DataConfig, *, indices: Literal[False] = False
) -> tuple[list[Example], DataChecks]: ...
@overload
def check_data(
    examples: Mapping[str, Sequence[Example]], config: DataConfig, *, indices: Literal[True]
) -> tuple[list[int], DataChecks]: ...
def check_data(
    examples: Mapping[str, Sequence[Example]], config: DataConfig, *, indices: bool = False
) -> tuple[list[Any], DataChecks]:
    """Run both stages; returns the training examples to keep (their positions with ``indices``, for
    splits stored on Arrow) and the findings.

    Memory follows the number of training examples only through 16-byte hashes of their texts (exact
    checks) and the MinHash index (near-duplicates, about 1 KB per example); held-out splits are
    indexed whole. Raises :class:`TunesmithError` listing every finding of a check whose policy is
    ``error`` (with both origins), after all checks ran.
    """
    started = time.monotonic()
    train = examples.get("train") or []
    held_out = {s: examples[s] for s in HELD_OUT_SPLITS if examples.get(s)}
    policies = {"validation": config.contamination_validation, "test": config.contamination_test}
    if config.contamination_files_policy != "off":
        for path in config.contamination_files:
            held_out[path] = read_contamination_file(path)
            policies[path] = config.contamination_files_policy
    keys = [exact_key(ex) for ex in train]
    refuse_copied_splits(keys, held_out)
    result = DataChecks(examples={"train": len(train), **{s: len(v) for s, v in held_out.items()}})
    dropped: set[int] = set()
    threshold, n = config.near_duplicate_threshold, config.contamination_ngram
    # Template 3-grams of the training split, from an even sample of at most SAMPLE records.
    sample = range(0, len(train), max(len(train) // SAMPLE, 1))
    template = template_of((words(train[i]) for i in sample), len(sample), config.common_ngram_share)

    # Deduplication: exact, then near (each example against those before it).
    first: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    if config.dedup != "off":
        check = Check("duplicate", "train", "same text after NFKC, case-folding, whitespace", config.dedup)
        result.checks.append(check)
        for i, key in enumerate(keys):
            if first[key] != i:
                _found(result, check, train[i].origin, train[first[key]].origin, "exact", dropped, i)
    if threshold > 0 and config.near_dedup != "off":
        method = f"MinHash LSH, Jaccard ≥ {threshold:g} on word {SHINGLE}-grams"
        check = Check("near-duplicate", "train", method, config.near_dedup, template_3grams=len(template))
        result.checks.append(check)
        firsts = {i for i, key in enumerate(keys) if first[key] == i}
        kept = [i for i in range(len(train)) if i not in dropped]
        _near_duplicates(train, kept, firsts, template, threshold, result, check, dropped)

    # Decontamination: every training example left, against each held-out split and file.
    kept = [i for i in range(len(train)) if i not in dropped]
    for against, records in held_out.items():
        if policies[against] == "off":
            continue
        methods = ["same text"]
        if n:
            methods.append(f"a shared word {n}-gram")
        if threshold > 0:
            methods.append(f"Jaccard or containment ≥ {threshold:g} on word {SHINGLE}-grams")
        check = Check("contamination", against, ", ".join(methods), policies[against])
        result.checks.append(check)
        matches = _exact_matches(keys, kept, records)
        _overlaps(train, kept, records, template, config, check, matches)
        for i in sorted(matches):
            _, h, how = matches[i]
            _found(result, check, train[i].origin, records[h].origin, how, dropped, i)
    result.seconds = time.monotonic() - started
    _raise_errors(result)
    if indices:
        return [i for i in range(len(train)) if i not in dropped], result
    return [ex for i, ex in enumerate(train) if i not in dropped], result


def refuse_copied_splits(keys: list[bytes], held_out: Mapping[str, Sequence[Example]]) -> None:
    """A validation or test split made only of training examples is a mistake, whatever the policy."""
    known = set(keys)
    for split in HELD_OUT_SPLITS:
        records = held_out.get(split) or []
        if records and all(exact_key(ex) in known for ex in records):
            raise TunesmithError(
                f"every {split} example ({len(records)}) is also a training example: a held-out split "
                "must not be trained on",
                details=[f"e.g. {records[0].origin}; point data.{split} at data the model does not train on"],
            )


def _found(
    result: DataChecks, check: Check, origin: str, other: str, match: str, dropped: set[int], i: int
) -> None:
    action = {"drop": "dropped", "error": "refused"}.get(check.policy, "kept")
    result.findings.append(Finding(check.check, check.against, origin, other, match, action))
    check.found += 1
    if action == "dropped":
        dropped.add(i)


def _raise_errors(result: DataChecks) -> None:
    refused = [c for c in result.checks if any(f.action == "refused" for f in result.findings_of(c))]
    if not refused:
        return
    details = []
    for check in refused:
        found = result.findings_of(check)
        if len(refused) > 1:
            details.append(headline(check, len(found)) + ":")
        details += [("  " if len(refused) > 1 else "") + f.pair() for f in found[:SHOWN]]
        if len(found) > SHOWN:
            details.append(f"... and {len(found) - SHOWN} more")
    details.append(
        "remove them from the training data, or set the option to drop (train without them) or warn (go on)"
    )
    if len(refused) == 1:
        message = headline(refused[0], len(result.findings_of(refused[0]))) + ":"
    else:
        message = f"{len(refused)} data checks failed:"
    raise TunesmithError(message, details=details)


def _near_duplicates(
    train: Sequence[Example],
    kept: list[int],
    firsts: set[int],
    template: set[str],
    threshold: float,
    result: DataChecks,
    check: Check,
    dropped: set[int],
) -> None:
    """Near-duplicates within the training split, on the words that are not template.

    MinHash LSH (at a lower similarity than the threshold) proposes earlier examples as candidates;
    their exact Jaccard similarity decides, so a finding's number is exact and none hinges on hashing
    luck. An exact duplicate is not compared again (the exact check reports it).
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=max(threshold - 0.15, 0.05), num_perm=NUM_PERM)
    empty = MinHash(num_perm=NUM_PERM)  # copied for each example: its permutations are computed once
    cache: dict[int, set[str]] = {}

    def shingles_of(i: int) -> set[str]:
        if i not in cache:
            if len(cache) >= 4096:
                cache.clear()
            cache[i] = content(words(train[i]), template)[1]
        return cache[i]

    for i in kept:
        s = shingles_of(i)
        if not s:
            continue
        m = empty.copy()
        m.update_batch([x.encode("utf-8", "surrogatepass") for x in s])
        if i in firsts:
            scored = [(j, _jaccard(s, shingles_of(j))) for j in lsh.query(m)]
            scored = [(j, sim) for j, sim in scored if sim >= threshold]
            if scored:
                j, similarity = max(scored, key=lambda p: (p[1], -p[0]))
                _found(
                    result, check, train[i].origin, train[j].origin, f"Jaccard {similarity:.2f}", dropped, i
                )
                if i in dropped:
                    continue
        lsh.insert(i, m)


#: A training example's best match with one held-out split: (rank, held-out index, how); lower rank wins.
Matches = dict[int, tuple[int, int, str]]


def _match(matches: Matches, i: int, rank: int, h: int, how: str) -> None:
    if i not in matches or (rank, h) < matches[i][:2]:
        matches[i] = (rank, h, how)


def _exact_matches(keys: list[bytes], kept: list[int], records: Sequence[Example]) -> Matches:
    held: dict[bytes, int] = {}
    for h, ex in enumerate(records):
        held.setdefault(exact_key(ex), h)
    matches: Matches = {}
    for i in kept:
        if keys[i] in held:
            _match(matches, i, 0, held[keys[i]], "exact")
    return matches


def _overlaps(
    train: Sequence[Example],
    kept: list[int],
    records: Sequence[Example],
    train_template: set[str],
    config: DataConfig,
    check: Check,
    matches: Matches,
) -> None:
    """Training examples that share a word n-gram with a held-out example, or whose 3-grams are
    near-duplicates of its 3-grams (Jaccard similarity) or hold most of them (containment: a test
    question copied under a reworded instruction, or into a longer text).

    Both compare content: the words no template 3-gram covers, template being what the training split
    or this held-out split repeats. The held-out n-grams and 3-grams are indexed, and each training
    example looked up in the index once: memory follows the held-out data, and every number is exact.
    """
    n, threshold = config.contamination_ngram, config.near_duplicate_threshold
    held_words = [words(ex) for ex in records]
    template = train_template | template_of(held_words, len(records), config.common_ngram_share)
    check.template_3grams = len(template)
    grams: dict[tuple[str, ...], list[int]] = {}
    three: dict[str, list[int]] = {}
    sizes = []
    for h, tokens in enumerate(held_words):
        said, own = content(tokens, template)
        if n:
            for gram in ngrams(said, n):
                grams.setdefault(gram, []).append(h)
        for x in own:
            three.setdefault(x, []).append(h)
        sizes.append(len(own))
    prefilter = not n or n >= SHINGLE  # a shared n-gram then means a shared 3-gram
    for i in kept:
        said, own = content(words(train[i]), template)
        shared_three = own & three.keys()
        if not shared_three and prefilter:
            continue
        if grams and len(said) >= n:
            for gram in sorted(ngrams(said, n) & grams.keys(), key=lambda g: grams[g][0])[:1]:
                _match(matches, i, 1, grams[gram][0], f"{n}-gram '{' '.join(gram)}'")
        if threshold > 0:
            shared: Counter = Counter()
            for x in shared_three:
                shared.update(three[x])
            for h, k in shared.items():
                jaccard, contained = k / (sizes[h] + len(own) - k), k / sizes[h]
                if max(jaccard, contained) >= threshold:
                    how = f"Jaccard {jaccard:.2f}" if jaccard >= contained else f"{contained:.0%} contained"
                    _match(matches, i, 2, h, how)


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


__all__ = [
    "Check",
    "DataChecks",
    "Finding",
    "check_data",
    "describe",
    "headline",
    "normalize",
    "write_data_checks",
]
