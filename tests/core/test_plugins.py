"""The plugin registry: discovery order, isolation of broken plugins, duplicates, allow/deny lists."""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest

from tunesmith import Evaluator, Method, hookimpl, option
from tunesmith.errors import TunesmithError
from tunesmith.plugins import BUILTIN_DISTRIBUTION, Plugins, PluginSource, entry_point_sources


class Bleu2(Evaluator):
    """A vendor metric."""

    name = "vendor-bleu"

    @dataclass
    class Config:
        order: int = option(4, help="n-gram order")

    def evaluate(self, ctx):
        return {"score": 1.0}


class Lora2(Method):
    """A second method called lora."""

    name = "lora"


def module(**hooks) -> types.ModuleType:
    ns = types.ModuleType("fake_plugin")
    for name, fn in hooks.items():
        setattr(ns, name, hookimpl(fn))
    return ns


def source(
    name: str, obj=None, *, dist: str = "acme-tunesmith", error: Exception | None = None
) -> PluginSource:
    def load():
        if error is not None:
            raise error
        return obj

    return PluginSource(name=name, distribution=dist, version="1.0", module=f"{name}_mod", load=load)


def vendor_module():
    return module(register_evaluators=lambda register: register(Bleu2))


def test_builtins_are_discovered_through_the_entry_point_group():
    plugins = Plugins()
    builtins = [i for i in plugins.infos if i.distribution == BUILTIN_DISTRIBUTION]
    assert builtins and all(i.status == "ok" for i in builtins)
    kinds = {kind for kind, comps in plugins.components.items() if comps}
    assert kinds >= {"data_source", "formatter", "method", "objective", "evaluator"}
    assert plugins.get("method", "lora").name == "lora"


def test_entry_points_are_visited_builtins_first_then_by_name():
    names = [(s.distribution == BUILTIN_DISTRIBUTION, s.name) for s in entry_point_sources()]
    builtin_flags = [b for b, _ in names]
    assert builtin_flags == sorted(builtin_flags, reverse=True)
    assert [n for b, n in names if b] == sorted(n for b, n in names if b)


def test_a_plugin_that_fails_to_import_is_recorded_and_the_others_load():
    plugins = Plugins(
        [source("broken", error=ImportError("no module named numpyy")), source("vendor", vendor_module())]
    )
    broken = plugins.infos[0]
    assert (broken.status, broken.stage) == ("failed", "import")
    assert "numpyy" in broken.error and broken.distribution == "acme-tunesmith"
    assert plugins.get("evaluator", "vendor-bleu") is Bleu2


def test_a_plugin_with_an_unknown_hook_fails_validation():
    bad = module(register_evaluator=lambda register: None)  # missing "s"
    plugins = Plugins([source("typo", bad)])
    info = plugins.infos[0]
    assert (info.status, info.stage) == ("failed", "validate")
    assert "register_evaluators" in info.error  # did-you-mean


def test_a_plugin_with_a_bad_hook_signature_fails_validation():
    bad = module(register_methods=lambda register, extra: None)
    plugins = Plugins([source("sig", bad)])
    assert (plugins.infos[0].status, plugins.infos[0].stage) == ("failed", "validate")


def test_a_hook_that_raises_disables_only_its_plugin_and_rolls_back_its_components():
    def register_evaluators(register):
        register(Bleu2)
        raise RuntimeError("licence server unreachable")

    plugins = Plugins([source("flaky", module(register_evaluators=register_evaluators))])
    info = plugins.infos[0]
    assert (info.status, info.stage) == ("failed", "register")
    assert "vendor-bleu" not in plugins.components["evaluator"]


def test_registering_something_that_is_not_a_component_fails():
    plugins = Plugins([source("odd", module(register_methods=lambda register: register(object)))])
    assert plugins.infos[0].stage == "register"
    assert "not a subclass of tunesmith.Method" in plugins.infos[0].error


def test_duplicate_names_are_rejected_naming_both_owners():
    first = module(register_methods=lambda register: register(Lora2))
    plugins = Plugins(
        [
            source("first", first, dist="one"),
            source("second", module(register_methods=lambda register: register(Lora2)), dist="two"),
        ]
    )
    assert plugins.owner("method", "lora").name == "first"
    problem = plugins.infos[1].problems[0]
    assert "first (one 1.0)" in problem and "second (two 1.0)" in problem


def test_disable_and_load_lists(monkeypatch):
    monkeypatch.setenv("TUNESMITH_DISABLE_PLUGINS", "vendor")
    plugins = Plugins([source("vendor", vendor_module())])
    assert plugins.infos[0].status == "disabled" and not plugins.components["evaluator"]
    monkeypatch.delenv("TUNESMITH_DISABLE_PLUGINS")
    monkeypatch.setenv("TUNESMITH_LOAD_PLUGINS", "other")
    assert Plugins([source("vendor", vendor_module())]).infos[0].status == "disabled"
    monkeypatch.setenv("TUNESMITH_LOAD_PLUGINS", "vendor")
    assert Plugins([source("vendor", vendor_module())]).infos[0].status == "ok"


def test_strict_mode_reraises_for_plugin_authors(monkeypatch):
    with pytest.raises(ImportError):
        Plugins([source("broken", error=ImportError("boom"))], strict=True)
    monkeypatch.setenv("TUNESMITH_STRICT_PLUGINS", "1")
    with pytest.raises(ImportError):
        Plugins([source("broken", error=ImportError("boom"))])


def test_missing_component_names_what_is_available_and_what_failed():
    plugins = Plugins([source("broken", error=ImportError("boom")), source("vendor", vendor_module())])
    with pytest.raises(TunesmithError) as err:
        plugins.get("evaluator", "vendor-blue")
    text = str(err.value)
    assert "did you mean 'vendor-bleu'" in text
    assert "available evaluators: vendor-bleu" in text
    assert "plugin 'broken'" in text and "boom" in text


def test_observer_hook_that_raises_is_reported_not_fatal():
    def on_log(run_dir, step, logs):
        raise ValueError("tracker down")

    seen = []
    plugins = Plugins(
        [
            source("bad", module(on_log=on_log)),
            source("good", module(on_log=lambda run_dir, step, logs: seen.append(step))),
        ]
    )
    plugins.call("on_log", run_dir="r", step=3, logs={})
    plugins.call("on_log", run_dir="r", step=4, logs={})
    assert seen == [3, 4]
    assert plugins.infos[0].status == "failed" and "tracker down" in plugins.infos[0].problems[0]


def test_plugin_commands_cannot_replace_builtin_ones():
    import click

    group = click.Group(commands={"run": click.Command("run")})
    original = group.commands["run"]

    def register_commands(cli):
        cli.add_command(click.Command("run"))
        cli.add_command(click.Command("upload"))

    plugins = Plugins([source("cmds", module(register_commands=register_commands))])
    plugins.add_commands(group)
    assert group.commands["run"] is original and "upload" in group.commands
    assert "command 'run' rejected" in plugins.infos[0].problems[0]


def test_plugins_that_add_commands_are_listed_with_them():
    """``plugins list`` says which plugin added which command (the exporter, the review sheet)."""
    import click

    from tunesmith.registry_cache import Listing

    registry = Plugins()
    group = click.Group("tunesmith", commands={"run": click.Command("run")})
    registry.add_commands(group)
    added = {i.name: i.commands for i in Listing.of(registry).plugins if i.commands}
    assert added == {"export": ["export", "push"], "human-review": ["review"]}
