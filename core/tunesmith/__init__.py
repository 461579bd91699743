"""tunesmith: a plugin-based engine for fine-tuning large language models.

This package's top level is the plugin contract: everything a plugin (built-in or third party) may
import, on one screen. Importing it is cheap (no torch): the CLI and ``plugins list`` rely on that.
``tunesmith.hf`` (Hugging Face model helpers) and ``tunesmith.testing`` (conformance kits) are public
too; every other module is the engine's own and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunesmith.components import (
    Component,
    DataSource,
    Evaluator,
    Formatter,
    Judge,
    Method,
    ModelProvider,
    Objective,
    Reward,
)
from tunesmith.contexts import Device, EvalContext, EvalExample, TrainContext
from tunesmith.errors import TunesmithError
from tunesmith.examples import Example, InvalidRecord, Record, RecordProblem
from tunesmith.hookspecs import Register, hookimpl
from tunesmith.kinds import KINDS, Kind
from tunesmith.options import component, option
from tunesmith.peft_method import PeftMethod

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tunesmith.runs import FinishedRun, load_run

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``load_run`` and ``FinishedRun`` are engine services, imported on first use (they need the engine)."""
    if name in ("load_run", "FinishedRun"):
        from tunesmith import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")


__all__ = [
    "KINDS",
    "Component",
    "DataSource",
    "Device",
    "EvalContext",
    "EvalExample",
    "Evaluator",
    "Example",
    "FinishedRun",
    "Formatter",
    "InvalidRecord",
    "Judge",
    "Kind",
    "Method",
    "ModelProvider",
    "Objective",
    "PeftMethod",
    "Record",
    "RecordProblem",
    "Register",
    "Reward",
    "TrainContext",
    "TunesmithError",
    "__version__",
    "component",
    "hookimpl",
    "load_run",
    "option",
]
