"""The ``preference-accuracy`` evaluator: how often a model prefers the chosen answer to the rejected one.

Two ways to ask a model which answer it prefers:

- a reward model (a sequence classifier, e.g. trained by the ``reward`` objective) scores the whole
  conversation ``prompt + answer``; it prefers the answer with the higher reward;
- a causal LM prefers the answer it finds more likely: the summed log-probability of the answer's tokens
  given the prompt (optionally divided by the number of tokens, ``length_normalize``).

Answers are scored as the chat template renders them after the prompt (end-of-turn marker included):
the text a reward model is trained on and the tokens DPO-style objectives put loss on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunesmith import EvalContext, Evaluator, Register, TunesmithError, hookimpl, option


class PreferenceAccuracy(Evaluator):
    """Pairwise accuracy on preference examples: the fraction where the chosen answer beats the rejected.

    With a reward model (sequence classifier) the answers are compared by reward and `margin` is the
    mean reward difference chosen − rejected. With a causal LM they are compared by log p(answer | prompt)
    (per token with `length_normalize`) and `margin` is the mean difference of the summed log-probs. Ties
    count as wrong. Needs examples with chosen and rejected answers (e.g. the `preference` formatter).
    """

    name = "preference-accuracy"

    @dataclass
    class Config:
        length_normalize: bool = option(
            False, help="causal LMs: compare mean log-prob per token instead of the sum (ignores length)"
        )
        show: int = option(3, minimum=0, help="how many scored pairs to keep for the report")

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        from tunesmith.hf import is_sequence_classifier

        cfg = self.config
        triples = [
            (ex, ex.chosen, ex.rejected)
            for ex in ctx.examples
            if ex.chosen is not None and ex.rejected is not None
        ]
        if not triples:
            raise TunesmithError(
                "preference-accuracy: no evaluation example has a chosen and a rejected answer "
                "(use a formatter that produces preference examples, e.g. preference)"
            )
        pairs = [ex for ex, _, _ in triples]
        prompts = [ex.prompt for ex in pairs]
        chosen = [c for _, c, _ in triples]
        rejected = [r for _, _, r in triples]
        if is_sequence_classifier(ctx.model):
            scores = reward_scores(
                ctx.model,
                ctx.tokenizer,
                [p + c for p, c in zip(prompts, chosen, strict=True)]
                + [p + r for p, r in zip(prompts, rejected, strict=True)],
                batch_size=ctx.batch_size,
                device=ctx.device,
                on_batch=ctx.on_batch,
            )
            good, bad = scores[: len(pairs)], scores[len(pairs) :]
            compared_good, compared_bad = good, bad
        else:
            scored = ctx.score(prompts + prompts, chosen + rejected)
            good = [lp for lp, _ in scored[: len(pairs)]]
            bad = [lp for lp, _ in scored[len(pairs) :]]
            if cfg.length_normalize:
                compared_good = [lp / max(n, 1) for lp, n in scored[: len(pairs)]]
                compared_bad = [lp / max(n, 1) for lp, n in scored[len(pairs) :]]
            else:
                compared_good, compared_bad = good, bad
        wins = [g > b for g, b in zip(compared_good, compared_bad, strict=True)]
        ctx.record_samples(
            [
                {
                    "prompt": ex.prompt,
                    "chosen": ex.chosen,
                    "rejected": ex.rejected,
                    "score_chosen": g,
                    "score_rejected": b,
                    "correct": w,
                }
                for ex, g, b, w in list(zip(pairs, good, bad, wins, strict=True))[: max(cfg.show, 0)]
            ]
        )
        return {
            "accuracy": sum(wins) / len(wins),
            "margin": sum(g - b for g, b in zip(good, bad, strict=True)) / len(pairs),
        }


def reward_scores(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    batch_size: int = 16,
    device: Any = None,
    on_batch: Any = None,
) -> list[float]:
    """The scalar output of a sequence classifier (a reward model) for each already-rendered text.

    Texts are tokenized as given (``add_special_tokens=False``: a chat rendering carries its own BOS) and
    right-padded; the model pools the last non-pad token, so ``config.pad_token_id`` is set from the
    tokenizer when missing.
    """
    import torch

    from tunesmith.hf import ensure_pad_token_id

    ensure_pad_token_id(model, tokenizer)
    if device is None:
        device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    out: list[float] = [0.0] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), max(1, batch_size)):
                idx = order[start : start + max(1, batch_size)]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[row, : len(encoded[i])] = 1
                logits = model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
                ).logits
                for row, i in enumerate(idx):
                    out[i] = float(logits[row, 0].float().item())
                if on_batch is not None:
                    on_batch(len(idx))
    finally:
        model.train(was_training)
    return out


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(PreferenceAccuracy)
