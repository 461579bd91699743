"""The ``trackio`` tracker: the run's config, metrics per step and held-out metrics in a local trackio store."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import Register, Tracker, hookimpl, option


class Trackio(Tracker):
    """Logs the run to trackio, a local experiment tracker: the resolved config, training and validation
    metrics at every logged step, and the held-out metrics of the base and tuned models (logged at the
    last step as `tuned/<split>/<metric>` and `base/<split>/<metric>`).

    trackio keeps one SQLite database per project (`<project>.db`) in `dir`; browse it with
    `trackio show --project <project>` (with `TRACKIO_DIR` set to the same directory). The run
    directory's absolute path is the config key `run_dir`; trackio stores no files of it.
    """

    name = "trackio"
    library = "trackio"
    install = "tunesmith[trackio]"

    @dataclass
    class Config:
        project: str = option("tunesmith", help="trackio project (one database per project)")
        run_name: str | None = option(None, help="trackio run name (default: the run config's name)")
        group: str | None = option(None, help="Group the run belongs to")
        dir: str | None = option(
            None,
            help="Directory of the trackio store (default: $TRACKIO_DIR, else ~/.cache/huggingface/trackio)",
        )

    def start(self, config: Mapping[str, Any], run_dir: Path, run_name: str) -> str:
        store = self._use_store()
        import trackio

        with contextlib.redirect_stdout(io.StringIO()):  # trackio prints a banner; the note below says it
            self.run = trackio.init(
                project=self.config.project,
                name=self.config.run_name or run_name,
                group=self.config.group,
                config={**config, "run_dir": str(run_dir)},
                embed=False,
            )
        self.last_step = 0
        return (
            f"trackio: run '{self.run.name}' in project '{self.config.project}' at {store} "
            f"(trackio show --project {self.config.project})"
        )

    def _use_store(self) -> Path:
        """Point trackio at ``dir``; trackio reads ``TRACKIO_DIR`` once, when it is first imported."""
        if self.config.dir is None:
            if "trackio.utils" in sys.modules:
                return Path(sys.modules["trackio.utils"].TRACKIO_DIR)
            home = Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser()
            return Path(os.environ["TRACKIO_DIR"]) if os.environ.get("TRACKIO_DIR") else home / "trackio"
        store = Path(self.config.dir).expanduser().resolve()
        if "trackio.utils" in sys.modules:
            current = Path(sys.modules["trackio.utils"].TRACKIO_DIR).resolve()
            if current != store:
                raise RuntimeError(
                    f"trackio was already loaded with its store at {current}; set TRACKIO_DIR={store} "
                    "before starting, or leave dir out"
                )
        os.environ["TRACKIO_DIR"] = str(store)
        return store

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.last_step = step
        self.run.log(dict(metrics), step=step)

    def finish(self, metrics: Mapping[str, Any], run_dir: Path) -> None:
        final = self.final_metrics(metrics)
        if final:
            self.run.log(final, step=self.last_step)
        self._close()

    def abort(self, error: str) -> None:
        if getattr(self, "run", None) is not None:
            self._close()

    def _close(self) -> None:
        """Finish the run (flushing its logs); trackio.finish() when it is trackio's current run, so
        trackio does not finish it a second time when the process exits."""
        import trackio
        from trackio import context_vars

        with contextlib.redirect_stdout(io.StringIO()):
            if context_vars.current_run.get() is self.run:
                trackio.finish()
            else:
                self.run.finish()


@hookimpl
def register_trackers(register: Register[Tracker]) -> None:
    register(Trackio)
