"""The ``exact-match`` evaluator: the fraction of generated answers equal to the reference."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

from tunesmith import EvalContext, Evaluator, Register, hookimpl, option

NORMALIZERS = {
    "none": lambda s: s,
    "strip": str.strip,
    "whitespace": lambda s: re.sub(r"\s+", " ", s).strip(),
}


class ExactMatch(Evaluator):
    """Exact match of greedy generations against reference answers, after normalisation."""

    name = "exact-match"
    default = True

    @dataclass
    class Config:
        normalize: Literal["none", "strip", "whitespace"] = option(
            "strip",
            help="none: compare as generated; strip: ignore leading/trailing whitespace; "
            "whitespace: also collapse inner whitespace runs to one space",
        )
        case_sensitive: bool = option(True, help="compare letter case too")
        max_new_tokens: int | None = option(None, help="generation length limit (default: the run's)")
        show: int = option(3, minimum=0, help="how many predictions to keep for the report")

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        cfg = self.config
        examples, predictions = ctx.answer(max_new_tokens=cfg.max_new_tokens)

        def norm(text: str) -> str:
            text = NORMALIZERS[cfg.normalize](text)
            return text if cfg.case_sensitive else text.casefold()

        # answer() returns only examples that have a reference
        hits = [norm(p) == norm(cast(str, ex.reference)) for p, ex in zip(predictions, examples, strict=True)]
        ctx.record_samples(
            [
                {"prompt": ex.prompt, "reference": ex.reference, "prediction": p, "match": hit}
                for ex, p, hit in list(zip(examples, predictions, hits, strict=True))[: max(cfg.show, 0)]
            ]
        )
        return {"exact_match": sum(hits) / len(hits)}


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(ExactMatch)
