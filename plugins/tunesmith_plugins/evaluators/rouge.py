"""The ``rouge`` evaluator: ROUGE-1/2/L F1 (rouge-score) of greedy generations against references."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tunesmith import EvalContext, Evaluator, Register, TunesmithError, hookimpl, option

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class Rouge(Evaluator):
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of greedy generations against reference answers (rouge-score).

    Each is the mean over examples of the per-example F1, on a 0-1 scale. rouge-score's tokenizer
    lowercases and keeps only ASCII letters and digits, so it suits English text. Examples without a
    reference are skipped.
    """

    name = "rouge"

    @dataclass
    class Config:
        use_stemmer: bool = option(False, help="Porter-stem words before matching (running = run)")
        max_new_tokens: int | None = option(None, help="generation length limit (default: the run's)")
        show: int = option(3, minimum=0, help="how many predictions to keep for the report")

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        cfg = self.config
        try:
            from rouge_score import rouge_scorer
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise TunesmithError("rouge needs rouge-score: pip install rouge-score") from exc
        examples, predictions = ctx.answer(max_new_tokens=cfg.max_new_tokens)
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=cfg.use_stemmer)
        scores = [scorer.score(ex.reference, p) for ex, p in zip(examples, predictions, strict=True)]
        means = {t: sum(s[t].fmeasure for s in scores) / len(scores) for t in ROUGE_TYPES}
        ctx.record_samples(
            [
                {
                    "prompt": ex.prompt,
                    "reference": ex.reference,
                    "prediction": p,
                    "rougeL": s["rougeL"].fmeasure,
                }
                for ex, p, s in list(zip(examples, predictions, scores, strict=True))[: max(cfg.show, 0)]
            ]
        )
        return means


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(Rouge)
