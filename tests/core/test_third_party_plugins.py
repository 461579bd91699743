"""Third-party plugins as users install them: real distributions, found through entry-point metadata.

The example packages under ``examples/plugins`` are installed with pip into a temporary directory (no
network: hatchling is in the venv) and the CLI runs in a subprocess with that directory on PYTHONPATH,
so discovery goes through ``importlib.metadata`` exactly as after ``pip install acme-evaluator``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "plugins"
ACME = EXAMPLES / "acme-evaluator"
BROKEN = EXAMPLES / "broken-plugin"
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes")
BUILTIN_COMPONENTS = {
    ("data_source", "jsonl"), ("data_source", "json"), ("data_source", "csv"), ("data_source", "parquet"),
    ("data_source", "hf"), ("formatter", "alpaca"), ("formatter", "chat"), ("formatter", "text"),
    ("method", "full"), ("method", "lora"), ("objective", "sft"),
    ("evaluator", "perplexity"), ("evaluator", "exact-match"),
}  # fmt: skip


def pip_install(package: Path, target: Path) -> Path:
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet"]
    base += ["--disable-pip-version-check", "--target", str(target), str(package)]
    done = subprocess.run([*base[:4], "--no-index", *base[4:]], capture_output=True, text=True)
    if done.returncode != 0:  # some pip versions want an index even for a local directory
        done = subprocess.run(base, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_install(ACME, tmp_path_factory.mktemp("acme") / "site")


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pip_install(BROKEN, tmp_path_factory.mktemp("broken") / "site")


def environment(*sites: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
    env["PYTHONPATH"] = os.pathsep.join(str(s) for s in sites)
    env["COLUMNS"] = "200"  # Rich tables: one line per row, so the text is easy to search
    env.update(extra)
    return env


def tunesmith(
    *args: str, sites: tuple[Path, ...] = (), cwd: Path = ROOT, **env: str
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process that discovers plugins from metadata."""
    code = "from tunesmith.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
        env=environment(*sites, **env), timeout=120,
    )  # fmt: skip


def listing(*sites: Path, **env: str) -> dict:
    done = tunesmith("plugins", "list", "--json", sites=sites, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def plugin(data: dict, name: str) -> dict:
    return next(p for p in data["plugins"] if p["name"] == name)


def test_an_installed_evaluator_is_listed_with_its_distribution(acme_site: Path):
    data = listing(acme_site)
    (component,) = [c for c in data["components"] if c["name"] == "acme-length-ratio"]
    assert component["kind"] == "evaluator"
    owner = (component["plugin"], component["distribution"], component["version"], component["status"])
    assert owner == ("acme", "acme-evaluator", "1.0.0", "ok")
    assert component["summary"].startswith("Mean ratio of generated length to reference length")
    acme = plugin(data, "acme")
    assert (acme["status"], acme["module"]) == ("ok", "acme_tunesmith")
    assert acme["components"] == [{"kind": "evaluator", "name": "acme-length-ratio"}]
    # built-ins are visited first, third parties after them
    assert [p["distribution"] == "tunesmith" for p in data["plugins"]][-1] is False


def test_a_plugin_that_raises_on_import_is_reported_and_nothing_else_breaks(
    acme_site: Path, broken_site: Path
):
    data = listing(acme_site, broken_site)
    broken = plugin(data, "broken")
    assert (broken["status"], broken["stage"]) == ("failed", "import")
    assert broken["distribution"] == "broken-plugin"
    assert broken["error"] == "RuntimeError: acme licence file missing"
    assert broken["components"] == []
    listed = {(c["kind"], c["name"]) for c in data["components"]}
    assert BUILTIN_COMPONENTS <= listed
    assert ("evaluator", "acme-length-ratio") in listed
    assert all(p["status"] == "ok" for p in data["plugins"] if p["name"] != "broken")

    table = tunesmith("plugins", "list", sites=(acme_site, broken_site))
    assert table.returncode == 0, table.stderr
    assert "Plugins needing attention" in table.stdout
    assert "RuntimeError: acme licence file missing" in table.stdout


def test_disable_allow_and_strict_modes(acme_site: Path, broken_site: Path):
    data = listing(acme_site, broken_site, TUNESMITH_DISABLE_PLUGINS="broken")
    assert plugin(data, "broken")["status"] == "disabled"
    assert plugin(data, "acme")["status"] == "ok"

    # The allow-list selects third-party plugins; built-ins always load (block them by name instead).
    data = listing(acme_site, broken_site, TUNESMITH_LOAD_PLUGINS="acme")
    assert plugin(data, "acme")["status"] == "ok" and plugin(data, "broken")["status"] == "disabled"
    assert all(p["status"] == "ok" for p in data["plugins"] if p["distribution"] == "tunesmith")

    strict = tunesmith("plugins", "list", sites=(acme_site, broken_site), TUNESMITH_STRICT_PLUGINS="1")
    assert strict.returncode != 0
    assert "RuntimeError: acme licence file missing" in strict.stderr
    assert "Traceback" in strict.stderr  # strict mode is for plugin authors: the full traceback


def test_plugins_show_describes_a_vendor_evaluator_and_its_options(acme_site: Path):
    done = tunesmith("plugins", "show", "acme-length-ratio", sites=(acme_site,))
    assert done.returncode == 0, done.stderr
    assert "acme-length-ratio — evaluator from acme (acme-evaluator 1.0.0)" in done.stdout
    for option in ("unit", "max_new_tokens", "tolerance"):
        assert option in done.stdout
    assert "Measure length in 'chars' or 'words'" in done.stdout


def test_a_run_asking_for_a_missing_evaluator_names_what_is_there_and_what_failed(
    broken_site: Path, tmp_path: Path
):
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: {train: {name: jsonl, path: train.jsonl}}\nevaluators: [{name: acme-length-ratio}]\n",
        encoding="utf-8",
    )
    done = tunesmith("data", "check", str(config), sites=(broken_site,))
    assert done.returncode == 2
    assert "unknown evaluator 'acme-length-ratio'" in done.stderr
    assert "exact-match" in done.stderr and "perplexity" in done.stderr
    assert "plugin 'broken' (broken-plugin) failed to load at import" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_option_of_a_vendor_evaluator_is_a_config_error(acme_site: Path, tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "data: {train: {name: jsonl, path: train.jsonl}}\nevaluators: [{name: acme-length-ratio, units: words}]\n",
        encoding="utf-8",
    )
    done = tunesmith("data", "check", str(config), sites=(acme_site,))
    assert done.returncode == 2
    assert "evaluators[0].units: unknown option (did you mean 'unit'?)" in done.stderr


