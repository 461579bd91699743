"""Paired, interleaved measurement: every contender once per round, in a rotated order, so a slow
moment of a shared machine hits all of them alike; ratios are taken within a round (paired), then
summarised as the median with the min–max over rounds."""

from __future__ import annotations

import os
import statistics
import subprocess
from collections.abc import Callable, Sequence
from typing import Any


def rounds(
    contenders: Sequence[str], measure: Callable[[str], float], n: int, log: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """``measure(name)`` for every contender, ``n`` rounds; round ``r`` starts at contender ``r``."""
    values: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(n):
        order = list(contenders[r % len(contenders) :]) + list(contenders[: r % len(contenders)])
        for name in order:
            values[name].append(measure(name))
        log(f"  round {r + 1}/{n}: " + ", ".join(f"{name} {values[name][-1]:.4g}" for name in contenders))
    return values


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Median and range."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def ratios(values: dict[str, list[float]], baseline: str, digits: int = 3) -> dict[str, dict[str, float]]:
    """Each contender over the baseline, round by round (paired), as :func:`spread`."""
    return {
        name: spread([v / b for v, b in zip(series, values[baseline], strict=True)], digits)
        for name, series in values.items()
        if name != baseline
    }


def child_usage(
    args: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run a command to its end: its exit status, output, wall seconds, and its own CPU seconds (user +
    system) and peak RSS (MiB), read with ``wait4`` so that nothing else the bench started is counted."""
    import tempfile
    import time

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(list(args), env=env, cwd=cwd, stdout=out, stderr=err)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid == child.pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                raise TimeoutError(f"{' '.join(args)} ran over {timeout} s")
            time.sleep(0.002)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": child.returncode,
            "stdout": out.read(),
            "stderr": err.read(),
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        }
