"""Publishing a finished run's model folder to the Hugging Face hub (``huggingface_hub``), and checking it first.

The folder is the run's ``final/`` (an adapter, or a whole model for full fine-tuning) or a merged model;
either way it must hold what makes a usable repository: the model card, the weights and the tokenizer.
Pushing needs network access and a token with write access (``hf auth login`` or ``HF_TOKEN``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith import TunesmithError

CARD = "README.md"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def missing_files(folder: Path) -> list[str]:
    """What a hub-ready model folder lacks: the model card, weights, a tokenizer."""
    missing = []
    if not (folder / CARD).is_file():
        missing.append(f"{CARD} (the model card)")
    if not any(folder.glob("*.safetensors")):
        missing.append("*.safetensors (the weights)")
    if (
        not any((folder / name).is_file() for name in TOKENIZER_FILES)
        or not (folder / "tokenizer_config.json").is_file()
    ):
        missing.append("the tokenizer (tokenizer_config.json with tokenizer.json)")
    return missing


def check_folder(folder: Path) -> None:
    missing = missing_files(folder)
    if missing:
        raise TunesmithError(
            f"{folder} is not ready to publish: it lacks {', '.join(missing)}",
            details=["runs completed by this version of tunesmith write all of them into final/"],
        )


def push_folder(folder: Path, repo_id: str, *, private: bool, token: str | None, message: str) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    check_folder(folder)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit: Any = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=message
        )
    except OfflineModeIsEnabled as exc:
        raise TunesmithError(
            "cannot push: the Hugging Face hub is switched off here (HF_HUB_OFFLINE is set)",
            details=[
                str(exc).splitlines()[0],
                "pushing needs network access: unset HF_HUB_OFFLINE and retry",
            ],
        ) from None
    except LocalTokenNotFoundError:
        raise TunesmithError(
            "cannot push: no Hugging Face token",
            details=["log in with `hf auth login`, set HF_TOKEN, or pass --token"],
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = (
            "the token lacks write access to this repository (or the namespace is not yours)"
            if status in (401, 403)
            else "the hub refused the upload"
        )
        raise TunesmithError(
            f"cannot push to {repo_id}: {hint}", details=[str(exc).splitlines()[0]]
        ) from None
    except OSError as exc:  # no network: connection refused, DNS failure, timeouts
        raise TunesmithError(
            f"cannot push to {repo_id}: the hub could not be reached",
            details=[
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                "pushing needs network access",
            ],
        ) from None
    return str(getattr(commit, "commit_url", commit))
