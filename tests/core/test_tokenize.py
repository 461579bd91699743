"""Tokenizing with loss masks: exactly the assistant turns and their EOS are trained."""

from __future__ import annotations

from typing import Any

import pytest

from tunesmith import Example, InvalidRecord, TunesmithError
from tunesmith.data import (
    IGNORE_INDEX,
    TokenizedExample,
    render_prompt,
    tokenize_example,
    tokenize_split,
    trained_segments,
)
from tunesmith.testing.models import EOS, build_tokenizer


@pytest.fixture(scope="module")
def tokenize_tok() -> Any:
    return build_tokenizer()


def chat(*turns: tuple[str, str], origin: str = "d.jsonl:1") -> Example:
    return Example(messages=[{"role": r, "content": c} for r, c in turns], origin=origin)


def trained_text(tok: Any, t: TokenizedExample) -> list[str]:
    return [text for text, trained in trained_segments(t, tok) if trained]


def test_only_assistant_content_and_eos_are_trained(tokenize_tok: Any) -> None:
    tok = tokenize_tok
    example = chat(
        ("system", "Be kind"), ("user", "héllo"), ("assistant", "hi ü"), ("user", "more"), ("assistant", "ok")
    )
    [t] = tokenize_example(example, tok, max_length=256)

    assert trained_text(tok, t) == [f"hi ü{EOS}", f"ok{EOS}"]
    trained_ids = [label for label in t.labels if label != IGNORE_INDEX]
    expected = tok("hi ü", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    expected += tok("ok", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert trained_ids == expected
    assert t.num_trained == len(expected)
    rendered = tok.apply_chat_template(example.messages, tokenize=False)
    assert t.input_ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert "".join(text for text, _ in trained_segments(t, tok)) == tok.decode(t.input_ids)
    assert t.origin == "d.jsonl:1" and not t.truncated


def test_train_on_prompt_trains_every_token(tokenize_tok: Any) -> None:
    [t] = tokenize_example(
        chat(("user", "q"), ("assistant", "a")), tokenize_tok, max_length=64, train_on_prompt=True
    )
    assert t.labels == t.input_ids


def test_eos_is_added_when_the_template_omits_it() -> None:
    tok = build_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    [t] = tokenize_example(
        chat(("user", "q"), ("assistant", "a"), ("user", "r"), ("assistant", "b")), tok, max_length=64
    )
    assert trained_text(tok, t) == [f"a\n{EOS}", f"b\n{EOS}"]
    assert tok.decode(t.input_ids) == f"user: q\nassistant: a\n{EOS}user: r\nassistant: b\n{EOS}"


def test_a_turn_that_cannot_be_located_is_a_problem_of_its_record() -> None:
    tok = build_tokenizer()
    # Renders only the number of turns: neither the answer nor the prompt's messages appear in it.
    tok.chat_template = "{{ messages|length }}"
    with pytest.raises(InvalidRecord, match="cannot locate assistant turn 1"):
        tokenize_example(chat(("user", "q"), ("assistant", "a")), tok, max_length=64)
    _, problems, _ = tokenize_split(
        [chat(("user", "q"), ("assistant", "a"), origin="x.jsonl:7")], tok, max_length=64
    )
    assert [p.origin for p in problems] == ["x.jsonl:7"]


def test_text_trains_everything_and_ends_with_eos(tokenize_tok: Any) -> None:
    [t] = tokenize_example(Example(text="abc"), tokenize_tok, max_length=64)
    assert t.input_ids == [*tokenize_tok("abc")["input_ids"], tokenize_tok.eos_token_id]
    assert t.labels == t.input_ids


def test_over_long_is_rejected_or_truncated(tokenize_tok: Any) -> None:
    example = chat(("user", "q"), ("assistant", "x" * 40))
    [full] = tokenize_example(example, tokenize_tok, max_length=1000)
    n = len(full.input_ids)
    with pytest.raises(InvalidRecord) as info:
        tokenize_example(example, tokenize_tok, max_length=20)
    assert info.value.field is None
    assert info.value.message.startswith(f"example has {n} tokens, more than max_length 20")

    [cut] = tokenize_example(example, tokenize_tok, max_length=20, truncate=True)
    assert cut.truncated and cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]
    with pytest.raises(InvalidRecord, match="no tokens left to train on after truncation to 5 tokens"):
        tokenize_example(example, tokenize_tok, max_length=5, truncate=True)


def test_tokenize_split_reports_problems_at_their_origin_and_counts(tokenize_tok: Any) -> None:
    examples = [
        chat(("user", "q"), ("assistant", "a"), origin="d.jsonl:1"),
        chat(("user", "q"), ("assistant", "y" * 100), origin="d.jsonl:2"),
        Example(text="hello", origin="d.jsonl:3"),
    ]
    done, problems, stats = tokenize_split(examples, tokenize_tok, max_length=30)
    assert [t.origin for t in done] == ["d.jsonl:1", "d.jsonl:3"]
    assert [(p.origin, p.field) for p in problems] == [("d.jsonl:2", None)]
    assert "more than max_length 30" in str(problems[0])
    lengths = [len(t.input_ids) for t in done]
    assert (stats.count, stats.min_tokens, stats.max_tokens, stats.p95_tokens) == (
        2,
        min(lengths),
        max(lengths),
        max(lengths),
    )
    assert stats.mean_tokens == sum(lengths) / 2
    assert stats.trained_tokens == sum(t.num_trained for t in done) and stats.truncated == 0

    done, problems, stats = tokenize_split(examples, tokenize_tok, max_length=30, truncate=True)
    assert not problems and stats.truncated == 1 and stats.max_tokens == 30


def test_render_prompt_ends_with_the_assistant_header(tokenize_tok: Any) -> None:
    example = chat(("system", "s"), ("user", "q"), ("assistant", "a"))
    assert render_prompt(tokenize_tok, example) == "<s><|system|>\ns<|end|><|user|>\nq<|end|><|assistant|>\n"
    with pytest.raises(TunesmithError, match="no prompt"):
        render_prompt(tokenize_tok, Example(text="x", origin="t.jsonl:4"))
