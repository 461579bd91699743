"""What a run was made from: package versions, code revision, and hashes of data and tokenizer.

The hashes let ``--resume`` refuse to continue a run whose inputs changed, and let anyone check later
that two runs saw the same data.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any

from tunesmith.examples import Example

PACKAGES = (
    "tunesmith",
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "tokenizers",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """The commit of the working directory's repository, with ``+dirty`` for uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def hash_examples(examples: Sequence[Example]) -> str:
    """sha256 over the formatted examples, in order (what training actually sees, before tokenizing).

    Prepared splits on Arrow carry it, computed once when they were stored (``content_hash``)."""
    stored = getattr(examples, "content_hash", None)
    if stored:
        return str(stored)
    return content_hash(examples)


def content_hash(examples: Iterable[Example]) -> str:
    """The hash itself. ``tools`` and ``choices`` count only when set, so older runs' hashes still hold."""
    digest = hashlib.sha256()
    for ex in examples:
        fields: list[Any] = [ex.messages, ex.text, ex.prompt, ex.chosen, ex.rejected, ex.completion, ex.label]
        fields += [{"tools": ex.tools}] if ex.tools is not None else []
        fields += [{"choices": ex.choices}] if ex.choices is not None else []
        digest.update(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def hash_tokenizer(tokenizer: Any) -> str:
    """sha256 over the vocabulary, special tokens and chat template: what changes token ids or masks."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": tokenizer.chat_template,
        "class": type(tokenizer).__name__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def build_manifest(
    *, seed: int, data_hashes: dict[str, str], tokenizer_hash: str, model: str
) -> dict[str, Any]:
    return {
        "packages": package_versions(),
        "git_commit": git_commit(),
        "seed": seed,
        "model": model,
        "data": data_hashes,
        "tokenizer": tokenizer_hash,
    }
