"""Evaluation: what an evaluator plugin sees (:class:`EvalContext`) and how evaluators are run.

An evaluator only talks to the context: ``ctx.examples``, ``ctx.generate``, ``ctx.score``,
``ctx.record_samples``, ``ctx.config`` (and ``ctx.model`` / ``ctx.tokenizer`` when it needs more). That
keeps vendors' evaluators independent of how the engine loads models, and lets tests hand evaluators a
stub context.

torch and transformers are imported inside functions: this module is imported by the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.components import Evaluator, Example
from tunesmith.errors import TunesmithError

OnBatch = Callable[[int], None]


@dataclass
class EvalExample:
    """One evaluation example, already rendered for generation.

    ``prompt`` is the chat-template rendering of the prompt messages with the generation prompt
    appended; ``completion`` is what the template renders after it for the reference answer (the
    reference plus end-of-turn markers: what training puts loss on). Plain-text examples have an empty
    prompt, ``text`` set and no reference. ``choices`` are the answer options of a multiple-choice
    example (copied from :attr:`Example.choices`; the reference is one of them), else ``None``.
    ``chosen`` and ``rejected`` (preference examples only) are the two answers rendered like
    ``completion``: the text the template appends after ``prompt``, end-of-turn included.
    """

    prompt: str
    reference: str | None = None
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    origin: str = ""
    completion: str | None = None
    choices: list[str] | None = None
    chosen: str | None = None
    rejected: str | None = None


def to_eval_examples(
    examples: Sequence[Example], tokenizer: Any, chat: Any = None, *, final_answer: bool = True
) -> list[EvalExample]:
    """Render formatted examples as generation prompts (chat) or keep their text (plain).

    ``chat`` is the run's :class:`tunesmith.chat.ChatFormat` (the tokenizer's template under the run's
    template policy; a default one if omitted). Completions are what training puts loss on. With
    ``final_answer`` a reference that carries reasoning is reduced to its final answer, which is what
    reference-based metrics compare.
    """
    from tunesmith.chat import ChatFormat

    chat = chat or ChatFormat(tokenizer)
    out: list[EvalExample] = []
    for ex in examples:
        prompt_messages = ex.prompt_messages
        if prompt_messages is None:
            out.append(EvalExample(prompt="", text=ex.text, origin=ex.origin, choices=ex.choices))
            continue
        if ex.messages is not None:
            prompt, completion = chat.target(ex.messages)
        else:  # preference / unpaired / prompt-only: the answer becomes an assistant turn
            prompt = chat.prompt(prompt_messages)
            completion = _answer(chat, prompt_messages, ex.reference)
        reference = ex.reference
        if reference is not None and final_answer:
            reference = chat.final_answer(reference)
        out.append(
            EvalExample(
                prompt=prompt,
                reference=reference,
                messages=prompt_messages,
                origin=ex.origin,
                completion=completion,
                choices=ex.choices,
                chosen=_answer(chat, prompt_messages, ex.chosen),
                rejected=_answer(chat, prompt_messages, ex.rejected),
            )
        )
    return out


def _answer(chat: Any, prompt_messages: list[dict[str, Any]], answer: str | None) -> str | None:
    """``answer`` as the template renders it as the next assistant turn (end-of-turn included)."""
    if answer is None:
        return None
    return chat.target([*prompt_messages, {"role": "assistant", "content": answer}])[1]


class EvalContext:
    """What an evaluator receives: the model, the tokenizer, the examples and batched helpers.

    Attributes: ``model``, ``tokenizer``, ``examples`` (:class:`EvalExample`), ``config`` (the
    evaluator's own ``Config`` instance), ``split`` (e.g. ``"validation"``), ``label`` (``"base"`` or
    ``"tuned"``), ``device``, ``batch_size``, ``max_new_tokens`` (the default for :meth:`generate`),
    ``samples`` (what :meth:`record_samples` stored), ``on_batch`` (called with the number of items
    finished after each batch, for progress bars) and ``output_dir`` (a directory of the run where an
    evaluator may write files, e.g. a review sheet; ``None`` when there is none: then write nothing).
    ``stop_token_ids`` are the ids that end generation (EOS, the model's declared EOS ids and the chat
    template's end-of-turn marker); ``final_answer`` maps a generation to the answer that
    reference-based metrics compare (reasoning removed), or is ``None`` to compare it whole.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        examples: list[EvalExample],
        config: Any = None,
        *,
        split: str = "validation",
        label: str = "tuned",
        batch_size: int = 16,
        max_new_tokens: int = 64,
        device: Any = None,
        on_batch: OnBatch | None = None,
        output_dir: Path | None = None,
        stop_token_ids: list[int] | None = None,
        final_answer: Callable[[str], str] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.examples = examples
        self.config = config
        self.split = split
        self.label = label
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = max_new_tokens
        self.device = device if device is not None else _model_device(model)
        self.on_batch = on_batch
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.samples: list[dict[str, Any]] = []
        if not stop_token_ids:
            from tunesmith.chat import declared_stop_ids

            stop_token_ids = declared_stop_ids(model, tokenizer)
        self.stop_token_ids = stop_token_ids
        self.final_answer = final_answer

    # ------------------------------------------------------------------------------------ helpers

    def record_samples(self, samples: list[dict[str, Any]]) -> None:
        """Keep example predictions (e.g. ``{"prompt", "reference", "prediction"}``) for the report."""
        self.samples.extend(dict(s) for s in samples)

    def answer(self, *, max_new_tokens: int | None = None) -> tuple[list[EvalExample], list[str]]:
        """Greedy answers to the examples that have a reference: ``(examples, predictions)``.

        The common first step of reference-based metrics (exact match, BLEU, ROUGE, accuracy); raises a
        user error when no example has a reference to compare with. Predictions are final answers: a
        reasoning model's ``<think>…</think>`` block is removed (``evaluation.strip_reasoning``).
        """
        examples = [ex for ex in self.examples if ex.reference is not None]
        if not examples:
            raise TunesmithError("no evaluation examples have a reference answer")
        predictions = self.generate([ex.prompt for ex in examples], max_new_tokens=max_new_tokens)
        if self.final_answer is not None:
            predictions = [self.final_answer(p) for p in predictions]
        return examples, predictions

    def generate(self, prompts: list[str], *, max_new_tokens: int | None = None, **kwargs: Any) -> list[str]:
        """Complete each prompt; return only the new text, special tokens removed.

        Greedy unless ``kwargs`` say otherwise (they go to ``model.generate``); stops at any of
        ``stop_token_ids``. Prompts are used as given (``add_special_tokens=False``): a chat-rendered prompt already
        carries its BOS. Batches are left-padded so every row's new tokens start at the same column.
        """
        import torch

        self._need_causal_lm("generate")
        tok = self.tokenizer
        pad_id = _pad_id(tok)
        options: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens if max_new_tokens is not None else self.max_new_tokens,
            do_sample=False,
            use_cache=True,
            eos_token_id=self.stop_token_ids,
            pad_token_id=pad_id,
        )
        options.update(kwargs)
        results: list[str] = [""] * len(prompts)
        saved_side = tok.padding_side
        tok.padding_side = "left"
        try:
            with _eval_mode(self.model), torch.inference_mode():
                for idx in _batches(prompts, self.batch_size, key=len):
                    batch = [prompts[i] for i in idx]
                    enc = tok(batch, add_special_tokens=False, padding=True, return_tensors="pt")
                    enc = {
                        k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")
                    }
                    out = self.model.generate(**enc, **options)
                    new_tokens = out[:, enc["input_ids"].shape[1] :]
                    texts = tok.batch_decode(new_tokens, skip_special_tokens=True)
                    for i, text in zip(idx, texts, strict=True):
                        results[i] = text
                    self._progress(len(idx))
        finally:
            tok.padding_side = saved_side
        return results

    def score(self, prompts: list[str], completions: list[str]) -> list[tuple[float, int]]:
        """For each pair, the summed log-probability of the completion's tokens given the prompt, and
        how many tokens that is.

        The completion is tokenized as part of ``prompt + completion`` (how the model saw it in
        training), not on its own. Its tokens are those after the longest common prefix of the tokens of
        ``prompt`` alone and of ``prompt + completion``: a token that merges across the boundary counts as
        completion. A token with nothing before it (an empty prompt) cannot be predicted and is not
        counted.
        """
        import torch

        if len(prompts) != len(completions):
            raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
        self._need_causal_lm("score")
        tok = self.tokenizer
        rows = [_split_tokens(tok, p, c) for p, c in zip(prompts, completions, strict=True)]
        results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
        pad_id = _pad_id(tok)
        with _eval_mode(self.model), torch.inference_mode():
            for idx in _batches(rows, self.batch_size, key=lambda r: len(r[0])):
                # Right padding: real tokens keep positions 0..n-1, so no position ids are needed.
                width = max(len(rows[i][0]) for i in idx)
                ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    tokens = rows[i][0]
                    ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                    mask[row, : len(tokens)] = 1
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
                ).logits
                for row, i in enumerate(idx):
                    tokens, start = rows[i]
                    start = max(start, 1)
                    if start >= len(tokens):
                        results[i] = (0.0, 0)
                        continue
                    # Logits at position t predict token t + 1.
                    logprobs = torch.log_softmax(logits[row, start - 1 : len(tokens) - 1].float(), dim=-1)
                    target = torch.tensor(tokens[start:], device=logprobs.device).unsqueeze(-1)
                    total = logprobs.gather(-1, target).sum().item()
                    results[i] = (float(total), len(tokens) - start)
                self._progress(len(idx))
        return results

    def _need_causal_lm(self, what: str) -> None:
        from tunesmith.models import is_sequence_classifier

        if is_sequence_classifier(self.model):
            raise TunesmithError(
                f"ctx.{what} needs a causal LM, but the model is a sequence classifier (a reward model): "
                "evaluate it with preference-accuracy"
            )

    def _progress(self, done: int) -> None:
        if self.on_batch is not None:
            self.on_batch(done)


