"""The plugin listing, cached: what ``plugins list``, ``plugins show`` and ``--help`` need, without
importing a single plugin module.

Building the registry imports every plugin module, which costs more than the rest of the start-up
together, and more with each plugin installed. What the listing shows is a function of the installed
distributions, the plugin modules' files, the interpreter and the plugin environment variables; so it is
stored as JSON under ``$TUNESMITH_CACHE/registry/`` and served while all of those are unchanged. Every
lookup checks them again (one directory scan per ``sys.path`` entry and one ``stat`` per recorded file,
well under a millisecond), so a stale listing is never served. An unreadable entry is rebuilt; strict
mode (``TUNESMITH_STRICT_PLUGINS=1``) never uses the cache: it wants the plugin's traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.plugin_info import PluginInfo

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tunesmith.plugins import Plugins

#: Bumped whenever the stored layout changes; older entries are then ignored.
FORMAT = 2
#: The environment variables that change what the registry holds.
PLUGIN_VARIABLES = ("TUNESMITH_LOAD_PLUGINS", "TUNESMITH_DISABLE_PLUGINS")


@dataclass
class ComponentEntry:
    """One registered component as the listings show it."""

    kind: str
    label: str  #: the kind as messages name it, e.g. "data source"
    name: str
    owner: int  #: index of its plugin in :attr:`Listing.plugins`
    summary: str
    description: str
    options: list[list[str]]  #: (option, type, default, help) rows


@dataclass
class Listing:
    """Everything the listing commands show, as plain data: the same whether read from the cache or
    taken from a registry built in this process."""

    plugins: list[PluginInfo]
    components: list[ComponentEntry]  #: in kind order, then by name
    warnings: list[str]
    #: Commands added by plugins (``register_commands``), described for ``--help``.
    commands: list[dict[str, Any]] = field(default_factory=list)
    #: Where printed pages of this listing are kept (``None``: not cached, e.g. strict mode).
    pages: Path | None = field(default=None, compare=False, repr=False)

    def page(self, key: str) -> str | None:
        """A page printed from this listing before, stored under ``key`` (see :meth:`keep_page`)."""
        if self.pages is None:
            return None
        try:
            with open(self.pages / _page_name(key), encoding="utf-8", newline="") as page:
                stored_key, _, text = page.read().partition("\n")
        except OSError:
            return None
        return text if stored_key == key else None

    def keep_page(self, key: str, text: str) -> None:
        """Keep a page printed from this listing (``key`` says which command, on which terminal): the
        next identical request prints it without rendering anything. Dropped with the listing."""
        if self.pages is not None:
            _write_text(self.pages / _page_name(key), f"{key}\n{text}")

    def owner(self, entry: ComponentEntry) -> PluginInfo:
        return self.plugins[entry.owner]

    def find(self, name: str) -> list[ComponentEntry]:
        return [entry for entry in self.components if entry.name == name]

    @classmethod
    def of(cls, registry: Plugins, commands: list[dict[str, Any]] | None = None) -> Listing:
        """The listing of a registry built in this process."""
        from tunesmith.kinds import KIND

        index = {id(info): i for i, info in enumerate(registry.infos)}
        components = [
            ComponentEntry(
                kind=kind,
                label=KIND[kind].label,
                name=name,
                owner=index[id(registry.owner(kind, name))],
                summary=component.summary(),
                description=component.description(),
                options=option_rows(component.Config),
            )
            for kind, comps in registry.components.items()
            for name, component in sorted(comps.items())
        ]
        infos = [dataclasses.replace(info) for info in registry.infos]
        return cls(infos, components, list(registry.warnings), list(commands or []))

    def to_json(self) -> dict[str, Any]:
        return {
            "plugins": [dataclasses.asdict(info) for info in self.plugins],
            "components": [dataclasses.asdict(entry) for entry in self.components],
            "warnings": self.warnings,
            "commands": self.commands,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Listing:
        plugins = [PluginInfo(**info) for info in data["plugins"]]
        for info in plugins:  # JSON has no tuples
            info.components = [(kind, name) for kind, name in info.components]
        return cls(
            plugins,
            [ComponentEntry(**entry) for entry in data["components"]],
            list(data["warnings"]),
            list(data["commands"]),
        )


def option_rows(config_cls: type) -> list[list[str]]:
    """A component's options as ``plugins show`` prints them: option, type, default, help."""
    import typing

    from tunesmith.coerce import describe_type
    from tunesmith.kinds import KIND
    from tunesmith.options import describe_range

    hints = typing.get_type_hints(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        kind = f.metadata.get("component")
        if kind:
            label = KIND[kind].label
            described = f"list of {label}s" if f.metadata.get("many") else label
        else:
            bounds = describe_range(f.metadata)
            described = describe_type(hints[f.name]) + (f", {bounds}" if bounds else "")
        rows.append([f.name, described, _default(f), f.metadata.get("help", "")])
    return rows


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


# ------------------------------------------------------------------------------------ the cache


def cache_root() -> Path:
    """``$TUNESMITH_CACHE`` (default ``~/.cache/tunesmith``)."""
    return Path(os.environ.get("TUNESMITH_CACHE") or Path.home() / ".cache" / "tunesmith")


def cached_listing(build: Callable[[], Listing]) -> Listing:
    """The listing from the cache when nothing it depends on changed; else ``build()``, stored."""
    if os.environ.get("TUNESMITH_STRICT_PLUGINS") == "1":
        return build()
    key = _key()
    try:
        path = cache_root() / "registry" / f"{_digest(key)}.json"
    except RuntimeError:  # no home folder to put it in: only speed is lost
        return build()
    installed = _installed()
    stored = _read(path)
    try:
        if (
            stored is not None
            and stored["key"] == key
            and stored["installed"] == installed
            and all(_stat(name) == stat for name, stat in stored["files"])
        ):
            listing = Listing.from_json(stored["listing"])
            listing.pages = path.with_name(f"{path.stem}-{stored['generation']}")
            return listing
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # a damaged entry: rebuilt below
    before = set(sys.modules)
    listing = build()
    generation = f"{time.time_ns():x}"
    entry = {
        "key": key,
        "generation": generation,  #: names the folder of this entry's pages; a rebuild starts a new one
        "installed": installed,
        "files": [[name, _stat(name)] for name in _plugin_files(listing, before)],
        "listing": listing.to_json(),
    }
    _forget_pages(path)
    _write_text(path, json.dumps(entry))
    listing.pages = path.with_name(f"{path.stem}-{generation}")
    return listing


def _page_name(key: str) -> str:
    """A file name for a page key (one line, stored as the file's first line and compared on reading)."""
    return f"{zlib.crc32(key.encode()):08x}.txt"


def _forget_pages(path: Path) -> None:
    """Drop the pages printed from an earlier entry of this key."""
    import shutil

    for folder in path.parent.glob(f"{path.stem}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _key() -> dict[str, Any]:
    """What selects an entry: the interpreter, its options (``-OO`` strips the docstrings listings
    show; ``-X`` options change how imports behave), where it looks for code, and the plugin variables."""
    from tunesmith import __version__

    return {
        "layout": FORMAT,
        "tunesmith": __version__,
        "executable": sys.executable,
        "python": sys.version,
        "flags": repr(sys.flags),
        "xoptions": repr(sorted(sys._xoptions.items())),
        "path": [os.path.abspath(entry) for entry in sys.path],
        "environment": {name: os.environ.get(name) for name in PLUGIN_VARIABLES},
    }


def _digest(key: dict[str, Any]) -> str:
    """A file name for the key (the key itself is stored and compared: a collision costs a rebuild)."""
    return f"{zlib.crc32(json.dumps(key, sort_keys=True).encode()):08x}"


def _installed() -> list[list[Any]]:
    """Every distribution on ``sys.path``, by directory name (name and version) with the state of its
    ``entry_points.txt``: an install, an uninstall, an upgrade or new entry points all change it."""
    found: list[list[Any]] = []
    for entry in sys.path:
        directory = os.path.abspath(entry)
        try:
            with os.scandir(directory) as scan:
                names = sorted(e.name for e in scan if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:  # a zip archive or a missing directory: its own state stands for it
            found.append([directory, _stat(directory)])
            continue
        for name in names:
            found.append([directory, name, _stat(os.path.join(directory, name, "entry_points.txt"))])
    return found


def _plugin_files(listing: Listing, before: set[str]) -> list[str]:
    """The source files a listing was built from: every plugin's module (found even when importing it
    failed), every non-standard-library module first imported while building, and the core's own."""
    import importlib.util

    files = set()
    for info in listing.plugins:
        try:
            spec = importlib.util.find_spec(info.module.split(":")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            files.add(spec.origin)
        elif info.status == "failed":  # a module that does not exist yet: watch where it would appear
            files.update(os.path.abspath(entry) for entry in sys.path)
    stdlib = sys.stdlib_module_names
    for name, loaded in list(sys.modules.items()):
        top = name.split(".")[0]
        if top in stdlib or (name in before and top != "tunesmith"):
            continue
        origin = getattr(loaded, "__file__", None)
        if origin and os.path.isfile(origin):
            files.add(origin)
    return sorted(files)


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_text(path: Path, text: str) -> None:
    """Atomically (a reader sees the old entry or the new one, never half of one); a cache that cannot
    be written only costs speed."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                out.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
