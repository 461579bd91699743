"""Tests for the acme-length-ratio evaluator with a stub context: no model, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from acme_tunesmith import LengthRatio, register_evaluators

from tunesmith import EvalExample, TunesmithError


@dataclass
class StubContext:
    """The part of tunesmith's EvalContext the evaluator uses; ``generate`` answers from a table."""

    examples: list[EvalExample]
    answers: dict[str, str]
    calls: list[dict] = field(default_factory=list)

    def generate(self, prompts: list[str], *, max_new_tokens: int | None = None, **kwargs) -> list[str]:
        self.calls.append({"prompts": list(prompts), "max_new_tokens": max_new_tokens})
        return [self.answers[p] for p in prompts]


def context(answers: dict[str, tuple[str | None, str]]) -> StubContext:
    examples = [EvalExample(prompt=p, reference=ref) for p, (ref, _) in answers.items()]
    return StubContext(examples, {p: out for p, (_, out) in answers.items()})


def evaluator(**options) -> LengthRatio:
    return LengthRatio(LengthRatio.Config(**options))


def test_mean_ratio_in_characters():
    ctx = context({"a": ("abcd", "ab"), "b": ("xy", "xyxy")})  # ratios 0.5 and 2.0
    metrics = evaluator().evaluate(ctx)
    assert metrics["length_ratio"] == pytest.approx(1.25)
    assert metrics["within_tolerance"] == 0.0


def test_words_and_tolerance():
    ctx = context({"a": ("one two three", "uno dos tres"), "b": ("one two", "one")})
    metrics = evaluator(unit="words", tolerance=0.2).evaluate(ctx)
    assert metrics["length_ratio"] == pytest.approx(0.75)
    assert metrics["within_tolerance"] == pytest.approx(0.5)


def test_examples_without_a_reference_are_skipped_and_generation_is_batched_once():
    ctx = context({"a": ("abc", "abc"), "b": (None, "never asked"), "c": ("", "never asked")})
    assert evaluator(max_new_tokens=7).evaluate(ctx)["length_ratio"] == 1.0
    assert ctx.calls == [{"prompts": ["a"], "max_new_tokens": 7}]


def test_bad_unit_and_no_references_are_user_errors():
    assert list(evaluator(unit="tokens", tolerance=-1).validate()) == [
        ("unit", "unknown unit 'tokens'; choose one of chars, words"),
        ("tolerance", "must be at least 0, got -1"),
    ]
    assert list(evaluator().validate()) == []
    with pytest.raises(TunesmithError, match="no evaluation examples"):
        evaluator().evaluate(context({"a": (None, "abc")}))


def test_the_hook_registers_the_evaluator():
    registered = []
    register_evaluators(registered.append)
    assert registered == [LengthRatio]
    assert LengthRatio.summary().startswith("Mean ratio of generated length")
