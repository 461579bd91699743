"""Blind human review: the sheet format the ``human-review`` evaluator writes, and importing ratings.

The ``human-review`` evaluator (:mod:`tunesmith_plugins.evaluators.human_review`) writes, in ``<run dir>/review/``:

- ``review.csv``: one row per prompt, columns ``id, prompt, response_a, response_b, rating``; raters fill
  ``rating`` with ``a``, ``b`` or ``tie`` (any letter case);
- ``review.html``: the same items side by side, for reading;
- ``review_key.json``: which side (``a`` / ``b``) is the base model and which the tuned model, per id.

``tunesmith review import RUN_DIR RATINGS_CSV`` (a command the ``human-review`` plugin adds; it calls
:func:`import_ratings`) checks the ratings, maps each
back to base / tuned with the key, and writes ``review/results.json`` with the tuned model's win, tie
and loss rates.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tunesmith import TunesmithError

REVIEW_DIR = "review"
SHEET_CSV = "review.csv"
SHEET_HTML = "review.html"
KEY_FILE = "review_key.json"
RESULTS_FILE = "results.json"
COLUMNS = ("id", "prompt", "response_a", "response_b", "rating")
RATINGS = ("a", "b", "tie")
#: Problems listed in full before the rest are only counted.
MAX_LISTED = 20


def read_key(review_dir: Path) -> dict[str, dict[str, Any]]:
    """The key's items: id -> ``{"a": "base"|"tuned", "b": ..., "split": ..., "origin": ...}``."""
    path = review_dir / KEY_FILE
    if not path.is_file():
        raise TunesmithError(
            f"no review key at {path}",
            details=[
                "add the 'human-review' evaluator to a run (with evaluation.compare_base on) to get one"
            ],
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = data["items"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TunesmithError(f"{path} is not a review key ({exc})") from exc
    return items


def read_ratings(path: Path, key: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(id, rating) per row of a filled sheet, ratings lowercased; every bad row is an error.

    Row numbers count as a spreadsheet shows them: the header is row 1, the first item row 2.
    """
    if not path.is_file():
        raise TunesmithError(f"no ratings file at {path}")
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("id", "rating") if c not in header]
        if missing:
            raise TunesmithError(
                f"{path}: no {' or '.join(repr(c) for c in missing)} column",
                details=[f"the sheet's columns are: {', '.join(COLUMNS)}"],
            )
        rows = list(reader)
    problems: list[str] = []
    seen: dict[str, int] = {}
    ratings: list[tuple[str, str]] = []
    for number, row in enumerate(rows, start=2):
        item = (row.get("id") or "").strip()
        rating = (row.get("rating") or "").strip().lower()
        if item not in key:
            problems.append(f"row {number}: id {item!r} is not in the review key")
            continue
        if item in seen:
            problems.append(f"row {number}: id {item!r} is rated again (first on row {seen[item]})")
            continue
        seen[item] = number
        if rating not in RATINGS:
            shown = repr(row.get("rating") or "") if rating else "empty"
            problems.append(f"row {number} (id {item}): rating {shown}; use a, b or tie")
            continue
        ratings.append((item, rating))
    if problems:
        listed = problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            listed.append(f"... and {len(problems) - MAX_LISTED} more")
        raise TunesmithError(f"{path}: {len(problems)} bad row(s)", details=listed)
    if not ratings:
        raise TunesmithError(f"{path}: no rated rows")
    return ratings


def tally(outcomes: list[str]) -> dict[str, Any]:
    """Counts and rates of ``win`` / ``tie`` / ``loss`` outcomes (from the tuned model's side)."""
    n = len(outcomes)
    wins, ties, losses = (outcomes.count(o) for o in ("win", "tie", "loss"))
    return {
        "rated": n,
        "tuned_wins": wins,
        "ties": ties,
        "tuned_losses": losses,
        "win_rate": wins / n if n else 0.0,
        "tie_rate": ties / n if n else 0.0,
        "loss_rate": losses / n if n else 0.0,
    }


def import_ratings(run_dir: Path, ratings_csv: Path) -> dict[str, Any]:
    """Score a filled review sheet against the run's key; writes and returns ``review/results.json``."""
    review_dir = Path(run_dir) / REVIEW_DIR
    if not Path(run_dir).is_dir():
        raise TunesmithError(f"no run directory at {run_dir}")
    key = read_key(review_dir)
    ratings = read_ratings(Path(ratings_csv), key)
    outcomes: dict[str, list[str]] = {}
    overall: list[str] = []
    for item, rating in ratings:
        if rating == "tie":
            outcome = "tie"
        else:
            side = key[item].get(rating)
            if side not in ("base", "tuned"):
                raise TunesmithError(f"review key entry for {item!r} does not say which side is base")
            outcome = "win" if side == "tuned" else "loss"
        overall.append(outcome)
        outcomes.setdefault(str(key[item].get("split", "")), []).append(outcome)
    results = {
        **tally(overall),
        "items": len(key),
        "unrated": len(key) - len(ratings),
        "ratings_file": str(ratings_csv),
        "by_split": {split: tally(o) for split, o in sorted(outcomes.items())},
    }
    _write_json(review_dir / RESULTS_FILE, results)
    return results


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = [
    "COLUMNS",
    "KEY_FILE",
    "MAX_LISTED",
    "RATINGS",
    "RESULTS_FILE",
    "REVIEW_DIR",
    "SHEET_CSV",
    "SHEET_HTML",
    "import_ratings",
    "read_key",
    "read_ratings",
    "tally",
]
