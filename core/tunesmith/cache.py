"""tunesmith's cache on disk: where it lives, how entries are written whole, what it holds, clearing it.

The root is ``$TUNESMITH_CACHE`` (default ``~/.cache/tunesmith``); each kind of entry has its own
subfolder (``data/``: prepared splits, see :mod:`tunesmith.prepare`). An entry is a directory named by
the key of everything that made it. It is built in a temporary directory beside it and renamed into
place only when complete, so a crash or a second process never leaves a half-written entry where a
reader looks; an entry without its ``COMPLETE`` marker is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The file written last into an entry: without it, the entry is not used.
COMPLETE = "COMPLETE"
#: Cache subfolders and what they hold (``tunesmith cache info`` shows them in this order).
KINDS = {
    "data": "prepared data splits (formatted, tokenized, packed)",
    "eval": "base-model evaluation results",
}


def root() -> Path:
    """The cache root: ``$TUNESMITH_CACHE``, else ``~/.cache/tunesmith``."""
    return Path(os.environ.get("TUNESMITH_CACHE") or Path.home() / ".cache" / "tunesmith").expanduser()


def folder(kind: str) -> Path:
    return root() / kind


def key_of(parts: Any) -> str:
    """A stable key for JSON-able ``parts`` (dict order does not matter)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def hash_file(path: Path, digest: Any = None) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = digest or hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def hash_path(path: Path) -> str:
    """sha256 of a file, or of every file under a directory (relative names and contents)."""
    if path.is_file():
        return hash_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0")
        hash_file(file, digest)
    return digest.hexdigest()


def entry(kind: str, key: str) -> Path | None:
    """The complete entry for ``key``, or None."""
    path = folder(kind) / key
    return path if (path / COMPLETE).is_file() else None


@contextmanager
def writing(kind: str, key: str) -> Iterator[Path]:
    """A temporary directory to fill; on success it becomes the entry for ``key`` (atomically).

    On an error the temporary directory is removed and nothing is published. When another process
    published the same key first, its entry is kept (both were built from the same inputs).
    """
    base = folder(kind)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        (tmp / COMPLETE).write_text("ok\n", encoding="utf-8")
        final = base / key
        if final.exists() and not (final / COMPLETE).is_file():
            shutil.rmtree(final, ignore_errors=True)  # a broken entry (an older crash, a manual edit)
        try:
            os.rename(tmp, final)
        except OSError:  # published meanwhile by another process: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class Usage:
    """What one cache subfolder holds."""

    kind: str
    entries: int
    bytes: int
    incomplete: int


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def usage() -> list[Usage]:
    """Entries and bytes per subfolder; leftovers of interrupted writes are counted apart (incomplete)."""
    out = []
    present = sorted(p.name for p in root().iterdir() if p.is_dir()) if root().is_dir() else []
    for kind in dict.fromkeys([*KINDS, *present]):
        base = folder(kind)
        children = list(base.iterdir()) if base.is_dir() else []
        broken = [
            c
            for c in children
            if c.name.startswith(".tmp-") or (kind in KINDS and not (c / COMPLETE).is_file())
        ]
        size = sum(size_of(c) if c.is_dir() else c.stat().st_size for c in children)
        out.append(Usage(kind, len(children) - len(broken), size, len(broken)))
    return out


def clear(kinds: list[str] | None = None) -> int:
    """Remove the entries of ``kinds``, or everything under the root when None; returns the bytes freed."""
    bases = [folder(kind) for kind in kinds] if kinds is not None else [root()]
    freed = 0
    for base in bases:
        if base.is_dir():
            freed += size_of(base)
            shutil.rmtree(base)
    return freed


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover - unreachable


__all__ = ["clear", "entry", "hash_path", "key_of", "root", "usage", "writing"]
