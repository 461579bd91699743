"""What every conformance kit shares: check results, running checks, and pytest integration.

A kit is a :class:`Kit` subclass with a ``checks`` tuple and one ``check_<name>`` method per check;
each returns a detail line or raises :class:`CheckFailed` (it does not conform) or
:class:`CheckSkipped` (it does not apply).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``status`` is passed, failed, skipped or xfailed."""

    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        """False only for a failed check (a skipped or expected failure is not a failure)."""
        return self.status != "failed"


class CheckFailed(AssertionError):
    """A check found the method does not conform; the message says what was measured."""


class CheckSkipped(Exception):
    """A check does not apply to this method; the message says why."""


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Kit:
    """What every kit shares: the work directory, running checks, collecting results, caching."""

    checks: tuple[str, ...] = ()
    what: str = "component"

    def __init__(self, settings: Any, workdir: str | Path | None) -> None:
        self.settings = settings
        self._own_dir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"tunesmith-{self.what}-kit-") if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, Any] = {}
        self._serial = 0

    def close(self) -> None:
        self._cache.clear()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def fresh_dir(self, stem: str) -> Path:
        """A new, not yet existing path in the work directory."""
        self._serial += 1
        return self.workdir / f"{stem}-{self._serial}"

    def run(self, name: str) -> str:
        """Run one check: returns its detail, raises :class:`CheckFailed` or :class:`CheckSkipped`."""
        if name not in self.checks:
            raise ValueError(f"unknown check '{name}'; the checks are: {', '.join(self.checks)}")
        import torch

        saved = torch.get_num_threads()
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        try:
            return getattr(self, f"check_{name}")()
        finally:
            torch.set_num_threads(saved)

    def results(
        self,
        checks: Iterable[str] | None = None,
        *,
        skip: Mapping[str, str] | None = None,
        xfail: Mapping[str, str] | None = None,
    ) -> list[CheckResult]:
        """Run ``checks`` (all by default) and collect a :class:`CheckResult` for each."""
        skip, xfail = dict(skip or {}), dict(xfail or {})
        names = list(self.checks if checks is None else checks)
        unknown = sorted((set(names) | set(skip) | set(xfail)) - set(self.checks))
        if unknown:
            raise ValueError(
                f"unknown check(s) {', '.join(unknown)}; the checks are: {', '.join(self.checks)}"
            )
        out = []
        for name in names:
            if name in skip:
                out.append(CheckResult(name, "skipped", skip[name]))
                continue
            try:
                status, detail = "passed", self.run(name)
            except CheckSkipped as exc:
                status, detail = "skipped", str(exc)
            except Exception as exc:  # noqa: BLE001 - a crashing component fails the check, with the error
                status = "failed"
                detail = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}"
            if name in xfail:
                if status == "failed":
                    status, detail = "xfailed", f"{xfail[name]} ({detail})"
                elif status == "passed":
                    status, detail = "failed", f"expected to fail ({xfail[name]}) but passed: {detail}"
            out.append(CheckResult(name, status, detail))
        return out

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()`` once; its value, or the exception it raised, is shared by every later call."""
        if key not in self._cache:
            try:
                self._cache[key] = build()
            except Exception as exc:
                self._cache[key] = _Raised(exc)
        value = self._cache[key]
        if isinstance(value, _Raised):
            raise value.exc
        return value


def format_results(results: Iterable[CheckResult]) -> str:
    """One line per check: status, name, detail."""
    return "\n".join(f"{r.status.upper():8} {r.name:21} {r.detail}" for r in results)


def pytest_check(cls: Any, kit: Kit, name: str, label: str) -> None:
    """Run check ``name`` as a pytest test: skip, xfail (strict) or fail with the check's message."""
    import pytest

    if name in cls.skip:
        pytest.skip(cls.skip[name])
    label = f"{label}, check '{name}'"
    failure = None
    try:
        detail = kit.run(name)
    except CheckSkipped as exc:
        pytest.skip(f"{label}: {exc}")
    except CheckFailed as exc:
        failure = str(exc)
    except Exception as exc:
        if name in cls.xfail:
            pytest.xfail(f"{cls.xfail[name]} ({type(exc).__name__}: {exc})")
        raise
    if failure is not None:  # outside the except block: no chained traceback in the report
        if name in cls.xfail:
            pytest.xfail(f"{cls.xfail[name]} ({failure})")
        pytest.fail(f"{label} failed: {failure}", pytrace=False)
    if name in cls.xfail:
        pytest.fail(f"{label} is marked xfail ({cls.xfail[name]}) but passed: {detail}", pytrace=False)


__all__ = ["CheckFailed", "CheckResult", "CheckSkipped", "Kit", "format_results", "pytest_check"]
