"""The ``forgetting`` evaluator: a catastrophic-forgetting gate on a general-text canary set."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunesmith import EvalContext, Evaluator, Register, TunesmithError, hookimpl, option

#: The default canary set: held-out documents of the built-in tiny model's pre-training distribution.
SHIPPED_CANARY = Path(__file__).with_name("canary") / "general.jsonl"


class Forgetting(Evaluator):
    """Catastrophic-forgetting gate: perplexity on a general-text canary set, tuned vs base model.

    Scores the model's perplexity on the canary set (general text, not the run's evaluation examples)
    on the base model's pass and again on the tuned model's pass. On the tuned pass it reports
    ``relative_change`` (tuned / base - 1) and records the gate ``forgetting``: it passes when the
    change is at most ``threshold``; a failure warns, or with ``action: fail`` makes ``tunesmith run``
    exit with status 3 (the run's artifacts are kept). Without a base pass (``evaluation.compare_base:
    false``) there is nothing to compare: only ``perplexity`` is reported and no gate is recorded.

    The default canary set (``canary/general.jsonl``, 100 documents) fits only the built-in ``tiny``
    model: for any other model give ``canary``, a JSONL file of general text the base model handles
    well (a slice of a pre-training-like corpus, or a public-domain book cut into paragraphs), one
    ``{"text": ...}`` per line. The set is scored once per model: on every evaluation split after the
    first the same numbers are reported again and no second gate is recorded. Metrics:
    ``perplexity``, and on the tuned pass ``relative_change``.
    """

    name = "forgetting"

    @dataclass
    class Config:
        canary: str | None = option(
            None,
            help='JSONL file of general text, one {"text": ...} per line, relative to the working '
            "directory (default: the shipped set, which fits only the built-in tiny model)",
        )
        threshold: float = option(
            0.15,
            help="largest allowed relative increase of canary perplexity, tuned / base - 1 (0.15: +15%)",
            minimum=0,
        )
        action: Literal["warn", "fail"] = option(
            "warn", help="on a failed gate: warn, or fail (tunesmith run exits with status 3)"
        )
        max_documents: int | None = option(
            None, help="score only the first this many canary documents (default: all)", minimum=1
        )

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._documents: list[str] | None = None
        self._base: float | None = None  # the base pass's perplexity, until the tuned pass uses it
        self._passes: dict[str, tuple[str, dict[str, float]]] = {}  # label -> (first split, metrics)

    def validate(self) -> Iterable[tuple[str, str]]:
        if self.config.canary is not None:
            try:
                self.documents()  # a bad file is reported with the config, before anything trains
            except TunesmithError as exc:
                yield "canary", "; ".join([exc.message, *exc.details])

    def documents(self) -> list[str]:
        """The canary texts (read once), at most ``max_documents`` of them."""
        if self._documents is None:
            path = Path(self.config.canary) if self.config.canary is not None else SHIPPED_CANARY
            self._documents = load_canary(path)
        return self._documents[: self.config.max_documents or None]

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        seen = self._passes.get(ctx.label)
        if seen is not None and seen[0] != ctx.split:
            return dict(seen[1])  # a later split of the same pass: the canary set does not change
        ppl = canary_perplexity(ctx, self.documents())
        metrics = {"perplexity": ppl}
        if ctx.label == "base":
            self._base = ppl
        else:
            base, self._base = self._base, None  # a base value serves one tuned pass only
            if base is None:  # the base pass was reused from the evaluation cache
                base = (getattr(ctx, "base_metrics", None) or {}).get("perplexity")
            if base is not None:
                change = ppl / base - 1.0
                metrics["relative_change"] = change
                passed, detail = judge(base, ppl, self.config.threshold)
                ctx.gate(self.name, passed, detail, fail_run=self.config.action == "fail")
        self._passes[ctx.label] = (ctx.split, metrics)
        return dict(metrics)


def judge(base: float, tuned: float, threshold: float) -> tuple[bool, str]:
    """Whether the tuned canary perplexity is within ``threshold`` of the base one, and why."""
    change = tuned / base - 1.0
    passed = change <= threshold + 1e-9  # float noise: 3 → 3.45 is +15%, within a threshold of 0.15
    shown = f"×{tuned / base:.0f}" if change >= 10 else _percent(change, sign=True)
    verdict = "within" if passed else "above"
    detail = f"canary perplexity {base:.4g} → {tuned:.4g} ({shown}; {verdict} the allowed {_percent(threshold, sign=True)})"
    return passed, detail


def _percent(value: float, sign: bool = False) -> str:
    """``0.15`` as ``15%`` (``+15%`` with ``sign``), ``-0.075`` as ``-7.5%``; ``0%`` for zero."""
    text = f"{100 * value:{'+' if sign else ''}.1f}".removesuffix(".0")
    return ("0" if text.lstrip("+-") == "0" else text) + "%"


def canary_perplexity(ctx: EvalContext, documents: list[str]) -> float:
    """exp of the mean per-token NLL of ``documents``, each scored whole after the BOS token."""
    bos = getattr(ctx.tokenizer, "bos_token", None) or ""  # gives the first token a context
    scores = ctx.score([bos] * len(documents), documents)
    tokens = sum(n for _, n in scores)
    if tokens == 0:
        raise TunesmithError("forgetting: the canary set contains no tokens to score")
    loss = -sum(lp for lp, _ in scores) / tokens
    return math.exp(loss) if loss < 700 else math.inf  # exp overflows past ~709


def load_canary(path: Path) -> list[str]:
    """The ``text`` of each record of a JSONL file, one ``{"text": str}`` per line.

    Blank lines are skipped. Every bad line is reported at once (the first ten shown), each as
    ``file:line: what is wrong``; the file must hold at least one document.
    """
    from tunesmith_plugins.sources import jsonl_records, line_number

    texts: list[str] = []
    records, problems = jsonl_records(path, "canary file")
    for record in records:
        text = record.fields.get("text")
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{record.origin}: 'text' must be a non-empty string, got {text!r}")
        else:
            texts.append(text)
    if problems:
        problems.sort(key=line_number)
        more = [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        raise TunesmithError(
            f"canary file {path}: {len(problems)} bad line(s)", details=[*problems[:10], *more]
        )
    if not texts:
        raise TunesmithError(f"canary file {path} has no documents", details=['one {"text": ...} per line'])
    return texts


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(Forgetting)
