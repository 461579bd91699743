"""The run directory cannot be clobbered: one owner at a time, atomic creation, a status that survives
a full disk, honest messages for a full disk or an untrusted checkpoint, ordinary file permissions."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.rundir import FILE_MODE, STATUS_FILE, RunDir, write_atomic


def test_creation_is_atomic_and_a_second_create_is_refused(tmp_path):
    first = RunDir.create(tmp_path / "runs" / "a", overwrite=False)
    with pytest.raises(TunesmithError, match="already exists"):
        RunDir.create(tmp_path / "runs" / "a", overwrite=False)
    first.unlock()


def test_overwrite_cannot_delete_a_live_run(tmp_path):
    """Another process holds the run (it is training): --overwrite is refused, naming that process,
    and nothing of the live run is touched."""
    path = tmp_path / "runs" / "live"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from tunesmith.rundir import RunDir
                run = RunDir.create({str(path)!r}, overwrite=False)
                (run.path / "checkpoint-1").mkdir()
                print("ready", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(TunesmithError, match=f"in use by process {holder.pid}"):
            RunDir.create(path, overwrite=True)
        assert (path / "checkpoint-1").is_dir() and (path / STATUS_FILE).is_file()
    finally:
        holder.communicate("\n", timeout=60)
    # The owner ended (however it ends, the OS releases its lock): now --overwrite may replace it.
    run = RunDir.create(path, overwrite=True)
    assert not (path / "checkpoint-1").exists()
    run.unlock()


def test_resume_refuses_a_live_run(tmp_path):
    from tunesmith.pipeline import _check_resume

    run = RunDir.create(tmp_path / "r", overwrite=False)  # this process holds it
    with pytest.raises(TunesmithError, match="in use by process"):
        _check_resume(run.path, {}, {"data": {}, "tokenizer": ""})
    run.unlock()


def test_overwrite_never_wipes_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("...")
    with pytest.raises(TunesmithError, match="not a run directory"):
        RunDir.create(folder, overwrite=True)
    assert (folder / "thesis.tex").exists()


def test_status_is_written_in_place_when_the_disk_is_full(tmp_path, monkeypatch):
    import tunesmith.rundir as rundir

    run = RunDir.create(tmp_path / "r", overwrite=False)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", full)
    run.set_status("failed", error="no space left")
    assert json.loads((run.path / STATUS_FILE).read_text()) == {"status": "failed", "error": "no space left"}
    run.unlock()


def test_a_new_status_drops_the_old_error(tmp_path):
    run = RunDir.create(tmp_path / "r", overwrite=False)
    run.set_status("failed", error="KeyboardInterrupt")
    run.set_status("running", resumed_from="checkpoint-2")
    run.set_status("complete")
    assert json.loads((run.path / STATUS_FILE).read_text()) == {
        "status": "complete",
        "resumed_from": "checkpoint-2",
    }
    run.unlock()


def test_files_get_ordinary_permissions(tmp_path):
    write_atomic(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == FILE_MODE
    assert FILE_MODE == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_full_disk_is_one_clear_message(tmp_path):
    from tunesmith.pipeline import user_error

    run = RunDir.create(tmp_path / "r", overwrite=False)
    (run.path / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (run.path / "checkpoints" / "checkpoint-4" / "CHECKPOINT_COMPLETE").write_text("ok\n")
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("safetensors write failed") from inner
    except RuntimeError as exc:
        error = user_error(exc, run, None)
    assert error is not None and "no space left on a disk" in error.message
    assert "safetensors write failed" in error.details[0]
    assert "checkpoint-4" in error.details[1] and "--resume" in error.details[1]
    run.unlock()


def test_a_refused_checkpoint_says_it_is_not_trusted(tmp_path):
    from tunesmith.pipeline import user_error

    run = RunDir.create(tmp_path / "r", overwrite=False)
    exc = pickle.UnpicklingError("Weights only load failed ... weights_only=False ...")
    error = user_error(exc, run, str(run.path / "checkpoints" / "checkpoint-2"))
    assert error is not None and "is not trusted" in error.message
    assert "weights_only=False" not in str(error)
    assert user_error(ValueError("a bug"), run, None) is None  # bugs keep their traceback
    run.unlock()


# ------------------------------------------------------------------------------------------- plugins


def test_a_mistyped_plugin_name_in_the_environment_gets_a_did_you_mean(monkeypatch):
    from tunesmith.plugins import Plugins

    monkeypatch.setenv("TUNESMITH_DISABLE_PLUGINS", "lorra")
    warnings = Plugins().warnings
    assert any(
        "TUNESMITH_DISABLE_PLUGINS names 'lorra'" in w and "did you mean 'lora'" in w for w in warnings
    )


def test_a_third_party_component_replacing_a_disabled_builtin_is_named(monkeypatch):
    from dataclasses import dataclass

    from tunesmith import Method, hookimpl
    from tunesmith.plugins import Plugins, PluginSource, entry_point_sources

    class MyLora(Method):
        """Not the built-in."""

        name = "lora"

        @dataclass
        class Config:
            pass

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(MyLora)

    monkeypatch.setenv("TUNESMITH_DISABLE_PLUGINS", "lora")
    sources = [*entry_point_sources(), PluginSource("acme", "acme-dist", "1.0", "acme", load=Plugin)]
    plugins = Plugins(sources)
    assert plugins.get("method", "lora") is MyLora
    assert any("method 'lora' comes from plugin 'acme'" in w and "built-in" in w for w in plugins.warnings)
