"""The base model's evaluation results, reused by the next run that would compute the same numbers.

A run scores the untouched base model before training it (``evaluation.compare_base``). Those scores
depend only on the base model, the evaluation examples, the evaluator and its options, and how text is
generated: when none of these changed since an earlier run, the earlier scores are reused instead of
evaluating the base model again. Each (evaluator, split) result is one entry under
``$TUNESMITH_CACHE/eval/``, keyed by a hash of:

- the tunesmith, torch and transformers versions and the device type;
- the base model: its files (small files by content; weights by the content hash in a Hugging Face
  cache path, else by size and modification time), how it was loaded (dtype, attention implementation,
  quantisation) and the ``model`` section;
- the tokenizer (vocabulary, special tokens, chat template) and the rendered evaluation examples;
- the generation settings (batch size, max_new_tokens, stop ids, strip_reasoning);
- the evaluator: its name, options (an option naming a file counts by the file's content), and the
  source file of its module.

An evaluator whose base pass must run every time (it writes files, or keeps state in a way the cache
cannot replay) sets ``cache_base = False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from tunesmith import cache
from tunesmith.components import Evaluator
from tunesmith.contexts import EvalExample

KIND = "eval"
RESULT = "result.json"
#: Files up to this size are fingerprinted by content; larger ones (weights) by size and mtime.
SMALL_FILE = 4 << 20


class BaseEvalCache:
    """Looks up and stores the base pass's results of one run; remembers which were reused."""

    def __init__(self, common: dict[str, Any]) -> None:
        self.common = common
        self.reused: list[dict[str, Any]] = []
        self.computed: list[dict[str, Any]] = []

    @classmethod
    def for_run(cls, model: Any, tokenizer: Any, resolved: Any) -> BaseEvalCache | None:
        """The cache for a run's base pass; ``None`` when the base model cannot be identified (then
        nothing is reused)."""
        import torch
        import transformers

        from tunesmith import __version__
        from tunesmith.manifest import hash_tokenizer
        from tunesmith.prepare import chat_format

        fingerprint = model_fingerprint(model)
        if fingerprint is None:
            return None
        e = resolved.config.evaluation
        common = {
            "versions": {
                "tunesmith": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "device": str(getattr(getattr(model, "device", None), "type", "cpu")),
            "model": fingerprint,
            "model_section": describe(resolved.config.model),
            "tokenizer": hash_tokenizer(tokenizer),
            "generation": {
                "batch_size": e.batch_size,
                "max_new_tokens": e.max_new_tokens,
                "strip_reasoning": e.strip_reasoning,
                "stop_token_ids": chat_format(resolved, tokenizer).stop_token_ids(model),
            },
        }
        return cls(common)

    def key(self, evaluator: Evaluator, split: str, examples: list[EvalExample]) -> str | None:
        """The entry key for ``evaluator`` on ``split``; ``None`` if the evaluator opts out."""
        if not getattr(evaluator, "cache_base", True):
            return None
        return cache.key_of(
            {
                **self.common,
                "evaluator": describe(evaluator),
                "split": split,
                "examples": hash_examples(examples),
            }
        )

    def load(self, key: str | None, evaluator: str, split: str) -> dict[str, Any] | None:
        """The stored result for ``key`` (decided by the main process under ``torch.distributed``)."""
        found = _on_main_then_shared(lambda: _read(key) if key else None)
        if found is not None:
            self.reused.append(
                {"evaluator": evaluator, "split": split, "computed_at": found.get("computed_at")}
            )
        return found

    def store(self, key: str | None, evaluator: str, split: str, result: dict[str, Any]) -> None:
        """Keep a freshly computed result (main process only; a failed write only loses the reuse)."""
        self.computed.append({"evaluator": evaluator, "split": split})
        if key is None or not _is_main():
            return
        record = {**result, "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            with cache.writing(KIND, key) as tmp:
                (tmp / RESULT).write_text(json.dumps(record, default=str), encoding="utf-8")
        except OSError:
            pass

    def describe_reused(self) -> str:
        """``perplexity on test, exact-match on test``: what :meth:`load` found."""
        return ", ".join(f"{r['evaluator']} on {r['split']}" for r in self.reused)

    def summary(self) -> dict[str, Any]:
        """What ``metrics.json`` records under ``base_cache``."""
        return {"enabled": True, "reused": self.reused, "computed": self.computed}


def _read(key: str) -> dict[str, Any] | None:
    entry = cache.entry(KIND, key)
    if entry is None:
        return None
    try:
        data = json.loads((entry / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("metrics"), dict) else None


# ------------------------------------------------------------------------------------- identities


def model_fingerprint(model: Any) -> dict[str, Any] | None:
    """What identifies the loaded base model: its files and how they were loaded; ``None`` if unknown."""
    from tunesmith.hf import unwrap

    inner = unwrap(model)
    config = getattr(inner, "config", None)
    source = str(getattr(inner, "name_or_path", "") or getattr(config, "_name_or_path", "") or "")
    directory = _local_dir(source)
    if directory is None:
        return None
    quantization = getattr(config, "quantization_config", None)
    if quantization is not None and hasattr(quantization, "to_dict"):
        quantization = quantization.to_dict()
    return {
        "files": files_fingerprint(directory),
        "class": type(inner).__name__,
        "dtype": str(getattr(inner, "dtype", "")),
        "attention": str(getattr(config, "_attn_implementation", "")),
        "quantization": json.loads(json.dumps(quantization, default=str)),
    }


def _local_dir(source: str) -> Path | None:
    """The directory the model was loaded from: a local path, or a hub id's cached snapshot."""
    if not source:
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the local hub cache (or not a hub id): not identifiable
        return None


def files_fingerprint(directory: Path) -> dict[str, Any]:
    """Per file under ``directory``: its sha256 when small, else the blob name of a Hugging Face cache
    link (itself a content hash), else size and modification time."""
    out: dict[str, Any] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = str(path.relative_to(directory))
        real = path.resolve()
        stat = real.stat()
        if stat.st_size <= SMALL_FILE:
            out[name] = cache.hash_file(real)
        elif real.parent.name == "blobs":
            out[name] = real.name
        else:
            out[name] = [stat.st_size, stat.st_mtime_ns]
    return out


def describe(value: Any) -> Any:
    """A JSON-able description of a component, a config or an option value, for keys.

    Components (an evaluator, a nested judge) give their name, options and module source; a string
    option naming an existing file gives that file's content hash too.
    """
    if hasattr(value, "name") and hasattr(value, "config") and not isinstance(value, type):
        return {"name": value.name, "options": describe(value.config), "source": _module_hash(type(value))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    if isinstance(value, str) and value and len(value) < 4096:
        path = Path(value).expanduser()
        if path.is_file():
            return {"path": value, "sha256": cache.hash_file(path)}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _module_hash(cls: type) -> str | None:
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    return cache.hash_file(Path(file)) if file and Path(file).is_file() else None


def hash_examples(examples: list[EvalExample]) -> str:
    """sha256 of the rendered evaluation examples, as evaluators receive them."""
    payload = [dataclasses.asdict(ex) for ex in examples]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# ------------------------------------------------------------------------------------ distributed


def _is_main() -> bool:
    from tunesmith.contexts import rank_and_world_size

    return rank_and_world_size()[0] == 0


def _on_main_then_shared(read: Any) -> Any:
    """``read()`` on the main process, sent to the others, so every process reuses or recomputes alike."""
    from tunesmith.contexts import rank_and_world_size

    rank, world = rank_and_world_size()
    value = read() if rank == 0 else None
    if world > 1:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        value = box[0]
    return value


__all__ = ["BaseEvalCache", "describe", "files_fingerprint", "hash_examples", "model_fingerprint"]
