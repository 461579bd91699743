"""The house rules, checked: imports in core run one way (no cycles, each layer imports only those
below it), built-ins use only the public plugin contract, and the engine names no built-in.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency. docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "tunesmith"
PLUGINS = ROOT / "plugins" / "tunesmith_plugins"

#: Each core module's layer; a module may import modules of its own layer or of lower ones.
LAYERS = {
    "api": {
        "tunesmith",
        "tunesmith.errors",
        "tunesmith.options",
        "tunesmith.examples",
        "tunesmith.schema",
        "tunesmith.hf",
        "tunesmith.contexts",
        "tunesmith.components",
        "tunesmith.kinds",
        "tunesmith.hookspecs",
        "tunesmith.peft_method",
        "tunesmith.distributed",
        "tunesmith.parallel",
        "tunesmith.testing.models",
    },
    "engine": {
        "tunesmith.coerce",
        "tunesmith.plugins",
        "tunesmith.plugin_info",
        "tunesmith.registry_cache",
        "tunesmith.config",
        "tunesmith.chat",
        "tunesmith.data",
        "tunesmith.models",
        "tunesmith.training",
        "tunesmith.prepare",
        "tunesmith.streaming",
        "tunesmith.data_checks",
        "tunesmith.evaluation",
        "tunesmith.eval_cache",
        "tunesmith.cache",
        "tunesmith.datastore",
        "tunesmith.mixing",
        "tunesmith.runs",
        "tunesmith.pipeline",
        "tunesmith.rundir",
        "tunesmith.report",
        "tunesmith.manifest",
        "tunesmith.model_card",
        "tunesmith.ui",
        "tunesmith.tracking",
    },
    # The conformance kits drive a component the way the engine does (tokenized rows, rendered examples).
    "kits": {
        "tunesmith.testing",
        "tunesmith.testing.kit",
        "tunesmith.testing.methods",
        "tunesmith.testing.objectives",
        "tunesmith.testing.evaluators",
    },
    "tools": {
        "tunesmith.inference",
        "tunesmith.evaluate_run",
        "tunesmith.compare",
        "tunesmith.starter",
        "tunesmith.launch",
    },
    "face": {"tunesmith.cli", "tunesmith.invocation"},
}
ORDER = ["api", "engine", "kits", "tools", "face"]
#: Deliberate exceptions, each with its reason.
ALLOWED = {
    ("tunesmith", "tunesmith.runs"): "tunesmith.load_run: a public engine service, imported on first use",
}
#: What a built-in (or any plugin) may import from tunesmith: the public contract.
PUBLIC = {"tunesmith", "tunesmith.hf", "tunesmith.testing"}


def module_name(path: Path, package_root: Path, package: str) -> str:
    parts = list(path.relative_to(package_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports (absolute names), wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names}
            found.update(submodules)  # `from pkg import submodule` depends on the submodule
            found.add(module)
    return found


def resolve(found: set[str], modules: set[str]) -> set[str]:
    """Keep the modules among ``found``; a package counts only when a name, not a submodule, came from it."""
    submodules = {m for m in found if m in modules and m.rpartition(".")[0] in found}
    packages = {m.rpartition(".")[0] for m in submodules}
    return {m for m in found if m in modules and (m not in packages or _names_from(m, found, modules))}


def _names_from(package: str, found: set[str], modules: set[str]) -> bool:
    return any(m.rpartition(".")[0] == package and m not in modules for m in found)


def graph(package_root: Path, package: str) -> dict[str, set[str]]:
    modules = {module_name(p, package_root, package): p for p in package_root.rglob("*.py")}
    names = set(modules)
    return {name: resolve(imports(path, name), names) - {name} for name, path in modules.items()}


CORE_GRAPH = graph(CORE, "tunesmith")


def test_every_core_module_has_a_layer():
    placed = set().union(*LAYERS.values())
    assert sorted(set(CORE_GRAPH) - placed) == [], "add new modules to LAYERS (and docs/architecture.md)"
    assert sorted(placed - set(CORE_GRAPH)) == [], "LAYERS names modules that no longer exist"


def test_core_has_no_import_cycles():
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(CORE_GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(CORE_GRAPH):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_each_layer_imports_only_itself_and_the_layers_below():
    layer_of = {m: layer for layer, members in LAYERS.items() for m in members}
    wrong = [
        f"{module} ({layer_of[module]}) imports {target} ({layer_of[target]})"
        for module, targets in sorted(CORE_GRAPH.items())
        for target in sorted(targets)
        if ORDER.index(layer_of[target]) > ORDER.index(layer_of[module]) and (module, target) not in ALLOWED
    ]
    assert wrong == []


def test_core_imports_no_plugin():
    wrong = [
        f"{name}: {m}"
        for path in CORE.rglob("*.py")
        for name in [module_name(path, CORE, "tunesmith")]
        for m in sorted(imports(path, name))
        if m.split(".")[0] == "tunesmith_plugins"
    ]
    assert wrong == []


def test_builtins_use_only_the_public_contract():
    """What a third party can import is all a built-in imports: the contract is complete."""
    wrong = []
    for path in sorted(PLUGINS.rglob("*.py")):
        name = module_name(path, PLUGINS, "tunesmith_plugins")
        for m in sorted(imports(path, name)):
            if m.split(".")[0] != "tunesmith" or m in PUBLIC or m.startswith("tunesmith.testing."):
                continue
            parent = m.rpartition(".")[0]
            if parent in PUBLIC and not (CORE / Path(*m.split(".")[1:])).with_suffix(".py").exists():
                continue  # `from tunesmith import Method`: a name, not a module
            wrong.append(f"{path.relative_to(ROOT)} imports {m}")
    assert wrong == []


def test_the_public_contract_is_exported_at_the_top_level():
    import tunesmith

    missing = [n for n in tunesmith.__all__ if not hasattr(tunesmith, n)]
    assert missing == []
    for kind in tunesmith.KINDS:
        assert kind.base.__name__ in tunesmith.__all__, kind


#: Built-in names that are also words of the contract: example kinds (``Example.kind``) and kinds.
VOCABULARY = {"chat", "text", "preference", "unpaired", "prompt", "reward"}


def builtin_names() -> set[str]:
    from tunesmith.plugins import BUILTIN_DISTRIBUTION, Plugins, entry_point_sources

    plugins = Plugins([s for s in entry_point_sources() if s.distribution == BUILTIN_DISTRIBUTION])
    return {name for kind in plugins.components.values() for name in kind} - VOCABULARY


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_the_engine_names_no_builtin(path):
    """No string in core code is a built-in component's name (docstrings and messages aside)."""
    names = builtin_names()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = [
        f"line {node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
    ]
    assert found == []
