"""Running evaluators: examples rendered as the run renders them, one context per evaluator.

What an evaluator sees (:class:`tunesmith.EvalContext`) is part of the plugin contract, in
:mod:`tunesmith.contexts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.components import Evaluator
from tunesmith.config import Resolved
from tunesmith.contexts import EvalContext, EvalExample, EvalMemo, OnBatch
from tunesmith.examples import Example
from tunesmith.prepare import PreparedData, chat_format

if TYPE_CHECKING:
    from tunesmith.eval_cache import BaseEvalCache


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
    base = chat
    for ex in examples:
        prompt_messages = ex.prompt_messages
        if prompt_messages is None:
            out.append(EvalExample(prompt="", text=ex.text, origin=ex.origin, choices=ex.choices))
            continue
        chat = base.with_tools(ex.tools)  # the prompt offers the tools training offered
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


@dataclass
class EvalResult:
    """Metrics keyed ``"<evaluator>/<metric>"`` and the samples each evaluator recorded."""

    metrics: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: What evaluators recorded with ``ctx.gate``, each with its ``evaluator``.
    gates: list[dict[str, Any]] = field(default_factory=list)


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
    base: dict[str, float] | None = None,
    memo: EvalMemo | None = None,
) -> EvalResult:
    """Run each evaluator on its own context. An evaluator's exception propagates: the caller decides.

    ``output_dir`` becomes ``ctx.output_dir``: where evaluators that write files (``human-review``) put
    them; ``None`` means they write nothing. ``base`` holds the base pass's metrics on this split
    (keyed ``"<evaluator>/<metric>"``): each evaluator gets its own as ``ctx.base_metrics``. One
    ``memo`` is shared by the evaluators, so the same generations and scores are computed once.
    """
    result = EvalResult()
    memo = memo if memo is not None else EvalMemo()
    for evaluator in evaluators:
        ctx = EvalContext(
            model,
            tokenizer,
            examples,
            split=split,
            label=label,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            on_batch=on_batch,
            output_dir=output_dir,
            stop_token_ids=stop_token_ids,
            final_answer=final_answer,
            base_metrics=_own_metrics(base, evaluator.name),
            memo=memo,
        )
        metrics = evaluator.evaluate(ctx)
        for metric, value in metrics.items():
            result.metrics[f"{evaluator.name}/{metric}"] = float(value)
        if ctx.samples:
            result.samples[evaluator.name] = ctx.samples
        result.gates += [{"evaluator": evaluator.name, "split": split, **gate} for gate in ctx.gates]
    return result


def _own_metrics(metrics: dict[str, float] | None, evaluator: str) -> dict[str, float] | None:
    """``evaluator``'s entries of ``"<evaluator>/<metric>"`` metrics, by metric name (``None`` if none)."""
    if metrics is None:
        return None
    prefix = f"{evaluator}/"
    own = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
    return own or None


def evaluation_splits(resolved: Resolved, prepared: PreparedData) -> list[str]:
    wanted = [s for s in resolved.config.evaluation.splits if s in prepared.examples and s != "train"]
    if not wanted and "validation" in prepared.examples:
        wanted = ["validation"]
    return wanted


def evaluate(
    model: Any,
    tokenizer: Any,
    resolved: Resolved,
    prepared: PreparedData,
    label: str,
    ui: Any,
    output_dir: Path | None = None,
    *,
    base: dict[str, dict[str, float]] | None = None,
    cache: BaseEvalCache | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, Any], list[str], list[dict[str, Any]]]:
    """Score ``model`` with every evaluator on every evaluation split.

    Returns (metrics per split, samples per split, errors, gates). An evaluator that raises is reported
    and skipped: a broken third-party metric must not throw away a finished training run. ``base`` is
    the base pass's metrics per split (handed to each evaluator on the tuned pass); ``cache``, on the
    base pass, supplies results computed by an earlier run and keeps the new ones. Every evaluator of
    the pass shares one memo of generations and scores.
    """
    e = resolved.config.evaluation
    chat = chat_format(resolved, tokenizer)
    stop = chat.stop_token_ids(model)
    metrics: dict[str, dict[str, float]] = {}
    samples: dict[str, Any] = {}
    errors: list[str] = []
    gates: list[dict[str, Any]] = []
    memo = EvalMemo()
    for split in evaluation_splits(resolved, prepared):
        examples = prepared.examples[split][: e.max_examples or None]
        eval_examples = to_eval_examples(examples, tokenizer, chat)
        metrics[split], samples[split] = {}, {}
        for evaluator in resolved.evaluators:
            key = cache.key(evaluator, split, eval_examples) if cache is not None else None
            stored = cache.load(key, evaluator.name, split) if cache is not None else None
            if stored is not None:
                result = EvalResult(stored["metrics"], stored.get("samples", {}), stored.get("gates", []))
            else:
                result_or_error = _run_one(
                    model,
                    tokenizer,
                    evaluator,
                    eval_examples,
                    split,
                    label,
                    ui,
                    output_dir,
                    memo,
                    stop_token_ids=stop,
                    final_answer=chat.final_answer if e.strip_reasoning else None,
                    base=(base or {}).get(split),
                    batch_size=e.batch_size,
                    max_new_tokens=e.max_new_tokens,
                )
                if isinstance(result_or_error, str):
                    errors.append(result_or_error)
                    ui.warn(result_or_error)
                    continue
                result = result_or_error
                if cache is not None:
                    cache.store(key, evaluator.name, split, dataclasses.asdict(result))
            metrics[split].update(result.metrics)
            samples[split].update(result.samples)
            gates += result.gates
    return metrics, samples, errors, gates


def _run_one(
    model: Any,
    tokenizer: Any,
    evaluator: Evaluator,
    examples: list[EvalExample],
    split: str,
    label: str,
    ui: Any,
    output_dir: Path | None,
    memo: EvalMemo,
    **settings: Any,
) -> EvalResult | str:
    """One evaluator on one split, with a progress bar; its error message if it raised."""
    with ui.progress(f"{label}: {evaluator.name} on {split}", None) as update:
        done = [0]

        def on_batch(n: int) -> None:
            done[0] += n
            update(done[0])

        try:
            return run_evaluators(
                model,
                tokenizer,
                [evaluator],
                examples,
                split=split,
                label=label,
                output_dir=output_dir,
                on_batch=on_batch,
                memo=memo,
                **settings,
            )
        except Exception as exc:  # noqa: BLE001 - see evaluate()
            return f"evaluator '{evaluator.name}' failed on {split} ({label}): {type(exc).__name__}: {exc}"


__all__ = ["EvalResult", "evaluate", "evaluation_splits", "run_evaluators", "to_eval_examples"]
