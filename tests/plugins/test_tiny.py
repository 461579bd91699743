"""The built-in tiny model: deterministic, cached atomically, and reloadable offline with Auto classes."""

import json
import os

import pytest

torch = pytest.importorskip("torch")

from tunesmith.testing import models as random_tiny  # noqa: E402
from tunesmith_plugins.models import tiny  # noqa: E402

STEPS = 2  # enough to exercise the build path without the full one-off pre-training


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.ensure_tiny_model(tmp_path_factory.mktemp("cache"), pretrain_steps=STEPS)


def test_tokenizer_is_deterministic_and_byte_level():
    a, b = random_tiny.build_tokenizer(), random_tiny.build_tokenizer()
    text = "Hello, wörld 2023-04-17"
    assert a(text)["input_ids"] == b(text)["input_ids"]
    assert len(a(text, add_special_tokens=False)["input_ids"]) == len(text.encode("utf-8"))
    assert a.decode(a(text)["input_ids"]) == text


def test_chat_template_round_trip():
    tok = random_tiny.build_tokenizer()
    messages = [
        {"role": "user", "content": "Rewrite the date in US format.\n2023-04-17"},
        {"role": "assistant", "content": "04/17/2023"},
    ]
    full = tok.apply_chat_template(messages, tokenize=False)
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert full == prompt + "04/17/2023<|end|>"
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.decode(ids) == full


def test_random_model_is_deterministic_from_seed():
    tok = random_tiny.build_tokenizer()
    a, b, c = (random_tiny.build_random_model(tok, seed=s) for s in (0, 0, 1))
    ids = torch.tensor([[1, 10, 20, 30]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
        assert not torch.equal(a(ids).logits, c(ids).logits)


def test_build_writes_marker_and_description(built):
    assert tiny.is_complete(built)
    info = json.loads((built / tiny.INFO_FILE).read_text())
    assert info["pretraining"]["steps"] == STEPS and info["parameters"] > 0
    assert info["sizes"]["vocab_size"] == len(random_tiny.build_tokenizer())
    assert not [
        p for p in built.parent.iterdir() if p.name.startswith(".") and p.suffix != ".lock"
    ]  # no temp dirs


def test_reload_with_auto_classes_is_identical(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, fresh = AutoTokenizer.from_pretrained(built), random_tiny.build_tokenizer()
    text = "Copy: ab12 -> ab12 <|end|>"
    assert tok(text)["input_ids"] == fresh(text)["input_ids"]
    assert (tok.eos_token_id, tok.pad_token_id, tok.chat_template) == (
        fresh.eos_token_id,
        fresh.pad_token_id,
        fresh.chat_template,
    )
    model = AutoModelForCausalLM.from_pretrained(built)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    again = AutoModelForCausalLM.from_pretrained(built)
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_cached_dir_is_reused(built, monkeypatch):
    monkeypatch.setattr(tiny, "_build", lambda *a, **k: pytest.fail("rebuilt a cached model"))
    assert tiny.ensure_tiny_model(built.parent, pretrain_steps=STEPS) == built


def test_incomplete_dir_is_rebuilt(tmp_path):
    target = tmp_path / f"{tiny.VERSION}-steps1"
    target.mkdir()
    (target / "config.json").write_text("{}")  # interrupted: no marker
    assert not tiny.is_complete(target)
    assert tiny.ensure_tiny_model(tmp_path, pretrain_steps=1) == target
    assert tiny.is_complete(target)


def test_losing_a_race_uses_the_winners_dir(tmp_path, monkeypatch):
    real_build = tiny._build

    def racing_build(out, steps, log):  # another process finishes first, while we are building
        winner = tmp_path / f"{tiny.VERSION}-steps1"
        real_build(tmp_path / "winner", steps, log)
        os.replace(tmp_path / "winner", winner)
        real_build(out, steps, log)

    monkeypatch.setattr(tiny, "_build", racing_build)
    messages = []
    path = tiny.ensure_tiny_model(tmp_path, pretrain_steps=1, log=messages.append)
    assert tiny.is_complete(path) and any("another process" in m for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [path.name]


def test_two_processes_share_one_build(tmp_path):
    """Started together on one cache, two processes build the model once: one builds under the lock,
    the other waits (or finds it done) and uses the same directory; no temporary directory is left."""
    import subprocess
    import sys

    script = (
        "from tunesmith_plugins.models.tiny import ensure_tiny_model\n"
        "print('RESULT', ensure_tiny_model(pretrain_steps=20, log=print), flush=True)\n"
    )
    env = {**os.environ, "TUNESMITH_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    builds = sum(o.count("pre-training the tiny base model for") for o in outputs)
    assert builds == 1, outputs
    results = {line for o in outputs for line in o.splitlines() if line.startswith("RESULT")}
    assert len(results) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        f"{tiny.VERSION}-steps20"
    ]


def test_a_killed_builds_temporary_directory_is_removed(tmp_path):
    stale = tmp_path / f".{tiny.VERSION}-steps1.tmp-dead"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    path = tiny.ensure_tiny_model(tmp_path, pretrain_steps=1)
    assert tiny.is_complete(path) and not stale.exists()


def test_progress_says_how_long_is_left(tmp_path):
    messages = []
    tiny.ensure_tiny_model(tmp_path, pretrain_steps=12, log=messages.append)
    progress = [m for m in messages if "s to go" in m]
    assert progress and progress[0].startswith("pre-training the tiny model: step 10/12")


def test_the_shipped_weights_are_the_default_and_complete():
    shipped = tiny.shipped_model_dir()
    assert tiny.is_complete(shipped), "models/tiny-v3 is missing: run `make tiny-weights`"
    assert tiny.ensure_tiny_model() == shipped
    info = json.loads((shipped / tiny.INFO_FILE).read_text())
    assert info["name"] == tiny.VERSION and info["pretraining"]["steps"] == tiny.PRETRAIN_STEPS


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    assert tiny.default_cache_dir() == tmp_path


def test_build_prints_nothing(tmp_path, capfd):
    tiny.ensure_tiny_model(tmp_path, pretrain_steps=1)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_pretraining_corpus_is_deterministic():
    import random

    a, b = tiny.pretraining_documents(random.Random(3)), tiny.pretraining_documents(random.Random(3))
    assert [next(a) for _ in range(50)] == [next(b) for _ in range(50)]


def test_demo_splits_are_disjoint():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples" / "dates"
    splits = {n: [json.loads(x) for x in open(root / f"{n}.jsonl")] for n in ("train", "validation", "test")}
    inputs = {n: {r["input"] for r in rows} for n, rows in splits.items()}
    assert not inputs["test"] & inputs["train"] and not inputs["test"] & inputs["validation"]
    assert len(splits["test"]) == 100 and all(
        set(r) == {"instruction", "input", "output"} for r in splits["test"]
    )


def test_data_check_needs_no_model_build(tmp_path, monkeypatch):
    """Without shipped weights or a cache, the tokenizer alone is built (milliseconds): data checks and
    data errors never wait for pre-training."""
    monkeypatch.setattr(tiny, "shipped_model_dir", lambda: tmp_path / "not-shipped")
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tiny, "_build", lambda *a, **k: pytest.fail("pre-trained a model for a tokenizer"))
    path = tiny.TinyModel().tokenizer_path(print)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(path).chat_template == random_tiny.CHAT_TEMPLATE