def test_the_vendor_package_passes_its_own_tests():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ACME, capture_output=True, text=True,
        env=environment(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def imported_modules(code: str, *sites: Path) -> set[str]:
    """Top-level names of every module imported while running ``code`` in a fresh interpreter.

    ``-X importtime`` logs imports made by ``import`` statements; entry points are loaded through
    ``importlib.import_module``, which it does not log, so ``sys.modules`` is checked as well.
    """
    probe = (
        f"{code}\n"
        "import sys\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe], capture_output=True, text=True, cwd=ROOT,
        env=environment(*sites), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            if module and module != "imported package":
                names.add(module)
    (modules,) = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    names.update(modules.split()[1:])
    return {name.split(".")[0] for name in names}


def test_importing_the_cli_imports_no_heavy_library():
    modules = imported_modules("import tunesmith.cli")
    assert "tunesmith" in modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_listing_plugins_imports_no_heavy_library(acme_site: Path, broken_site: Path):
    code = (
        "from tunesmith.cli import main\n"
        "try:\n"
        "    main(['plugins', 'list'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
    )
    modules = imported_modules(code, acme_site, broken_site)
    assert {"tunesmith_plugins", "acme_tunesmith"} <= modules  # the plugins really were imported
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.mark.slow
def test_a_vendor_evaluator_scores_a_real_run_while_a_broken_plugin_is_installed(
    acme_site: Path, broken_site: Path, run_config
):
    """The vendor's evaluator is used by name in a run; the broken plugin costs nothing but a listing."""
    import yaml

    config = run_config(
        training__max_steps=2,
        evaluators=[{"name": "acme-length-ratio", "unit": "chars"}, {"name": "exact-match"}],
    )
    sites = (acme_site, broken_site)
    check = tunesmith("data", "check", str(config), sites=sites)
    assert check.returncode == 0, check.stderr
    done = tunesmith("run", str(config), sites=sites)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = Path(yaml.safe_load(config.read_text())["output_dir"].format(name="t"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "acme-length-ratio/length_ratio" in metrics["tuned"]["test"]
    assert "acme-length-ratio/length_ratio" in metrics["base"]["test"]
    assert metrics["errors"] == []