@dataclass
class EvalResult:
    """Metrics keyed ``"<evaluator>/<metric>"`` and the samples each evaluator recorded."""

    metrics: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def run_evaluators(
    model: Any,
    tokenizer: Any,
    evaluators: list[Evaluator],
    examples: list[EvalExample],
    *,
    split: str,
    label: str,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    on_batch: OnBatch | None = None,
    output_dir: Path | None = None,
    stop_token_ids: list[int] | None = None,
    final_answer: Callable[[str], str] | None = None,
) -> EvalResult:
    """Run each evaluator on its own context. An evaluator's exception propagates: the caller decides.

    ``output_dir`` becomes ``ctx.output_dir``: where evaluators that write files (``human-review``) put
    them; ``None`` means they write nothing.
    """
    result = EvalResult()
    for evaluator in evaluators:
        ctx = EvalContext(
            model,
            tokenizer,
            examples,
            evaluator.config,
            split=split,
            label=label,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            on_batch=on_batch,
            output_dir=output_dir,
            stop_token_ids=stop_token_ids,
            final_answer=final_answer,
        )
        metrics = evaluator.evaluate(ctx)
        for metric, value in metrics.items():
            result.metrics[f"{evaluator.name}/{metric}"] = float(value)
        if ctx.samples:
            result.samples[evaluator.name] = ctx.samples
    return result


# ---------------------------------------------------------------------------------------- internals


def _model_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is not None:
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return "cpu"


def _pad_id(tokenizer: Any) -> int:
    """The pad token id, falling back to EOS (padded positions are masked, so any id will do)."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id


def _batches(items: Sequence[Any], size: int, key: Callable[[Any], int]) -> list[list[int]]:
    """Indices in batches of similar length (longest first), so little compute goes on padding."""
    order = sorted(range(len(items)), key=lambda i: -key(items[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def _split_tokens(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], int]:
    """Tokens of ``prompt + completion`` and the index where the completion's tokens start."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    start = 0
    for a, b in zip(prompt_ids, full_ids, strict=False):
        if a != b:
            break
        start += 1
    return list(full_ids), start


class _eval_mode:
    """``model.eval()`` for the duration, then the previous training mode back."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = bool(getattr(self.model, "training", False))
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


__all__ = ["EvalContext", "EvalExample", "EvalResult", "run_evaluators", "to_eval_examples"]
