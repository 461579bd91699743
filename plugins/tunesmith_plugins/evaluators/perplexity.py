"""The ``perplexity`` evaluator: how surprised the model is by the reference answers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tunesmith import EvalContext, Evaluator, Register, TunesmithError, hookimpl


class Perplexity(Evaluator):
    """Perplexity (exp of mean per-token NLL) of reference answers given prompts, or of plain text.

    Chat examples are scored on the answer as the chat template renders it (with its end-of-turn
    marker), the same tokens training puts loss on. Every token counts equally across examples.
    """

    name = "perplexity"
    default = True

    @dataclass
    class Config:
        pass

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        pairs = []
        for ex in ctx.examples:
            if ex.reference is not None:
                pairs.append((ex.prompt, ex.completion if ex.completion is not None else ex.reference))
            elif ex.text:
                # A plain text scored from its first byte: the BOS gives the first token a context.
                pairs.append((getattr(ctx.tokenizer, "bos_token", None) or "", ex.text))
        if not pairs:
            raise TunesmithError("perplexity: no examples with a reference answer or text to score")
        scores = ctx.score([p for p, _ in pairs], [c for _, c in pairs])
        total_logprob = sum(lp for lp, _ in scores)
        total_tokens = sum(n for _, n in scores)
        if total_tokens == 0:
            raise TunesmithError("perplexity: the evaluation examples contain no tokens to score")
        loss = -total_logprob / total_tokens
        return {"perplexity": math.exp(loss), "loss": loss}


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(Perplexity)
