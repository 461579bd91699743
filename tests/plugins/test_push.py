"""``tunesmith push``, up to the network: huggingface_hub's own offline mode (what ``HF_HUB_OFFLINE=1``
switches on) must come out as a clear error, after the folder was found complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard
from test_export_gguf import cli_with_export

from tunesmith import TunesmithError
from tunesmith_plugins.export.hub import missing_files, push_folder


@pytest.fixture
def offline(monkeypatch):
    """The hub switched off the way HF_HUB_OFFLINE=1 does it (read once when huggingface_hub loads)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def complete_folder(path: Path) -> Path:
    path.mkdir()
    for name in ("README.md", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (path / name).write_text("---\nlibrary_name: transformers\n---\n" if name == "README.md" else "{}")
    return path


def test_an_incomplete_folder_is_named_and_refused(tmp_path):
    folder = complete_folder(tmp_path / "m")
    assert missing_files(folder) == []
    (folder / "README.md").unlink()
    (folder / "tokenizer.json").unlink()
    assert missing_files(folder) == [
        "README.md (the model card)",
        "the tokenizer (tokenizer_config.json with tokenizer.json)",
    ]
    with pytest.raises(TunesmithError, match="not ready to publish"):
        push_folder(folder, "me/model", private=False, token=None, message="m")


def test_offline_hub_is_a_clear_error(tmp_path, offline):
    with pytest.raises(TunesmithError) as info:
        push_folder(complete_folder(tmp_path / "m"), "me/model", private=True, token="hf_x", message="m")
    assert "HF_HUB_OFFLINE" in info.value.message
    assert any("network" in line for line in info.value.details)


@pytest.mark.slow
def test_push_of_a_run_stops_at_the_network_with_a_complete_folder(tmp_path, run_config, offline):
    group, registry = cli_with_export()
    runner = CliRunner()
    assert runner.invoke(group, ["run", str(run_config())], obj=registry).exit_code == 0
    run = tmp_path / "runs" / "t"

    final = run / "final"
    assert missing_files(final) == []  # what would be uploaded: card, weights, tokenizer
    card = ModelCard.load(final / "README.md")
    assert card.data.library_name == "peft" and (final / "adapter_model.safetensors").is_file()
    for args in ([], ["--merged"]):
        result = runner.invoke(group, ["push", str(run), "me/tiny-test", "--private", *args], obj=registry)
        assert result.exit_code == 2, result.output
        assert "cannot push" in result.output and "HF_HUB_OFFLINE" in result.output
        assert "Traceback" not in result.output
    assert (run / "merged" / "config.json").is_file()  # --merged merged the run once, into RUN/merged

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "final" / "README.md").unlink()
    result = runner.invoke(group, ["push", str(broken), "me/tiny-test"], obj=registry)
    assert result.exit_code == 2 and "lacks README.md" in result.output
