"""Checking a config value against its declared type, converting ``--set`` strings where unambiguous.

``coerce(value, tp)`` answers (ok, converted value) for the types ``Config`` fields use: ``bool``,
``int``, ``float``, ``str``, ``Literal[...]``, ``list[...]``, ``dict``, unions and ``Optional``.
Booleans must be booleans: a quoted ``'yes'`` is a string, and ``trust_remote_code: 'no'`` must not
mean true.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against type ``tp``, converting strings from ``--set`` where unambiguous."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        exact = [a for a in args if isinstance(a, type) and type(value) is a]  # str stays str in list|str
        for arg in exact + [a for a in args if a not in exact]:
            if arg is type(None):
                continue
            ok, out = coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is Literal:
        return (value in typing.get_args(tp)), value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for v in value:
            ok, c = coerce(v, item_tp)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:  # YAML (and so --set) already reads true/false; a quoted 'yes' is a string
        return isinstance(value, bool), value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        if isinstance(value, str):
            try:
                return True, int(value)
            except ValueError:
                return False, value
        return False, value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)  # PyYAML reads "2e-4" as a string
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {describe(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def describe_type(tp: Any) -> str:
    """A short, human name for a Config field's type (for ``plugins show`` and the docs)."""
    return describe(tp)


__all__ = ["coerce", "describe", "describe_type"]
