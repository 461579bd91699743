"""Using finished runs: merge, generate and chat, and switching adapters on one base model."""

from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

from tunesmith.cli import cli as group
from tunesmith.plugins import Plugins

pytestmark = pytest.mark.slow


def cli(*args: str, input: str | None = None):
    return CliRunner().invoke(group, list(args), obj=Plugins(), input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    """Two LoRA runs of the same base, trained differently (different learning rates)."""
    import yaml
    from conftest import upper_task, write_jsonl

    root = tmp_path_factory.mktemp("inference")
    write_jsonl(root / "train.jsonl", upper_task(32, seed=1))
    runs = []
    for name, lr in (("alpha", 1e-2), ("beta", 3e-3)):
        config = {
            "name": name,
            "output_dir": str(root / "runs" / "{name}"),
            "model": {"path": str(tiny_model_dir)},
            "data": {"train": {"name": "jsonl", "path": str(root / "train.jsonl")}, "max_length": 64},
            "method": {"name": "lora", "r": 4},
            "evaluators": [],
            "training": {"max_steps": 4, "batch_size": 4, "learning_rate": lr},
        }
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = cli("run", str(path))
        assert result.exit_code == 0, result.output
        runs.append(root / "runs" / name)
    return runs


def reference_answer(run_dir, base_dir, prompt: str) -> str:
    """What plain transformers + PEFT answer, greedy, for one user prompt."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "final")
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir), run_dir / "final"
    ).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_generate_switches_adapters_by_name(two_runs, tiny_model_dir):
    alpha, beta = two_runs
    answers = {}
    for name in ("alpha", "beta"):
        result = cli(
            "generate", str(alpha), str(beta), "--adapter", name, "-p", "abc", "--max-new-tokens", "6"
        )
        assert result.exit_code == 0, result.output
        answers[name] = result.stdout.strip()
    assert answers["alpha"] == reference_answer(alpha, tiny_model_dir, "abc")
    assert answers["beta"] == reference_answer(beta, tiny_model_dir, "abc")
    assert answers["alpha"] != answers["beta"]


def test_chat_reads_turns_and_switches_adapter(two_runs):
    alpha, beta = two_runs
    result = cli(
        "chat",
        str(alpha),
        str(beta),
        "--max-new-tokens",
        "4",
        input="hello\n/adapters\n/adapter beta\nhello\n/adapter nope\n/exit\n",
    )
    assert result.exit_code == 0, result.output
    assert "alpha, beta, base" in result.output
    assert "beta>" in result.output and "no adapter named 'nope'" in result.output


def test_merge_gives_a_plain_model_with_the_same_logits(two_runs, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    alpha, _ = two_runs
    out = tmp_path / "merged"
    result = cli("merge", str(alpha), "-o", str(out))
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), alpha / "final"
    ).eval()
    ids = torch.tensor([[1, 4, 80, 81, 82, 2, 5]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft(ids).logits, atol=1e-5, rtol=0)
    assert cli("merge", str(alpha), "-o", str(out)).exit_code == 2  # refuses to overwrite


def test_unfinished_runs_are_refused(two_runs, tmp_path):
    alpha, _ = two_runs
    broken = tmp_path / "broken"
    shutil.copytree(alpha, broken)
    (broken / "run.json").write_text('{"status": "running"}')
    for args in (
        ("merge", str(broken), "-o", str(tmp_path / "m")),
        ("generate", str(broken), "-p", "x"),
        ("eval", str(broken)),
    ):
        result = cli(*args)
        assert result.exit_code == 2 and "not a complete run" in result.output
