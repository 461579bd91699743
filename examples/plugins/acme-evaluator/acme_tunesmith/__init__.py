"""ACME's tunesmith plugin: the ``acme-length-ratio`` evaluator.

Only cheap imports at module level: tunesmith imports this module on every command (``--help``,
``plugins list``), so anything heavy would belong inside ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tunesmith import EvalContext, Evaluator, Register, TunesmithError, hookimpl, option

UNITS = ("chars", "words")


def length(text: str, unit: str) -> int:
    """Length of ``text`` in characters or whitespace-separated words, surrounding whitespace ignored."""
    text = text.strip()
    return len(text.split()) if unit == "words" else len(text)


class LengthRatio(Evaluator):
    """Mean ratio of generated length to reference length (1.0: answers as long as the references).

    Above 1 the model says more than the references do, below 1 it stops early. Examples without a
    reference, or with an empty one, are skipped.
    """

    name = "acme-length-ratio"

    @dataclass
    class Config:
        unit: str = option("chars", help="Measure length in 'chars' or 'words'")
        max_new_tokens: int | None = option(None, help="Generation length limit (default: the run's)")
        tolerance: float = option(0.1, help="A ratio within 1 ± tolerance counts towards 'within_tolerance'")

    def validate(self) -> Iterator[tuple[str, str]]:
        """Checked with the rest of the run config, before anything loads: `evaluators[0].unit: ...`."""
        if self.config.unit not in UNITS:
            yield "unit", f"unknown unit '{self.config.unit}'; choose one of {', '.join(UNITS)}"
        if self.config.tolerance < 0:
            yield "tolerance", f"must be at least 0, got {self.config.tolerance}"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        cfg = self.config
        examples = [
            ex for ex in ctx.examples if ex.reference is not None and length(ex.reference, cfg.unit) > 0
        ]
        if not examples:
            raise TunesmithError("acme-length-ratio: no evaluation examples have a non-empty reference")
        predictions = ctx.generate([ex.prompt for ex in examples], max_new_tokens=cfg.max_new_tokens)
        ratios = [
            length(prediction, cfg.unit) / length(ex.reference, cfg.unit)
            for prediction, ex in zip(predictions, examples, strict=True)
        ]
        within = sum(abs(r - 1.0) <= cfg.tolerance for r in ratios)
        return {"length_ratio": sum(ratios) / len(ratios), "within_tolerance": within / len(ratios)}


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(LengthRatio)
