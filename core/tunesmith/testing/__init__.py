"""Conformance kits: prove a method, objective or evaluator behaves, whoever wrote it.

- :mod:`tunesmith.testing.methods` — ``MethodConformance`` / ``check_method``: training moves the
  loss, the base stays frozen, save → load and merge reproduce the logits, generation matches a
  teacher-forced pass.
- :mod:`tunesmith.testing.objectives` — ``ObjectiveConformance`` / ``check_objective``: training
  changes the model in place and leaves frozen weights alone, reports through the run's callbacks,
  checkpoints into the run directory, and is deterministic.
- :mod:`tunesmith.testing.evaluators` — ``EvaluatorConformance`` / ``check_evaluator``: metrics are
  finite numbers, deterministic and independent of the batch size; files go only to ``output_dir``;
  examples without references give metrics or a ``TunesmithError``.
- :mod:`tunesmith.testing.models` — the tiny random Llama and byte-level tokenizer they run on.

Everything heavy (torch, transformers, peft, pytest) is imported when a kit runs.
"""

from __future__ import annotations

from tunesmith.testing.evaluators import (
    EVALUATOR_CHECKS,
    EvaluatorChecker,
    EvaluatorConformance,
    EvaluatorSettings,
    check_evaluator,
)
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
from tunesmith.testing.objectives import (
    OBJECTIVE_CHECKS,
    ObjectiveChecker,
    ObjectiveConformance,
    ObjectiveSettings,
    check_objective,
    task_examples,
)

__all__ = [
    "CHECKS",
    "EVALUATOR_CHECKS",
    "OBJECTIVE_CHECKS",
    "SMALL_MODEL",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "Conformance",
    "EvaluatorChecker",
    "EvaluatorConformance",
    "EvaluatorSettings",
    "MethodConformance",
    "ObjectiveChecker",
    "ObjectiveConformance",
    "ObjectiveSettings",
    "Settings",
    "build_config",
    "build_random_model",
    "build_tokenizer",
    "check_evaluator",
    "check_method",
    "check_objective",
    "format_results",
    "task_examples",
]
