"""Real chat templates of twelve model families: loss masking, system and EOS policies, thinking,
stop tokens, and a run plus ``generate`` on a random model of each architecture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from families import FAMILIES, TEMPLATE_FAMILIES, build_model, build_tokenizer, save_family

from tunesmith import Example, InvalidRecord
from tunesmith.chat import ChatFormat, ChatPolicy
from tunesmith.data import IGNORE_INDEX, tokenize_example, trained_segments
from tunesmith.evaluation import to_eval_examples

SYSTEM, USER1, USER2 = "SYS-PROMPT", "USER-ONE", "USER-TWO"
ANSWER1, ANSWER2 = "ANSWER-ONE", "ANSWER-TWO"


def conversation(system: bool = True, answer2: str = ANSWER2) -> list[dict[str, str]]:
    turns = [
        {"role": "user", "content": USER1},
        {"role": "assistant", "content": ANSWER1},
        {"role": "user", "content": USER2},
        {"role": "assistant", "content": answer2},
    ]
    return [{"role": "system", "content": SYSTEM}, *turns] if system else turns


_tokenizers: dict[str, Any] = {}


def tokenizer_of(name: str) -> Any:
    if name not in _tokenizers:
        _tokenizers[name] = build_tokenizer(FAMILIES[name])
    return _tokenizers[name]


def trained_pieces(tokenized: list[Any], tok: Any) -> list[str]:
    return [text for t in tokenized for text, trained in trained_segments(t, tok) if trained]


@pytest.mark.parametrize("name", TEMPLATE_FAMILIES)
def test_every_assistant_turn_is_trained_after_the_prompt_inference_sees(name: str) -> None:
    family, tok = FAMILIES[name], tokenizer_of(name)
    messages = conversation(system=family.system_role)
    chat = ChatFormat(tok)
    sequences = chat.sequences(messages)

    # Each trained span follows exactly the generation prompt of the turns before it.
    prompts = {}
    for seq in sequences:
        for start, end in seq.spans:
            prompts[seq.text[start:end].strip()[: len(ANSWER1)]] = seq.text[:start]
    assert set(prompts) == {ANSWER1, ANSWER2}
    system = int(family.system_role)
    assert prompts[ANSWER1] == chat.prompt(messages[: 1 + system])
    assert prompts[ANSWER2] == chat.prompt(messages[: 3 + system])

    # Token level: trained tokens are the answers and their end-of-turn, nothing of user or system.
    tokenized = tokenize_example(Example(messages=messages, origin="c.jsonl:1"), tok, max_length=512)
    pieces = trained_pieces(tokenized, tok)
    trained = "".join(pieces)
    assert trained.count(ANSWER1) == 1 and trained.count(ANSWER2) == 1
    assert USER1 not in trained and USER2 not in trained and SYSTEM not in trained
    assert all(piece.rstrip().endswith((family.turn_end, family.eos)) for piece in pieces), pieces
    if family.turn_end != family.eos:  # Gemma, Phi-3: no extra EOS after the template's end-of-turn
        assert trained.count(family.eos) <= 1
    assert sorted(tok.decode(t.input_ids) for t in tokenized) == sorted(s.text for s in sequences)
    assert all(t.labels[0] == IGNORE_INDEX for t in tokenized)


@pytest.mark.parametrize("name", ["gemma-2", "mixtral"])
def test_system_message_policy_for_templates_without_a_system_role(name: str) -> None:
    tok = tokenizer_of(name)
    messages = conversation(system=True)
    with pytest.raises(InvalidRecord, match="system_message to merge or drop"):
        ChatFormat(tok).sequences(messages)
    merged = ChatFormat(tok, ChatPolicy(system_message="merge")).sequences(messages)
    assert f"{SYSTEM}\n\n{USER1}" in merged[0].text and merged[0].text.count(SYSTEM) == 1
    dropped = ChatFormat(tok, ChatPolicy(system_message="drop")).sequences(messages)
    assert all(SYSTEM not in s.text for s in dropped) and len(dropped[0].spans) == 2


def test_eos_policy_on_gemma() -> None:
    tok = tokenizer_of("gemma-3")
    messages = conversation()
    auto = ChatFormat(tok).sequences(messages)[0]
    assert auto.text == tok.apply_chat_template(messages, tokenize=False)  # exactly what the template renders
    always = ChatFormat(tok, ChatPolicy(eos="always")).sequences(messages)[0]
    assert [always.text[a:b] for a, b in always.spans] == [
        f"{ANSWER1}<end_of_turn>\n<eos>",
        f"{ANSWER2}<end_of_turn>\n<eos>",
    ]
    template = ChatFormat(tok, ChatPolicy(eos="template")).sequences(messages)[0]
    assert template.text == auto.text


def test_eos_is_added_where_a_template_ends_turns_with_plain_text() -> None:
    tok = build_tokenizer(FAMILIES["llama-3.1"])
    tok.chat_template = (
        "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n\n{% endfor %}"
        "{% if add_generation_prompt %}### assistant:\n{% endif %}"
    )
    seq = ChatFormat(tok).sequences(conversation(system=False))[0]
    assert [seq.text[a:b] for a, b in seq.spans] == [f"{ANSWER1}\n\n<|eot_id|>", f"{ANSWER2}\n\n<|eot_id|>"]


@pytest.mark.parametrize("name", TEMPLATE_FAMILIES)
def test_generation_stops_at_every_end_of_turn_the_family_declares(name: str) -> None:
    family, tok = FAMILIES[name], tokenizer_of(name)
    model = build_model(family, tok)
    stops = ChatFormat(tok).stop_token_ids(model)
    wanted = {tok.eos_token, family.turn_end, *family.generation_eos}
    assert set(tok.convert_ids_to_tokens(stops)) == wanted


# ------------------------------------------------------------------------------------------ thinking


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1-distill"])
def test_no_reasoning_means_an_empty_think_block_in_the_prompt_never_trained(name: str) -> None:
    tok = tokenizer_of(name)
    messages = conversation(system=False)[:2]
    [seq] = ChatFormat(tok).sequences(messages)
    [(start, end)] = seq.spans
    assert seq.text[start:end].startswith(ANSWER1)
    assert seq.text[:start].endswith("<think>\n\n</think>\n\n")
    evaluation = to_eval_examples([Example(messages=messages)], tok)[0]
    assert evaluation.prompt == seq.text[:start] and evaluation.reference == ANSWER1


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1-distill"])
@pytest.mark.parametrize("form", ["inline", "field"])
def test_reasoning_is_trained_as_the_template_renders_it(name: str, form: str) -> None:
    tok = tokenizer_of(name)
    if form == "inline":
        last = {"role": "assistant", "content": "<think>\nREASON\n</think>\n\nANSWER"}
    else:
        last = {"role": "assistant", "content": "ANSWER", "reasoning": "REASON"}
    messages = [{"role": "user", "content": USER1}, last]
    chat = ChatFormat(tok)
    [seq] = chat.sequences(messages)
    [(start, end)] = seq.spans
    target = seq.text[start:end]
    # Qwen3's prompt ends "assistant\n" (the think block is trained); R1's forces "<think>\n" open.
    assert target.split("<think>\n")[-1].startswith("REASON\n</think>\n\nANSWER")
    assert (seq.text[:start] + target).count("<think>") == 1
    evaluation = to_eval_examples([Example(messages=messages)], tok)[0]
    assert evaluation.reference == "ANSWER" and evaluation.prompt == seq.text[:start]
    # thinking: off drops the reasoning and trains the answer after an empty think block.
    [off] = ChatFormat(tok, ChatPolicy(thinking="off")).sequences(messages)
    assert "REASON" not in off.text and off.text[off.spans[0][0] :].startswith("ANSWER")


def test_final_answers_are_compared_without_reasoning() -> None:
    chat = ChatFormat(tokenizer_of("qwen3"))
    assert chat.final_answer("<think>\nhmm\n</think>\n\n42") == "42"
    assert chat.final_answer("hmm, let me see\n</think>\n\n42") == "42"  # the prompt opened the block
    assert chat.final_answer("42 <think>\nunfinished") == "42"
    assert chat.final_answer("42") == "42"


# ------------------------------------------------------------------------------ every architecture


def cli(*args: str) -> Any:
    from tunesmith.cli import cli as group
    from tunesmith.plugins import Plugins

    return CliRunner().invoke(group, list(args), obj=Plugins(), catch_exceptions=False)


def chats(n: int, seed: int, offset: int = 0) -> list[dict[str, Any]]:
    """Small arithmetic chats; a different ``offset`` gives disjoint numbers (a held-out split)."""
    import random

    rng = random.Random(seed)
    records = []
    for _ in range(n):
        a, b = rng.randint(1, 9) + offset, rng.randint(1, 9)
        records.append(
            {
                "messages": [
                    {"role": "system", "content": "Answer with a number."},
                    {"role": "user", "content": f"{a}+{b}?"},
                    {"role": "assistant", "content": str(a + b)},
                    {"role": "user", "content": f"And {a}*{b}?"},
                    {"role": "assistant", "content": str(a * b)},
                ]
            }
        )
    return records


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_run_and_generate_on_each_family(name: str, tmp_path: Path) -> None:
    import yaml

    family = FAMILIES[name]
    model_dir = save_family(family, tmp_path / "model")
    for split, n, seed, offset in (("train", 16, 1, 0), ("test", 4, 2, 10)):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in chats(n, seed, offset))
        )
    run_name = f"{name}-lora"  # dots in names (qwen2.5-lora) must work for adapters
    config = {
        "name": run_name,
        "output_dir": str(tmp_path / "runs" / "{name}"),
        "model": {"path": str(model_dir)},
        "data": {
            "train": {"name": "jsonl", "path": str(tmp_path / "train.jsonl")},
            "test": {"name": "jsonl", "path": str(tmp_path / "test.jsonl")},
            "max_length": 256,
        },
        "template": {"system_message": "keep" if family.system_role else "merge"},
        "formatter": {"name": "chat"},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "training": {"max_steps": 2, "batch_size": 4, "logging_steps": 1},
        "evaluation": {"max_new_tokens": 4, "compare_base": False},
        "evaluators": [{"name": "perplexity"}, {"name": "exact-match"}],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))

    checked = cli("data", "check", str(path), "--json", "--show", "1")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    [shown] = report["examples"]
    trained = "".join(s["text"] for s in shown["segments"] if s["trained"])
    assert "Answer with a number." not in trained and "+" not in trained and trained.strip()

    result = cli("run", str(path))
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / run_name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tuned"]["test"]["perplexity/perplexity"] > 1
    assert json.loads((run_dir / "manifest.json").read_text())["thinking"] is False  # no reasoning in data
    generated = cli("generate", str(run_dir), "-p", "2+2?", "--system", "Be brief.", "--max-new-tokens", "3")
    assert generated.exit_code == 0, generated.output


# ------------------------------------------------------------------------------- template override


def test_template_override_by_name_file_or_inline(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunesmith.chat import builtin_templates
    from tunesmith.config import resolve
    from tunesmith.errors import TunesmithError
    from tunesmith.models import load_tokenizer
    from tunesmith.plugins import Plugins
    from tunesmith.schema import ModelConfig

    cfg = ModelConfig(path=str(tiny_model_dir))
    assert {"chatml", "qwen3", "llama-3.1", "mistral-v3"} <= set(builtin_templates())
    by_name, _ = load_tokenizer(cfg, str(tiny_model_dir), "chatml")
    assert by_name.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == (
        "<|im_start|>user\nhi<|im_end|>\n"
    )
    jinja = tmp_path / "mine.jinja"
    jinja.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    from_file, _ = load_tokenizer(cfg, str(tiny_model_dir), str(jinja))
    inline, _ = load_tokenizer(cfg, str(tiny_model_dir), jinja.read_text())
    for tok in (from_file, inline):
        assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "[hi]"

    data = {"data": {"train": {"name": "jsonl", "path": "x.jsonl"}}, "template": {"chat_template": "qwen-3"}}
    with pytest.raises(TunesmithError) as error:
        resolve(data, Plugins())
    assert "did you mean 'qwen3'?" in str(error.value)
