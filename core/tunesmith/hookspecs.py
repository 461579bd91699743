"""The hooks a tunesmith plugin may implement.

A plugin is a module (or object) named by an entry point in the ``tunesmith`` group::

    [project.entry-points.tunesmith]
    acme = "acme_tunesmith"

and implements any of the hooks below with ``@tunesmith.hookimpl``. Hooks are called once per CLI
invocation, in a deterministic order (built-in plugins first, then by entry-point name). A plugin whose
hook raises is disabled and reported by ``tunesmith plugins list``; the other plugins carry on.

Keep heavy imports (torch, transformers, peft, trl, datasets, bitsandbytes) inside functions and methods:
registration hooks run on every command, including ``--help`` and ``plugins list``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

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

hookspec = pluggy.HookspecMarker("tunesmith")
hookimpl = pluggy.HookimplMarker("tunesmith")

C = TypeVar("C", bound=Component)
#: The callback a registration hook receives: call it once per component class.
Register = Callable[[type[C]], None]


@hookspec
def register_data_sources(register: Register[DataSource]) -> None:
    """Register :class:`tunesmith.DataSource` subclasses.

    :param register: call ``register(cls)`` once per class.

    May: call ``register`` any number of times (or not at all).
    Must not: read data or import heavy libraries here; do that in ``DataSource.read``.
    """


@hookspec
def register_formatters(register: Register[Formatter]) -> None:
    """Register :class:`tunesmith.Formatter` subclasses.

    :param register: call ``register(cls)`` once per class.

    A formatter turns raw records into :class:`tunesmith.Example` objects and raises
    :class:`tunesmith.InvalidRecord` (with the field name) for records it cannot use.
    """


@hookspec
def register_methods(register: Register[Method]) -> None:
    """Register :class:`tunesmith.Method` subclasses (tuning methods: full, LoRA, ...).

    :param register: call ``register(cls)`` once per class.

    A method's ``apply`` receives the loaded base model and returns the model to train. Prove a method
    with the conformance kit: ``tunesmith.testing.MethodConformance``.
    """


@hookspec
def register_objectives(register: Register[Objective]) -> None:
    """Register :class:`tunesmith.Objective` subclasses (training objectives: sft, dpo, ...).

    :param register: call ``register(cls)`` once per class.

    Prove an objective with ``tunesmith.testing.ObjectiveConformance``.
    """


@hookspec
def register_evaluators(register: Register[Evaluator]) -> None:
    """Register :class:`tunesmith.Evaluator` subclasses.

    :param register: call ``register(cls)`` once per class.

    Evaluators receive a :class:`tunesmith.EvalContext` and return ``{metric: number}``. Names must be
    unique across all installed plugins; a duplicate is rejected and reported with both owners. Prove
    an evaluator with ``tunesmith.testing.EvaluatorConformance``.
    """


@hookspec
def register_rewards(register: Register[Reward]) -> None:
    """Register :class:`tunesmith.Reward` subclasses (reward functions for online RL).

    :param register: call ``register(cls)`` once per class.

    A reward's ``score(prompts, completions, examples)`` returns one float per completion. It runs
    inside the training loop on every generation batch: keep it fast and deterministic.
    """


@hookspec
def register_models(register: Register[ModelProvider]) -> None:
    """Register :class:`tunesmith.ModelProvider` subclasses: base models chosen by name
    (``model: {path: <name>}``) that code builds or fetches.

    :param register: call ``register(cls)`` once per class.

    Must not: build or download the model here; do that in ``ModelProvider.path``.
    """


@hookspec
def register_judges(register: Register[Judge]) -> None:
    """Register :class:`tunesmith.Judge` subclasses: deciders of whether a model's answer refuses a request.

    :param register: call ``register(cls)`` once per class.

    A judge's ``judge(prompts, responses)`` returns one bool per response, True where it refuses. Judges
    are chosen inside a component, e.g. ``evaluators: [{name: safety, judge: {name: ...}}]``.
    Must not: load a classifier or model here; do that on the first ``judge`` call.
    """


@hookspec
def register_trackers(register: Register[Tracker]) -> None:
    """Register :class:`tunesmith.Tracker` subclasses: experiment trackers a run reports to, chosen by a
    run config's ``tracking:`` list (e.g. ``tracking: [{name: mlflow, experiment: dates}]``).

    :param register: call ``register(cls)`` once per class.

    A tracker's ``start``, ``log``, ``finish`` and ``abort`` run on the process that owns the console; one
    that raises is reported and dropped while the run goes on.
    Must not: import the tracker's library or connect to its server here; do that in ``start``. Set
    ``library`` and ``install`` on the class so a missing library is a config error with its install line.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add Click commands to the ``tunesmith`` CLI.

    :param cli: the ``tunesmith`` ``click.Group``: ``cli.add_command(...)`` or ``@cli.command()``.

    Must not: replace built-in commands (a name clash is reported and the plugin's command dropped).
    """


@hookspec
def on_log(run_dir: str, step: int, logs: dict[str, float]) -> None:
    """Called each time training logs metrics (loss, learning rate, ...).

    :param run_dir: the run directory.
    :param step: the optimizer step.
    :param logs: the numbers logged at this step.

    May: forward them to an experiment tracker. Must not: modify them; return nothing. An exception is
    reported and the plugin disabled for the rest of the run; training continues.
    """


@hookspec
def on_checkpoint(run_dir: str, checkpoint_dir: str, step: int) -> None:
    """Called after a checkpoint has been completely written.

    :param run_dir: the run directory.
    :param checkpoint_dir: the complete checkpoint.
    :param step: its optimizer step.

    Must not: modify the checkpoint.
    """


@hookspec
def on_run_end(run_dir: str, metrics: dict[str, Any]) -> None:
    """Called once the run directory is complete (after metrics.json and the report are written).

    :param run_dir: the complete run directory.
    :param metrics: what ``metrics.json`` holds.
    """


__all__ = ["Register", "hookimpl", "hookspec"]
