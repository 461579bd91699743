"""The run's experiment trackers, each isolated from the run: one that raises (a server down, a bad URI)
is reported as a warning, recorded, closed as failed and not called again, and training goes on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tunesmith.components import Tracker


class Tracking:
    """Calls every tracker in turn; keeps the failures, as lines for the user and ``metrics.json``."""

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None]) -> None:
        self.active = list(trackers)
        self.warn = warn
        #: One line per tracker that failed: which, in which call, and why.
        self.errors: list[str] = []

    def start(self, config: Mapping[str, Any], run_dir: Path, run_name: str) -> list[str]:
        """Open every tracker's run; returns the lines that say where each one tracks."""
        notes: list[str] = []
        for tracker in list(self.active):
            note = self._call(tracker, "start", tracker.start, config, run_dir.resolve(), run_name)
            if note:
                notes.append(note)
        return notes

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for tracker in list(self.active):
            self._call(tracker, "log", tracker.log, step, dict(metrics))

    def finish(self, metrics: Mapping[str, Any], run_dir: Path) -> None:
        for tracker in list(self.active):
            self._call(tracker, "finish", tracker.finish, metrics, run_dir.resolve())
        self.active = []

    def abort(self, error: str) -> None:
        """The run failed: close every open tracker as failed, ignoring what they raise."""
        for tracker in self.active:
            try:
                tracker.abort(error)
            except Exception:  # noqa: BLE001 - the run's own error is the one to show
                pass
        self.active = []

    def _call(self, tracker: Tracker, stage: str, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
            first_line = (str(exc).strip().splitlines() or [""])[0]
            problem = (
                f"tracker '{tracker.name}' failed in {stage} ({type(exc).__name__}: {first_line}); "
                "it is off for the rest of the run"
            )
            self.errors.append(problem)
            self.warn(problem)
            self.active.remove(tracker)
            try:
                tracker.abort(problem)
            except Exception:  # noqa: BLE001
                pass
            return None


__all__ = ["Tracking"]
