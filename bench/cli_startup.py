"""CLI start-up: CPU seconds of each command against the import floor ``python -c "import click, rich,
pluggy"`` and against ``trl sft --help``.

Every process starts fresh; its own CPU time (user + system, from ``wait4``) is what counts, so other
load on the machine matters less than for wall time. Python's bytecode is cached in a temporary
``PYTHONPYCACHEPREFIX`` (as after a normal install, where ``.pyc`` files exist) and the registry cache
lives in a temporary ``TUNESMITH_CACHE``, warmed by one run of each command before the rounds; the
cold figure (first run, empty registry cache) is reported beside them.

    .venv/bin/python bench/run.py cli [--quick]

To compare with another version of the code, unpack it somewhere and name it: its commands join the
rounds as ``before: ...`` (same interpreter and packages, its ``core`` and ``plugins`` first on
``PYTHONPATH``):

    git archive COMMIT core plugins | tar -x -C /tmp/before
    CLI_BENCH_BEFORE=/tmp/before .venv/bin/python bench/run.py cli
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from paired import child_usage, ratios, rounds, spread

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

COMMANDS = {
    "floor": [sys.executable, "-c", "import click, rich, pluggy"],
    "--help": [str(BIN / "tunesmith"), "--help"],
    "plugins list": [str(BIN / "tunesmith"), "plugins", "list"],
    "plugins show lora": [str(BIN / "tunesmith"), "plugins", "show", "lora"],
    "run --help": [str(BIN / "tunesmith"), "run", "--help"],
}
TRL = {"trl sft --help": [str(BIN / "trl"), "sft", "--help"]}


def run(quick: bool) -> dict[str, Any]:
    n = 5 if quick else 11
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(TUNESMITH_CACHE=str(Path(tmp) / "cache"), PYTHONPYCACHEPREFIX=str(Path(tmp) / "pyc"))
        commands = {**COMMANDS, **TRL}
        envs = {name: env for name in commands}
        before = os.environ.get("CLI_BENCH_BEFORE")
        if before:
            old = {**env, "PYTHONPATH": os.pathsep.join([f"{before}/core", f"{before}/plugins"])}
            old["TUNESMITH_CACHE"] = str(Path(tmp) / "cache-before")
            for name, command in list(COMMANDS.items())[1:]:
                commands[f"before: {name}"], envs[f"before: {name}"] = command, old

        def cpu(name: str) -> float:
            done = child_usage(commands[name], env=envs[name], cwd=str(ROOT))
            if done["returncode"] != 0:
                raise RuntimeError(f"{name} failed: {done['stderr'][-2000:]}")
            return done["cpu"]

        contenders = [name for name in commands if name not in TRL]
        cold = {name: cpu(name) for name in contenders}  # empty registry cache, bytecode compiled
        print(f"CLI start-up: {n} rounds, CPU seconds per process")
        values = rounds(contenders, cpu, n)
        # trl takes seconds per start: fewer rounds, still paired with the floor and `run --help`
        cpu("trl sft --help")  # compiles its bytecode
        trl = rounds(["floor", "run --help", "trl sft --help"], cpu, max(3, n // 3))
    return {
        "rounds": n,
        "cpu_seconds": {name: spread(series, 4) for name, series in values.items()},
        "vs_floor": ratios(values, "floor"),
        "cold_cpu_seconds": {name: round(value, 4) for name, value in cold.items()},
        "trl_sft_help_vs_run_help": ratios(trl, "run --help")["trl sft --help"],
        "trl_cpu_seconds": spread(trl["trl sft --help"], 3),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, dict[str, float], str]]:
    """(measure, ratio spread, target) for the summary table."""
    out = [
        (f"cli: {name} / import floor", r, "(earlier code)" if name.startswith("before:") else "<= 1.5")
        for name, r in result["vs_floor"].items()
    ]
    out.append(("cli: trl sft --help / run --help", result["trl_sft_help_vs_run_help"], "(info)"))
    return out
