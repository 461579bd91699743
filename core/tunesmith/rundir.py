"""The run directory, written so that a crash never leaves something that looks complete, and owned by
one process at a time.

``run.json`` says ``running`` from the moment the directory exists and ``complete`` only after every
artifact is in place; files are written to a temporary name and renamed; the final model directory is
built as ``final.partial`` and renamed to ``final``. Readers (``eval``, ``merge``, ``--resume``) check
the status before trusting anything inside.

A run holds an exclusive lock on ``RUN/.lock`` (``flock``) for its whole life: ``--overwrite`` and
``--resume`` refuse a directory whose lock is held, naming the process. The operating system releases
the lock when the process ends, however it ends, so a lock is never stale.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import TunesmithError

STATUS_FILE = "run.json"
LOCK_FILE = ".lock"
#: run.json is padded to this size when written, so a status can be rewritten in place on a full disk.
STATUS_RESERVE = 4096


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Files written atomically get the permissions a plain ``open`` would give them (mkstemp makes 0600).
FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), FILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is "no space left" (or over quota)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):  # torch and safetensors re-raise it as RuntimeError
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


class RunDir:
    """One run's directory and its status."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # ----------------------------------------------------------------------------------- creation

    @classmethod
    def create(cls, path: Path, *, overwrite: bool) -> RunDir:
        """A new, empty run directory, locked by this process. Creating it is atomic (``mkdir``, then
        the lock): of two processes starting the same run, one gets it and the other an error."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise TunesmithError(f"{path} exists and is a file, not a run directory; choose another name")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            if not cls._is_empty(path):
                if not overwrite:
                    raise TunesmithError(
                        f"run directory {path} already exists",
                        details=[
                            "pass --overwrite to replace it, --resume to continue it, or choose another name"
                        ],
                    ) from None
                cls._remove(path)
                try:
                    path.mkdir()
                except FileExistsError:
                    raise TunesmithError(
                        f"another process created {path} while it was being replaced"
                    ) from None
        run = cls(path)
        run.lock()  # an empty directory (made by hand, or by a process still starting) is ours only if locked
        try:
            if (path / STATUS_FILE).exists():
                raise TunesmithError(f"another process started a run in {path} at the same time")
            run.set_status("running")
        except BaseException:
            run.unlock()
            raise
        return run

    @staticmethod
    def _is_empty(path: Path) -> bool:
        return all(p.name == LOCK_FILE for p in path.iterdir())

    @classmethod
    def _remove(cls, path: Path) -> None:
        """Delete an old run for ``--overwrite``: only a run directory, and only one no process holds."""
        if not (path / STATUS_FILE).is_file():  # never wipe a folder that is not a run directory
            raise TunesmithError(f"{path} exists and is not a run directory; refusing to overwrite it")
        before = os.stat(path).st_ino
        old = cls(path)
        old.lock()  # refuses a live run
        try:
            if os.stat(path).st_ino != before:
                raise TunesmithError(f"another process replaced {path} at the same time; try again")
            doomed = path.with_name(f".{path.name}.removing-{os.getpid()}")
            os.replace(path, doomed)  # atomic: the name is free at once, the files go after
        except FileNotFoundError:
            raise TunesmithError(f"another process removed {path} at the same time; try again") from None
        finally:
            old.unlock()
        shutil.rmtree(doomed, ignore_errors=True)

    def lock(self) -> None:
        """Hold this run's lock until the process ends (or :meth:`unlock`); refuse a run another
        process holds, naming it."""
        lock_path = self.path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise TunesmithError(
                f"{self.path} is in use by {holder}",
                details=["wait for that run to end (or stop it), or choose another name"],
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        try:  # who holds it, for the message another process shows; best effort (the disk may be full)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        except OSError:
            pass

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def set_status(self, status: str, **extra: Any) -> None:
        """Record the run's status in run.json. A new status drops the previous one's ``error``.

        run.json is padded to :data:`STATUS_RESERVE` bytes; when the disk is full and the atomic write
        fails, the status is rewritten in place in the space already reserved.
        """
        data = {k: v for k, v in self.state().items() if k != "error"}
        data.update(status=status, **extra)
        text = json.dumps(data, indent=2, default=str) + "\n"
        padded = text + " " * max(0, STATUS_RESERVE - len(text.encode()))
        path = self.path / STATUS_FILE
        try:
            write_atomic(path, padded)
        except OSError as exc:
            if not is_disk_full(exc) or not path.is_file():
                raise
            fd = os.open(path, os.O_WRONLY)
            try:  # overwrite the reserved bytes, then cut any longer tail (shrinking needs no space)
                os.pwrite(fd, padded.encode(), 0)
                os.ftruncate(fd, len(padded.encode()))
                os.fsync(fd)
            finally:
                os.close(fd)

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
