"""Conformance kits: prove a method, objective or evaluator behaves, whoever wrote it.

- :mod:`tunesmith.testing.methods` — ``MethodConformance`` / ``check_method``: training moves the
  loss, the base stays frozen, save → load and merge reproduce the logits, generation matches a
  teacher-forced pass.
- :mod:`tunesmith.testing.objectives` — ``ObjectiveConformance`` / ``check_objective``.
- :mod:`tunesmith.testing.evaluators` — ``EvaluatorConformance`` / ``check_evaluator``.
- :mod:`tunesmith.testing.models` — the tiny random Llama and byte-level tokenizer they run on.

Everything heavy (torch, transformers, peft, pytest) is imported when a kit runs.
"""

from __future__ import annotations

from tunesmith.testing.methods import (
    CHECKS,
    SMALL_MODEL,
    CheckFailed,
    CheckResult,
    CheckSkipped,
    Conformance,
    MethodConformance,
    Settings,
    check_method,
    format_results,
)
from tunesmith.testing.models import build_config, build_random_model, build_tokenizer

__all__ = [
    "CHECKS",
    "SMALL_MODEL",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "Conformance",
    "MethodConformance",
    "Settings",
    "build_config",
    "build_random_model",
    "build_tokenizer",
    "check_method",
    "format_results",
]
