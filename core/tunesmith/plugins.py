"""Plugin discovery and the component registry.

Every plugin, built-in or third party, comes from an entry point in the ``tunesmith`` group. Each one is
loaded, validated and asked to register in isolation: a plugin that fails any stage is disabled and
recorded (distribution, version, stage, error) while the others go on. A fresh :class:`Plugins` is built
per CLI invocation; nothing is global.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from tunesmith import hookspecs
from tunesmith.components import Component
from tunesmith.errors import TunesmithError
from tunesmith.kinds import KIND, KINDS
from tunesmith.plugin_info import BUILTIN_DISTRIBUTION, PluginInfo

GROUP = "tunesmith"


@dataclass
class PluginSource:
    """An entry point, or an object handed in directly (tests, embedding applications)."""

    name: str
    distribution: str
    version: str
    module: str
    load: Callable[[], Any]


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def entry_point_sources() -> list[PluginSource]:
    """The ``tunesmith`` entry points installed, built-ins first, then by name (never install order)."""
    sources = []
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        sources.append(
            PluginSource(
                name=ep.name,
                distribution=dist.name if dist else "?",
                version=dist.version if dist else "?",
                module=ep.value,
                load=ep.load,
            )
        )
    unique = {(s.distribution, s.name): s for s in sources}  # editable + regular installs may repeat
    return sorted(unique.values(), key=lambda s: (s.distribution != BUILTIN_DISTRIBUTION, s.name))


class Plugins:
    """The loaded plugins, the components they registered, and the ones that failed.

    ``strict=True`` (or ``TUNESMITH_STRICT_PLUGINS=1``) re-raises the first plugin error, for plugin
    authors who want the traceback.
    """

    def __init__(self, sources: Iterable[PluginSource] | None = None, *, strict: bool | None = None) -> None:
        self.strict = strict if strict is not None else os.environ.get("TUNESMITH_STRICT_PLUGINS") == "1"
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []
        self.components: dict[str, dict[str, type[Component]]] = {kind.name: {} for kind in KINDS}
        self.owners: dict[tuple[str, str], PluginInfo] = {}
        self._objects: dict[str, Any] = {}
        #: Things worth a warning line at the start of a command: unknown names in the environment
        #: variables, third-party components standing in for disabled built-ins.
        self.warnings: list[str] = []
        #: Observer hooks that raised during this invocation (``"plugin: on_log raised ..."``).
        self.hook_failures: list[str] = []
        allow = _env_list("TUNESMITH_LOAD_PLUGINS")
        block = _env_list("TUNESMITH_DISABLE_PLUGINS") or set()
        all_sources = list(entry_point_sources() if sources is None else sources)
        disabled_builtins = []
        for source in all_sources:
            info = PluginInfo(source.name, source.distribution, source.version, source.module)
            self.infos.append(info)
            allowed = allow is None or source.name in allow or source.distribution == BUILTIN_DISTRIBUTION
            if source.name in block or not allowed:
                info.status = "disabled"
                if info.builtin:
                    disabled_builtins.append(source)
                continue
            self._add(source, info)
        names = sorted(s.name for s in all_sources)
        for variable, listed in (("TUNESMITH_LOAD_PLUGINS", allow), ("TUNESMITH_DISABLE_PLUGINS", block)):
            for name in sorted((listed or set()) - set(names)):
                self.warnings.append(
                    f"{variable} names '{name}', which is not an installed plugin{_did_you_mean(name, names)}; "
                    "plugin names are the entry-point names `tunesmith plugins list` shows"
                )
        self._note_replaced_builtins(disabled_builtins)

    def _note_replaced_builtins(self, disabled: list[PluginSource]) -> None:
        """Say when a third-party component takes the name of a built-in that is disabled."""
        builtin_names: set[tuple[str, str]] = set()
        for source in disabled:
            try:
                obj = source.load()
            except Exception:  # noqa: BLE001 - a built-in that cannot load has nothing to shadow
                continue
            for kind in KINDS:
                hook = getattr(obj, kind.hook, None)
                if callable(hook) and hasattr(hook, "tunesmith_impl"):
                    try:
                        hook(lambda cls, kind=kind: builtin_names.add((kind.name, cls.name)))
                    except Exception:  # noqa: BLE001
                        continue
        for (kind_name, name), owner in sorted(self.owners.items()):
            if (kind_name, name) in builtin_names and not owner.builtin:
                self.warnings.append(
                    f"{KIND[kind_name].label} '{name}' comes from plugin '{owner.name}' ({owner.distribution} "
                    f"{owner.version}): the built-in of that name is disabled"
                )

    # ------------------------------------------------------------------ loading, one plugin at a time

    def _fail(self, info: PluginInfo, stage: str, exc: BaseException) -> None:
        info.status, info.stage = "failed", stage
        info.error = f"{type(exc).__name__}: {exc}"
        if info.name in self._objects:
            self.pm.unregister(self._objects.pop(info.name))
        for kind, name in info.components:
            self.components[kind].pop(name, None)
            self.owners.pop((kind, name), None)
        info.components.clear()
        if self.strict:
            raise exc

    def _add(self, source: PluginSource, info: PluginInfo) -> None:
        try:
            obj = source.load()
        except Exception as exc:  # noqa: BLE001 - any import error disables only this plugin
            return self._fail(info, "import", exc)
        try:
            self.pm.register(obj, name=info.name)
            self._objects[info.name] = obj
            unknown = [name for name in _impl_names(obj) if name not in self._spec_names()]
            if unknown:
                hint = _did_you_mean(unknown[0], self._spec_names())
                raise TunesmithError(f"unknown hook '{unknown[0]}'{hint}")
        except Exception as exc:  # noqa: BLE001 - pluggy.PluginValidationError, unknown hooks, ...
            return self._fail(info, "validate", exc)
        unmarked = [
            n for n in self._spec_names() if callable(getattr(obj, n, None)) and n not in _impl_names(obj)
        ]
        if unmarked:
            info.problems.append(
                f"{', '.join(sorted(unmarked))} not marked with @tunesmith.hookimpl: ignored"
            )
        for kind in KINDS:
            caller = self._caller_for(kind.hook, obj)
            try:
                caller(register=self._register_callback(kind.name, info))
            except Exception as exc:  # noqa: BLE001 - a raising hook disables only this plugin
                return self._fail(info, "register", exc)
        return None

    def _spec_names(self) -> set[str]:
        return {name for name in dir(hookspecs) if name.startswith(("register_", "on_"))}

    def _caller_for(self, hook_name: str, obj: Any) -> Callable[..., Any]:
        others = [p for p in self._objects.values() if p is not obj]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)

    def _register_callback(self, kind: str, info: PluginInfo) -> Callable[[type[Component]], None]:
        base = KIND[kind].base

        def register(cls: type[Component]) -> None:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"{cls!r} is not a subclass of tunesmith.{base.__name__}")
            if not cls.name:
                raise TypeError(f"{cls.__name__} has no 'name'")
            if not dataclasses.is_dataclass(cls.Config):
                raise TypeError(f"{cls.__name__}.Config is not a dataclass")
            owner = self.owners.get((kind, cls.name))
            if owner is not None:
                info.problems.append(
                    f"{KIND[kind].label} '{cls.name}' rejected: already registered by "
                    f"{owner.name} ({owner.distribution} {owner.version}); "
                    f"duplicate from {info.name} ({info.distribution} {info.version})"
                )
                return
            self.components[kind][cls.name] = cls
            self.owners[(kind, cls.name)] = info
            info.components.append((kind, cls.name))

        return register

    # ------------------------------------------------------------------------------------- queries

    @property
    def failed(self) -> list[PluginInfo]:
        return [info for info in self.infos if info.status == "failed"]

    def attention(self) -> list[str]:
        """One line per plugin that failed to load, then :attr:`warnings`: shown when a command starts."""
        lines = [
            f"plugin '{i.name}' ({i.distribution} {i.version}) failed to load at {i.stage}: {i.error}; "
            "its components are unavailable (tunesmith plugins list)"
            for i in self.failed
        ]
        return lines + self.warnings

    def get(self, kind: str, name: str) -> type[Component]:
        """The component class, or a :class:`TunesmithError` naming what is available and what failed."""
        available = self.components[kind]
        if name in available:
            return available[name]
        label = KIND[kind].label
        hint = _did_you_mean(name, available)
        details = [f"available {label}s: {', '.join(sorted(available)) or '(none)'}"]
        for info in self.failed:
            details.append(
                f"plugin '{info.name}' ({info.distribution}) failed to load at {info.stage}: {info.error}"
            )
        raise TunesmithError(f"unknown {label} '{name}'{hint}", details=details)

    def defaults(self, kind: str) -> list[type[Component]]:
        """The components of ``kind`` that declare themselves defaults (``default = True`` on the class
        itself: a subclass of a default is not one), in registration order: built-ins first."""
        return [cls for cls in self.components[kind].values() if vars(cls).get("default") is True]

    def default(self, kind: str) -> type[Component] | None:
        """The kind's default component (the first that declares itself one), or None."""
        return next(iter(self.defaults(kind)), None)

    def find(self, name: str) -> list[type[Component]]:
        """Every component called ``name``, whatever its kind."""
        return [kinds[name] for kinds in self.components.values() if name in kinds]

    def owner(self, kind: str, name: str) -> PluginInfo:
        return self.owners[(kind, name)]

    def call(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observer hook on every plugin; one that raises is reported and skipped next time."""
        for info in self.infos:
            obj = self._objects.get(info.name)
            if obj is None or info.status != "ok":
                continue
            try:
                self._caller_for(hook_name, obj)(**kwargs)
            except Exception as exc:  # noqa: BLE001
                if self.strict:
                    raise
                problem = f"{hook_name} raised {type(exc).__name__}: {exc}; plugin disabled"
                info.problems.append(problem)
                self.hook_failures.append(f"plugin '{info.name}' ({info.distribution}): {problem}")
                info.status = "failed"
                info.stage = hook_name

    def add_commands(self, cli: Any) -> None:
        """Let plugins add CLI commands; a clash with an existing command drops the plugin's one."""
        for info in self.infos:
            obj = self._objects.get(info.name)
            if obj is None or info.status != "ok":
                continue
            before = dict(cli.commands)
            try:
                self._caller_for("register_commands", obj)(cli=cli)
            except Exception as exc:  # noqa: BLE001
                cli.commands.clear()
                cli.commands.update(before)
                self._fail(info, "register", exc)
                continue
            for name, command in list(cli.commands.items()):
                if name in before and before[name] is not command:
                    cli.commands[name] = before[name]
                    info.problems.append(f"command '{name}' rejected: it already exists")
            info.commands = sorted(name for name in cli.commands if name not in before)


def _impl_names(obj: Any) -> list[str]:
    """Names of the attributes of ``obj`` marked with ``@hookimpl``."""
    names = []
    for attr in dir(obj):
        value = getattr(obj, attr, None)
        if callable(value) and hasattr(value, "tunesmith_impl"):
            names.append(attr)
    return names


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
