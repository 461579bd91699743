"""The ``bleu`` evaluator: corpus BLEU (sacrebleu) of greedy generations against reference answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from tunesmith import EvalContext, Evaluator, Register, TunesmithError, hookimpl, option


class Bleu(Evaluator):
    """Corpus BLEU of greedy generations against reference answers, computed by sacrebleu.

    The score is on sacrebleu's 0-100 scale (not 0-1), with sacrebleu's defaults otherwise (4-grams,
    exponential smoothing, one reference per example). Examples without a reference are skipped.
    """

    name = "bleu"

    @dataclass
    class Config:
        tokenize: str = option(
            "13a", help="sacrebleu tokenizer: 13a, intl, char, none, zh, ja-mecab, ko-mecab, flores200, ..."
        )
        lowercase: bool = option(False, help="lowercase predictions and references before scoring")
        max_new_tokens: int | None = option(None, help="generation length limit (default: the run's)")
        show: int = option(3, minimum=0, help="how many predictions to keep for the report")

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        cfg = self.config
        try:
            from sacrebleu.metrics import BLEU
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise TunesmithError("bleu needs sacrebleu: pip install sacrebleu") from exc
        if cfg.tokenize not in BLEU.TOKENIZERS:
            raise TunesmithError(
                f"bleu: unknown tokenize '{cfg.tokenize}'; choose one of {', '.join(BLEU.TOKENIZERS)}"
            )
        examples, predictions = ctx.answer(max_new_tokens=cfg.max_new_tokens)
        references = [cast(str, ex.reference) for ex in examples]  # answer() keeps only those with one
        bleu = BLEU(tokenize=cfg.tokenize, lowercase=cfg.lowercase)
        score = bleu.corpus_score(predictions, [references])
        ctx.record_samples(
            [
                {"prompt": ex.prompt, "reference": ex.reference, "prediction": p}
                for ex, p in list(zip(examples, predictions, strict=True))[: max(cfg.show, 0)]
            ]
        )
        return {"bleu": score.score}


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(Bleu)
