"""The ``accuracy`` evaluator: task accuracy from generated answers or from multiple-choice likelihoods."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from tunesmith import EvalContext, EvalExample, Evaluator, Register, TunesmithError, hookimpl, option

ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD-style answer normalisation: lowercase, drop punctuation and the articles a/an/the, and
    collapse whitespace. Punctuation is any Unicode punctuation character (SQuAD: ASCII only)."""
    text = text.lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


class Accuracy(Evaluator):
    """Task accuracy: the fraction of examples answered correctly.

    ``mode: generate`` compares the greedy generation with the reference answer, either normalised
    the way SQuAD does it (lowercase; punctuation, a/an/the and extra whitespace removed) or exactly
    (only surrounding whitespace ignored). ``mode: multiple-choice`` generates nothing: each example
    carries its answer options (``choices``, set by the formatter) and the reference is one of them;
    the model picks the choice with the highest log-likelihood after the prompt (``ctx.score``),
    optionally divided by its number of tokens, and is right when that is the reference. Ties go to
    the earlier choice. Examples without a reference (or, for multiple choice, without choices) are
    skipped.
    """

    name = "accuracy"

    @dataclass
    class Config:
        mode: Literal["generate", "multiple-choice"] = option(
            "generate",
            help="generate: compare generated answers with the reference; multiple-choice: pick the "
            "likeliest of each example's choices",
        )
        match: Literal["normalized", "exact"] = option(
            "normalized",
            help="generate mode: normalized (lowercase, no punctuation, articles or extra whitespace, "
            "like SQuAD) or exact (surrounding whitespace ignored)",
        )
        length_normalize: bool = option(
            False, help="multiple-choice mode: rank choices by mean log-probability per token, not total"
        )
        max_new_tokens: int | None = option(
            None, help="generate mode: generation length limit (default: the run's)"
        )
        show: int = option(3, minimum=0, help="how many predictions to keep for the report")

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        cfg = self.config
        if cfg.mode == "generate":
            return self._generate(ctx, cfg)
        if cfg.mode == "multiple-choice":
            return self._multiple_choice(ctx, cfg)
        raise TunesmithError(f"accuracy: unknown mode '{cfg.mode}'; choose generate or multiple-choice")

    def _generate(self, ctx: EvalContext, cfg: Any) -> Mapping[str, float]:
        if cfg.match not in ("normalized", "exact"):
            raise TunesmithError(f"accuracy: unknown match '{cfg.match}'; choose normalized or exact")
        examples, predictions = ctx.answer(max_new_tokens=cfg.max_new_tokens)
        norm = normalize_answer if cfg.match == "normalized" else str.strip
        # answer() returns only examples that have a reference
        hits = [norm(p) == norm(cast(str, ex.reference)) for p, ex in zip(predictions, examples, strict=True)]
        self._record(ctx, cfg, examples, predictions, hits)
        return {"accuracy": sum(hits) / len(hits)}

    def _multiple_choice(self, ctx: EvalContext, cfg: Any) -> Mapping[str, float]:
        # (example, its choices) for the examples that have choices and a reference answer
        multi = [(ex, ex.choices) for ex in ctx.examples if ex.choices and ex.reference is not None]
        if not multi:
            raise TunesmithError(
                "accuracy: no evaluation examples have choices and a reference answer",
                details=["mode multiple-choice needs a formatter that sets Example.choices"],
            )
        for ex, choices in multi:
            if ex.reference not in choices:
                raise TunesmithError(
                    f"accuracy: {ex.origin or 'an example'}: the reference answer {ex.reference!r} is not "
                    f"one of its choices {choices!r}"
                )
        prompts = [ex.prompt for ex, choices in multi for _ in choices]
        completions = [choice for _, choices in multi for choice in choices]
        scores = iter(ctx.score(prompts, completions))
        predictions: list[str] = []
        hits: list[bool] = []
        for ex, choices in multi:
            ranked = [_rank(next(scores), cfg.length_normalize) for _ in choices]
            best = max(range(len(ranked)), key=lambda i: (ranked[i], -i))  # ties: the earlier choice
            predictions.append(choices[best])
            hits.append(choices[best] == ex.reference)
        self._record(ctx, cfg, [ex for ex, _ in multi], predictions, hits)
        return {"accuracy": sum(hits) / len(hits)}

    @staticmethod
    def _record(
        ctx: EvalContext, cfg: Any, examples: list[EvalExample], predictions: list[str], hits: list[bool]
    ) -> None:
        ctx.record_samples(
            [
                {"prompt": ex.prompt, "reference": ex.reference, "prediction": p, "match": hit}
                for ex, p, hit in list(zip(examples, predictions, hits, strict=True))[: max(cfg.show, 0)]
            ]
        )


def _rank(score: tuple[float, int], length_normalize: bool) -> float:
    """A choice's ranking value: its log-probability, per token if asked; -inf for an empty choice."""
    logprob, tokens = score
    if tokens == 0:
        return -math.inf
    return logprob / tokens if length_normalize else logprob


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(Accuracy)
