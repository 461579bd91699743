"""The component kinds, in one table: config key, label for messages, base class, registration hook."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Kind:
    """One component kind: what the registry, config validation, listings and docs need to know."""

    name: str  #: the key in ``Component.kind`` and the registry, e.g. ``"data_source"``
    label: str  #: how messages call it, e.g. ``"data source"``
    base: type[Component]  #: the class its components subclass
    hook: str  #: the registration hook, e.g. ``"register_data_sources"``


KINDS: tuple[Kind, ...] = (
    Kind("data_source", "data source", DataSource, "register_data_sources"),
    Kind("formatter", "formatter", Formatter, "register_formatters"),
    Kind("method", "method", Method, "register_methods"),
    Kind("objective", "objective", Objective, "register_objectives"),
    Kind("evaluator", "evaluator", Evaluator, "register_evaluators"),
    Kind("reward", "reward", Reward, "register_rewards"),
    Kind("model", "model", ModelProvider, "register_models"),
    Kind("judge", "judge", Judge, "register_judges"),
    Kind("tracker", "tracker", Tracker, "register_trackers"),
)
KIND: dict[str, Kind] = {kind.name: kind for kind in KINDS}

__all__ = ["KIND", "KINDS", "Kind"]
