"""The cached plugin listing: served without importing a plugin, never stale, rebuilt when damaged.

Plugins are installed the way pip leaves them (a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt`` beside the module) in a temporary folder on ``PYTHONPATH``; the CLI runs in a
fresh process, as a user runs it. The reference for every cached answer is the same command run with an empty cache of its own, which builds the registry from scratch.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]

VENDOR = '''
from dataclasses import dataclass

from tunesmith import Evaluator, hookimpl, option


class VendorMetric(Evaluator):
    """{summary}"""

    name = "vendor-metric"

    @dataclass
    class Config:
        unit: str = option("chars", help="what to count")

    def evaluate(self, ctx):
        return {{"score": 1.0}}


@hookimpl
def register_evaluators(register):
    register(VendorMetric)
'''


def install(site: Path, dist: str, module: str, source: str, version: str = "1.0") -> None:
    """What ``pip install`` leaves behind: the module and its distribution's metadata."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[tunesmith]\n{dist} = {module}\n")
    (site / f"{module}.py").write_text(source)


def uninstall(site: Path, dist: str, module: str) -> None:
    for info in site.glob(f"{dist.replace('-', '_')}-*.dist-info"):
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    (site / f"{module}.py").unlink()


def edit(path: Path, text: str) -> None:
    """Rewrite a file and move its mtime on (a coarse file-system clock could otherwise keep it)."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "site").mkdir()
    return tmp_path / "site"


def tunesmith(site: Path, cache: Path, *args: str, probe: bool = False, **env: str):
    """The CLI in a fresh process; with ``probe``, stdout ends with the modules it imported."""
    code = "from tunesmith.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
    if probe:
        code += "import sys\nprint('MODULES', ' '.join(sorted(sys.modules)))\n"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
    environment.update(PYTHONPATH=str(site), TUNESMITH_CACHE=str(cache), COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=environment,
        timeout=120,
    )  # fmt: skip


def listing(site: Path, cache: Path, **env: str) -> dict:
    done = tunesmith(site, cache, "plugins", "list", "--json", **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fresh(site: Path, cache: Path, **env: str) -> dict:
    """The reference: the registry built from scratch, with a cache folder of its own, still empty."""
    return listing(site, empty(cache), **env)


def empty(cache: Path) -> Path:
    folders = cache.parent / "fresh"
    folders.mkdir(exist_ok=True)
    return folders / str(len(list(folders.iterdir())))


def component(data: dict, name: str) -> dict | None:
    return next((c for c in data["components"] if c["name"] == name), None)


def test_a_cache_hit_answers_like_a_fresh_registry_without_importing_any_plugin(site, tmp_path):
    install(site, "vendor", "vendor_plugin", VENDOR.format(summary="Counts things."))
    cache = tmp_path / "cache"
    first = listing(site, cache)  # builds and stores
    assert list((cache / "registry").glob("*.json"))
    for args in (["plugins", "list", "--json"], ["plugins", "list"], ["plugins", "show", "lora"], ["--help"]):
        reference = tunesmith(site, empty(cache), *args)
        for again in (False, True):  # a page printed once is reprinted as it was, without Rich
            hit = tunesmith(site, cache, *args, probe=True)
            assert hit.returncode == 0, hit.stderr
            out, modules = hit.stdout.rsplit("MODULES ", 1)
            imported = set(modules.split())
            assert not {"tunesmith_plugins", "vendor_plugin", "tunesmith.plugins", "pluggy"} & imported, args
            assert out == reference.stdout, args
            assert not (again and "rich" in imported), args
    assert first == fresh(site, cache)
    assert component(first, "vendor-metric")["summary"] == "Counts things."
    # a plugin's own command is listed from the cache too
    assert "review" in tunesmith(site, cache, "--help").stdout


def test_installing_editing_and_uninstalling_a_plugin_show_up_at_once(site, tmp_path):
    cache = tmp_path / "cache"
    assert component(listing(site, cache), "vendor-metric") is None  # warm cache, no vendor yet

    install(site, "vendor", "vendor_plugin", VENDOR.format(summary="Counts things."))
    installed = listing(site, cache)
    assert component(installed, "vendor-metric")["summary"] == "Counts things."
    assert installed == fresh(site, cache)

    shown = tunesmith(site, cache, "plugins", "show", "vendor-metric").stdout
    assert shown == tunesmith(site, cache, "plugins", "show", "vendor-metric").stdout  # kept page
    assert "Counts things." in shown

    edit(site / "vendor_plugin.py", VENDOR.format(summary="Counts words."))
    assert component(listing(site, cache), "vendor-metric")["summary"] == "Counts words."
    shown = tunesmith(site, cache, "plugins", "show", "vendor-metric").stdout
    assert "Counts words." in shown and "Counts things." not in shown

    uninstall(site, "vendor", "vendor_plugin")
    gone = listing(site, cache)
    assert component(gone, "vendor-metric") is None
    assert "vendor" not in {p["name"] for p in gone["plugins"]}

    install(site, "vendor", "vendor_plugin", VENDOR.format(summary="Counts again."), version="2.0")
    upgraded = listing(site, cache)
    assert component(upgraded, "vendor-metric")["version"] == "2.0"


def test_a_broken_plugin_is_reported_from_the_cache_exactly_as_when_built(site, tmp_path):
    cache = tmp_path / "cache"
    install(site, "shaky", "shaky_plugin", "raise RuntimeError('licence file missing')\n")
    listing(site, cache)
    cached = listing(site, cache)
    shaky = next(p for p in cached["plugins"] if p["name"] == "shaky")
    assert (shaky["status"], shaky["stage"]) == ("failed", "import")
    assert shaky["error"] == "RuntimeError: licence file missing"
    assert cached == fresh(site, cache)
    table = tunesmith(site, cache, "plugins", "list")
    assert "Plugins needing attention" in table.stdout and "licence file missing" in table.stdout

    edit(site / "shaky_plugin.py", VENDOR.format(summary="Fixed."))  # the author fixes it
    fixed = listing(site, cache)
    assert next(p for p in fixed["plugins"] if p["name"] == "shaky")["status"] == "ok"
    assert component(fixed, "vendor-metric")["summary"] == "Fixed."


@pytest.mark.parametrize("damage", ["{not json", "", "[]", '{"key": 1}', '{"key": {}, "listing": null}'])
def test_a_damaged_cache_entry_is_rebuilt_silently(site, tmp_path, damage):
    cache = tmp_path / "cache"
    install(site, "vendor", "vendor_plugin", VENDOR.format(summary="Counts things."))
    good = listing(site, cache)
    (entry,) = (cache / "registry").glob("*.json")
    entry.write_text(damage)
    done = tunesmith(site, cache, "plugins", "list", "--json")
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert json.loads(done.stdout) == good
    assert json.loads(entry.read_text())["listing"]  # written again, whole
    assert not [p for p in (cache / "registry").iterdir() if p.name.endswith(".tmp")]


def test_the_plugin_variables_are_respected_with_a_warm_cache(site, tmp_path):
    cache = tmp_path / "cache"
    install(site, "vendor", "vendor_plugin", VENDOR.format(summary="Counts things."))
    listing(site, cache)

    def status(**env: str) -> str:
        data = listing(site, cache, **env)
        assert data == fresh(site, cache, **env)
        return next(p for p in data["plugins"] if p["name"] == "vendor")["status"]

    assert status(TUNESMITH_DISABLE_PLUGINS="vendor") == "disabled"
    assert status(TUNESMITH_LOAD_PLUGINS="vendor") == "ok"
    assert status(TUNESMITH_LOAD_PLUGINS="sources") == "disabled"
    assert status() == "ok"
    typo = listing(site, cache, TUNESMITH_DISABLE_PLUGINS="vendr")
    assert any("'vendr'" in w and "did you mean 'vendor'" in w for w in typo["warnings"])


def test_a_plugin_command_help_page_from_the_cache_matches_the_real_one(tmp_path, monkeypatch):
    """``review import --help`` from the stand-in, against the command the plugin really registers."""
    from tunesmith.cli import cli
    from tunesmith.invocation import Registry

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))

    def help_page(*args: str, build: bool) -> str:
        group = copy.copy(cli)  # as main() does: plugin commands go on this invocation's copy
        group.commands = dict(cli.commands)
        registry = Registry(group)
        if build:
            registry.plugins()
        result = CliRunner().invoke(group, list(args), obj=registry, prog_name="tunesmith")
        assert result.exit_code == 0, result.output
        return result.output, registry.built

    help_page("--help", build=False)  # warms the cache
    for args in (["--help"], ["review", "--help"], ["review", "import", "--help"], ["review", "-h"]):
        cached, built = help_page(*args, build=False)
        assert not built, args  # answered from the cache
        assert (cached, True) == help_page(*args, build=True), args
