"""Write ``general.jsonl``: the default canary set of the ``forgetting`` evaluator.

100 documents drawn from the built-in tiny model's pre-training distribution
(:func:`tunesmith_plugins.models.tiny.pretraining_documents`) with seed 12345, which pre-training did
not use (it used seed 0). A document that also occurs in the part of the seed-0 stream that
pre-training consumed (1,500 steps x 16 rows x 128 tokens; one token per byte plus <s> and <|end|>)
is skipped, so every canary document is held out verbatim. Deterministic: rerunning rewrites a
byte-identical file.  Usage: python plugins/tunesmith_plugins/evaluators/canary/make_general.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunesmith_plugins.models import tiny

SEED = 12345
SIZE = 100
OUT = Path(__file__).with_name("general.jsonl")


def pretraining_seen() -> set[str]:
    """Every document the tiny model's pre-training read (whole or in part)."""
    budget = tiny.PRETRAIN_STEPS * tiny.PRETRAIN_BATCH * tiny.PRETRAIN_SEQ_LEN
    seen: set[str] = set()
    tokens = 0
    for doc in tiny.pretraining_documents(random.Random(tiny.SEED)):
        if tokens >= budget:
            return seen
        seen.add(doc)
        tokens += len(doc.encode("utf-8")) + 2  # byte-level tokenizer: one token per byte, plus <s> <|end|>
    raise AssertionError("unreachable: the stream is endless")


def canary_documents(seed: int = SEED, size: int = SIZE) -> list[str]:
    seen = pretraining_seen()
    docs: list[str] = []
    for doc in tiny.pretraining_documents(random.Random(seed)):
        if doc not in seen and doc not in docs:
            docs.append(doc)
        if len(docs) == size:
            return docs
    raise AssertionError("unreachable: the stream is endless")


def main(out: Path = OUT) -> None:
    docs = canary_documents()
    out.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    print(f"wrote {len(docs)} documents ({sum(len(d) for d in docs):,} characters) to {out}")


if __name__ == "__main__":
    main()
