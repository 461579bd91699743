"""Shared fixtures: a tiny random Llama saved on disk, and small task data, built once per session."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny Llama + the byte-level tokenizer, saved like a hub model."""
    from tunesmith.testing.models import build_random_model, build_tokenizer

    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tokenizer()
    build_random_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def upper_task(n: int, seed: int) -> list[dict]:
    """A tiny alpaca task (upper-case a short word): learnable, but only the pipeline matters here."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 5))) for _ in range(n)]
    return [{"instruction": "Upper-case the word.", "input": w, "output": w.upper()} for w in words]


@pytest.fixture
def run_config(tmp_path, tiny_model_dir):
    """Writes a small run config (tiny random model, upper-case task) and returns its path."""

    def make(**overrides) -> Path:
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        write_jsonl(data_dir / "train.jsonl", upper_task(48, seed=1))
        write_jsonl(data_dir / "test.jsonl", upper_task(8, seed=2))
        config = {
            "name": "t",
            "output_dir": str(tmp_path / "runs" / "{name}"),
            "model": {"path": str(tiny_model_dir)},
            "data": {
                "train": {"name": "jsonl", "path": str(data_dir / "train.jsonl")},
                "test": {"name": "jsonl", "path": str(data_dir / "test.jsonl")},
                "max_length": 128,
            },
            "method": {"name": "lora", "r": 4, "alpha": 8},
            "training": {"max_steps": 6, "batch_size": 4, "logging_steps": 2, "save_steps": 3},
            "evaluation": {"max_new_tokens": 8},
        }
        for key, value in overrides.items():
            section, _, field = key.partition("__")
            if field:
                config.setdefault(section, {})[field] = value
            else:
                config[section] = value
        path = tmp_path / "run.yaml"
        import yaml

        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    return make
