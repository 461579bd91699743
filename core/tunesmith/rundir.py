"""The run directory, written so that a crash never leaves something that looks complete.

``run.json`` says ``running`` from the moment the directory exists and ``complete`` only after every
artifact is in place; files are written to a temporary name and renamed; the final model directory is
built as ``final.partial`` and renamed to ``final``. Readers (``eval``, ``merge``, ``--resume``) check
the status before trusting anything inside.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import TunesmithError

STATUS_FILE = "run.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


class RunDir:
    """One run's directory and its status."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # ----------------------------------------------------------------------------------- creation

    @classmethod
    def create(cls, path: Path, *, overwrite: bool) -> RunDir:
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise TunesmithError(
                    f"run directory {path} already exists",
                    details=[
                        "pass --overwrite to replace it, --resume to continue it, or choose another name"
                    ],
                )
            if not (path / STATUS_FILE).is_file():  # never wipe a folder that is not a run directory
                raise TunesmithError(f"{path} exists and is not a run directory; refusing to overwrite it")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.set_status("running")
        return run

    def set_status(self, status: str, **extra: Any) -> None:
        data = {**self.state(), "status": status, **extra}
        write_json(self.path / STATUS_FILE, data)

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / STATUS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @property
    def status(self) -> str:
        return self.state().get("status", "missing")

    # ------------------------------------------------------------------------------------- reading

    @classmethod
    def open_complete(cls, path: Path) -> RunDir:
        """A finished run, or an error saying why this directory is not one."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise TunesmithError(f"no run directory at {path}")
        if run.status != "complete":
            raise TunesmithError(
                f"{path} is not a complete run (status: {run.status})",
                details=[
                    "a run that stopped early can be continued with: tunesmith run --resume " + str(path)
                ],
            )
        return run

    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8"))

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))

    @property
    def final(self) -> Path:
        return self.path / "final"

    # ---------------------------------------------------------------------------------- artifacts

    def write_config(self, config: dict[str, Any]) -> None:
        write_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def save_final(self, save: Any) -> Path:
        """Call ``save(directory)`` into ``final.partial``, then rename it to ``final``."""
        partial = self.path / "final.partial"
        if partial.exists():
            shutil.rmtree(partial)
        save(str(partial))
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(partial, self.final)
        return self.final
