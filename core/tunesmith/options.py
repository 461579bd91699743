"""Declaring a component's options: :func:`option` for plain values, :func:`component` for nested components.

A component's ``Config`` is a dataclass; each field is an option users set beside the component's
``name`` in a run config. Both helpers only attach metadata that ``plugins show``, the docs and config
validation read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    exclusive_maximum: float | None = None,
    **kwargs: Any,
) -> Any:
    """A ``Config`` field with help text; mutable defaults (lists, dicts) are copied per instance.

    ``minimum`` / ``maximum`` (inclusive) and ``exclusive_minimum`` / ``exclusive_maximum`` bound a
    number: config validation reports a value outside them with its key (``method.r: must be at least
    1, got 0``), and ``plugins show`` and the docs print the range.
    """
    metadata: dict[str, Any] = {"help": help}
    bounds = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "exclusive_maximum": exclusive_maximum,
    }
    metadata.update({k: v for k, v in bounds.items() if v is not None})
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


def out_of_range(value: Any, metadata: Any) -> str | None:
    """Why a number is outside its option's bounds (None when it is inside, or not a number)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return f"must be a finite number, got {value}"
    if "minimum" in metadata and value < metadata["minimum"]:
        return f"must be at least {metadata['minimum']:g}, got {value:g}"
    if "exclusive_minimum" in metadata and value <= metadata["exclusive_minimum"]:
        return f"must be greater than {metadata['exclusive_minimum']:g}, got {value:g}"
    if "maximum" in metadata and value > metadata["maximum"]:
        return f"must be at most {metadata['maximum']:g}, got {value:g}"
    if "exclusive_maximum" in metadata and value >= metadata["exclusive_maximum"]:
        return f"must be less than {metadata['exclusive_maximum']:g}, got {value:g}"
    return None


def describe_range(metadata: Any) -> str:
    """The bounds of an option as text (``≥ 1``, ``0 ≤ x < 1``), or "" when it has none."""
    low = (
        f"{metadata['minimum']:g} ≤ "
        if "minimum" in metadata
        else f"{metadata['exclusive_minimum']:g} < "
        if "exclusive_minimum" in metadata
        else ""
    )
    high = (
        f" ≤ {metadata['maximum']:g}"
        if "maximum" in metadata
        else f" < {metadata['exclusive_maximum']:g}"
        if "exclusive_maximum" in metadata
        else ""
    )
    if low and high:
        return f"{low}x{high}"
    if low:
        return "≥ " + low.split(" ")[0] if "minimum" in metadata else "> " + low.split(" ")[0]
    if high:
        return high.strip()
    return ""


__all__ = ["component", "describe_range", "option", "out_of_range"]
