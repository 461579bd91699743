"""tunesmith: a plugin-based engine for fine-tuning large language models.

This package's top level is the plugin contract: everything a plugin (built-in or third party) may
import, on one screen. Importing it is cheap (no torch): the CLI and ``plugins list`` rely on that.
``tunesmith.hf`` (Hugging Face model helpers) and ``tunesmith.testing`` (conformance kits) are public
too; every other module is the engine's own and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only; at run time each name is imported on first use
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
        Tracker,
    )
    from tunesmith.contexts import Device, EvalContext, EvalExample, TrainContext
    from tunesmith.errors import TunesmithError
    from tunesmith.examples import Example, InvalidRecord, Record, RecordProblem
    from tunesmith.hookspecs import Register, hookimpl
    from tunesmith.kinds import KINDS, Kind
    from tunesmith.options import component, option
    from tunesmith.peft_method import PeftMethod
    from tunesmith.runs import FinishedRun, load_run, merged_model_dir

__version__ = "0.1.0"


#: Where each public name lives. Importing ``tunesmith`` (and so ``tunesmith.cli``) stays at the cost of
#: this file: ``tunesmith --help`` must not pay for the component classes it does not use.
_HOMES = {
    "tunesmith.components": (
        "Component DataSource Evaluator Formatter Judge Method ModelProvider Objective Reward Tracker"
    ),
    "tunesmith.contexts": "Device EvalContext EvalExample TrainContext",
    "tunesmith.errors": "TunesmithError",
    "tunesmith.examples": "Example InvalidRecord Record RecordProblem",
    "tunesmith.hookspecs": "Register hookimpl",
    "tunesmith.kinds": "KINDS Kind",
    "tunesmith.options": "component option",
    "tunesmith.peft_method": "PeftMethod",
    "tunesmith.runs": "FinishedRun load_run merged_model_dir",  # engine services, imported on first use
}
_HOME = {name: module for module, names in _HOMES.items() for name in names.split()}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, then keep it here."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "Tracker",
    "TunesmithError",
    "__version__",
    "component",
    "hookimpl",
    "load_run",
    "merged_model_dir",
    "option",
]
