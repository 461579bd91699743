"""tunesmith: a plugin-based engine for fine-tuning large language models.

Importing this package is cheap (no torch): the CLI and ``plugins list`` rely on it.
"""

from tunesmith.components import (
    Component,
    DataSource,
    Evaluator,
    Example,
    Formatter,
    InvalidRecord,
    Method,
    Objective,
    Record,
    RecordProblem,
    Reward,
    option,
)
from tunesmith.errors import TunesmithError
from tunesmith.evaluation import EvalContext, EvalExample, EvalResult
from tunesmith.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "Component",
    "DataSource",
    "EvalContext",
    "EvalExample",
    "EvalResult",
    "Evaluator",
    "Example",
    "Formatter",
    "InvalidRecord",
    "Method",
    "Objective",
    "Record",
    "RecordProblem",
    "Reward",
    "TunesmithError",
    "hookimpl",
    "option",
    "__version__",
]
