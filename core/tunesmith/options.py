"""Declaring a component's options: :func:`option` for plain values, :func:`component` for nested components.

A component's ``Config`` is a dataclass; each field is an option users set beside the component's
``name`` in a run config. Both helpers only attach metadata that ``plugins show``, the docs and config
validation read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A ``Config`` field with help text; mutable defaults (lists, dicts) are copied per instance."""
    metadata = {"help": help}
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def component(kind: str, *, many: bool = False, help: str = "") -> Any:
    """A field holding components of ``kind`` chosen by name, e.g. ``rewards`` inside the grpo objective.

    In a run config each entry is a name or ``{name: ..., <its options>}``; config validation checks
    them like top-level components (did-you-mean, every problem in one list) and the field then holds
    instances. ``many`` makes it a list (default ``[]``); otherwise it defaults to ``None``, meaning
    "the kind's default component" where the field is a run-config section, else "none".
    """
    return field(
        default_factory=list if many else lambda: None,
        metadata={"help": help, "component": kind, "many": many},
    )


__all__ = ["component", "option"]
