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

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("tunesmith")
hookimpl = pluggy.HookimplMarker("tunesmith")


@hookspec
def register_data_sources(register: Any) -> None:
    """Register :class:`tunesmith.DataSource` subclasses by calling ``register(cls)`` once per class.

    May: call ``register`` any number of times.
    Must not: read data or import heavy libraries here; do that in ``DataSource.read``.
    """


@hookspec
def register_formatters(register: Any) -> None:
    """Register :class:`tunesmith.Formatter` subclasses with ``register(cls)``.

    A formatter turns raw records into :class:`tunesmith.Example` objects and raises
    :class:`tunesmith.InvalidRecord` (with the field name) for records it cannot use.
    """


@hookspec
def register_methods(register: Any) -> None:
    """Register :class:`tunesmith.Method` subclasses (tuning methods: full, LoRA, ...) with ``register(cls)``.

    A method's ``apply`` receives the loaded base model and returns the model to train. Run
    ``tunesmith.testing.check_method`` against your method to prove it behaves.
    """


@hookspec
def register_objectives(register: Any) -> None:
    """Register :class:`tunesmith.Objective` subclasses (training objectives: sft, ...) with ``register(cls)``."""


@hookspec
def register_evaluators(register: Any) -> None:
    """Register :class:`tunesmith.Evaluator` subclasses with ``register(cls)``.

    Evaluators receive a :class:`tunesmith.EvalContext` and return ``{metric: number}``. Names must be
    unique across all installed plugins; a duplicate is rejected and reported with both owners.
    """


@hookspec
def register_rewards(register: Any) -> None:
    """Register :class:`tunesmith.Reward` subclasses (reward functions for online RL) with ``register(cls)``.

    A reward's ``score(prompts, completions, examples)`` returns one float per completion. It runs
    inside the training loop on every generation batch: keep it fast and deterministic.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add Click commands to the ``tunesmith`` CLI: ``cli.add_command(...)`` or ``@cli.command()``.

    Must not: replace built-in commands (a name clash is reported and the plugin's command dropped).
    """


@hookspec
def on_log(run_dir: str, step: int, logs: dict[str, float]) -> None:
    """Called each time training logs metrics (loss, learning rate, ...). Observe only; return nothing.

    Use it to forward metrics to an experiment tracker. Exceptions are reported and the plugin disabled
    for the rest of the run; training continues.
    """


@hookspec
def on_checkpoint(run_dir: str, checkpoint_dir: str, step: int) -> None:
    """Called after a checkpoint has been completely written. Must not modify the checkpoint."""


@hookspec
def on_run_end(run_dir: str, metrics: dict[str, Any]) -> None:
    """Called once the run directory is complete (after metrics.json and the report are written)."""
