"""One CLI invocation's plugins: the cached listing for listings and help, the real registry for the rest.

``plugins list``, ``plugins show`` and every ``--help`` (plugin commands' included) are answered from the
cached listing (:mod:`tunesmith.registry_cache`) without importing a plugin; the first command that runs
something builds the real registry, which also adds the plugins' real commands to the CLI.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from gettext import gettext as _
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tunesmith.plugins import Plugins
    from tunesmith.registry_cache import Listing


class Registry:
    """The plugins of one invocation, built no further than the command needs."""

    def __init__(self, group: click.Group) -> None:
        self.group = group  #: this invocation's copy of the CLI: plugin commands are added to it
        self._plugins: Plugins | None = None
        self._listing: Listing | None = None
        self._added: list[str] = []  #: names of the commands plugins added

    @property
    def built(self) -> bool:
        return self._plugins is not None

    def plugins(self) -> Plugins:
        """The real registry (every plugin imported and registered); its commands join the CLI."""
        if self._plugins is None:
            from tunesmith.plugins import Plugins

            builtin = set(self.group.commands)
            self._plugins = Plugins()
            self._plugins.add_commands(self.group)
            self._added = [name for name in self.group.commands if name not in builtin]
        return self._plugins

    def listing(self) -> Listing:
        """What the listings show: from the cache, or from the real registry once it is built."""
        if self._listing is None:
            from tunesmith.registry_cache import Listing, cached_listing

            if self._plugins is not None:
                self._listing = Listing.of(self._plugins, self._describe_added())
            else:
                self._listing = cached_listing(lambda: Listing.of(self.plugins(), self._describe_added()))
        return self._listing

    def _describe_added(self) -> list[dict[str, Any]]:
        root = click.Context(self.group, info_name="tunesmith", **self.group.context_settings)
        return [describe(self.group.commands[name], name, root) for name in sorted(self._added)]

    def print_page(self, command: str, render: Callable[[], None], console: Callable[[], Any]) -> None:
        """Print what ``render`` prints on the Rich ``console()``, a page of the listing: kept with the cached
        listing for this terminal, so the same request next time prints it without importing Rich."""
        key = json.dumps([command, terminal()])
        listing = self.listing()
        text = listing.page(key)
        if text is None:
            with console().capture() as captured:
                render()
            text = captured.get()
            listing.keep_page(key, text)
        sys.stdout.write(text)
        sys.stdout.flush()

    def cached_command(self, name: str) -> click.Command | None:
        """A stand-in for a plugin command that can show its help (and nothing else)."""
        info = next((c for c in self.listing().commands if c["name"] == name), None)
        return stand_in(info) if info else None


#: The environment variables Rich reads to decide width, height, colours and terminal features.
RICH_VARIABLES = (
    "COLUMNS", "LINES", "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
    "JUPYTER_COLUMNS", "JUPYTER_LINES", "DATABRICKS_RUNTIME_VERSION",
)  # fmt: skip


def terminal() -> list[Any]:
    """Everything a Rich page's bytes depend on besides its content: whether stdout is a terminal, the
    terminal sizes Rich looks at (stdin, stdout, stderr), the output encoding and Rich's variables."""
    sizes: list[list[int] | None] = []
    for fd in (0, 1, 2):
        try:
            sizes.append(list(os.get_terminal_size(fd)))
        except (OSError, ValueError):
            sizes.append(None)
    try:
        tty = sys.stdout.isatty()
    except ValueError:
        tty = False
    return [
        tty,
        sizes,
        getattr(sys.stdout, "encoding", None),
        sys.platform,
        [os.environ.get(name) for name in RICH_VARIABLES],
    ]


def asks_for_help(command: click.Command, args: list[str]) -> bool:
    """True when ``args`` for ``command`` would end in a help page: a help option of the command the
    arguments lead to appears before ``--``."""
    names = getattr(command, "help_names", ["--help"])
    for i, arg in enumerate(args):
        if arg == "--":
            return False
        if arg in names:
            return True
        if isinstance(command, click.Group) and arg in command.commands:
            return asks_for_help(command.commands[arg], args[i + 1 :])
    return False


# ------------------------------------------------------------------ plugin commands, described for help


def describe(command: click.Command, name: str, parent: click.Context) -> dict[str, Any]:
    """Everything Click's help page and the parent's command list show about ``command``, as plain data."""
    ctx = click.Context(command, info_name=name, parent=parent, **command.context_settings)
    params = command.get_params(ctx)
    arguments = [p for p in params if isinstance(p, click.Argument)]
    info: dict[str, Any] = {
        "name": name,
        "help": command.help,
        "short_help": command.short_help,
        "epilog": command.epilog,
        "hidden": command.hidden,
        "deprecated": command.deprecated,
        "help_names": command.get_help_option_names(ctx) if command.add_help_option else [],
        "usage": command.collect_usage_pieces(ctx),
        "arguments": (
            [list(a.get_help_record(ctx) or ("", "")) for a in arguments]
            if any(a.help is not None for a in arguments)
            else []
        ),
        "options": [
            list(record)
            for p in params
            if not isinstance(p, click.Argument) and (record := p.get_help_record(ctx)) is not None
        ],
    }
    if isinstance(command, click.Group):
        info["commands"] = [
            describe(sub, sub_name, ctx)
            for sub_name in command.list_commands(ctx)
            if (sub := command.get_command(ctx, sub_name)) is not None
        ]
    return info


class _CachedHelp(click.Command):
    """Renders a help page from a description, through Click's own formatter (so widths match)."""

    info: dict[str, Any]
    help_names: list[str]

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return list(self.info["usage"])

    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.info["arguments"]:
            with formatter.section(_("Positional arguments")):
                formatter.write_dl([tuple(r) for r in self.info["arguments"]])

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.info["options"]:
            with formatter.section(_("Options")):
                formatter.write_dl([tuple(r) for r in self.info["options"]])
        if isinstance(self, click.Group):
            self.format_commands(ctx, formatter)


class _CachedCommand(_CachedHelp):
    pass


class _CachedGroup(_CachedHelp, click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [sub["name"] for sub in self.info["commands"]]


def stand_in(info: dict[str, Any]) -> click.Command:
    """A command that shows ``info``'s help page; it takes any arguments, since it only ever shows help."""
    kwargs: dict[str, Any] = {
        "name": info["name"],
        "help": info["help"],
        "short_help": info["short_help"],
        "epilog": info["epilog"],
        "hidden": info["hidden"],
        "deprecated": info["deprecated"],
        "add_help_option": bool(info["help_names"]),
        "context_settings": {
            "ignore_unknown_options": True,
            "allow_extra_args": True,
            "help_option_names": info["help_names"] or ["--help"],
        },
    }
    command: _CachedHelp
    if "commands" in info:
        command = _CachedGroup(commands=[stand_in(sub) for sub in info["commands"]], **kwargs)
    else:
        command = _CachedCommand(**kwargs)
    command.info = info
    command.help_names = info["help_names"]
    return command
