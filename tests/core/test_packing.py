"""Packing: samples share rows but never attend to each other, and no boundary token is trained."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tunesmith import Example
from tunesmith.data import (
    IGNORE_INDEX,
    Collator,
    TokenizedExample,
    pack,
    packed_layout,
    tokenize_example,
)
from tunesmith.testing.models import build_random_model, build_tokenizer


def sample(n: int, start: int = 10) -> TokenizedExample:
    ids = list(range(start, start + n))
    return TokenizedExample(ids, list(ids), origin=f"s{n}")


def test_first_fit_decreasing_rows() -> None:
    examples = [sample(n, start=100 * n) for n in (3, 5, 1, 4, 2, 3)]
    rows = pack(examples, max_length=8)
    # 5 | 4 | 3 -> row 0 | 3 -> row 1 | 2 -> new row | 1 -> row 1
    assert [row["position_ids"] for row in rows] == [
        [0, 1, 2, 3, 4, 0, 1, 2],
        [0, 1, 2, 3, 0, 1, 2, 0],
        [0, 1],
    ]
    assert sorted(t for row in rows for t in row["input_ids"]) == sorted(
        t for e in examples for t in e.input_ids
    )
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert all(row["labels"][i] == IGNORE_INDEX for i in starts)
        others = [i for i in range(len(row["labels"])) if i not in starts]
        assert all(row["labels"][i] == row["input_ids"][i] for i in others)


def test_pack_refuses_an_example_longer_than_a_row() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        pack([sample(9)], max_length=8)


def test_collator_pads_packed_rows_with_a_separate_segment_and_no_mask() -> None:
    rows = [
        {"input_ids": [5, 6, 7, 8], "labels": [-100, 6, -100, 8], "position_ids": [0, 1, 0, 1]},
        {"input_ids": [5, 6], "labels": [-100, 6], "position_ids": [0, 1]},
    ]
    batch = Collator(pad_token_id=0, packed=True, layout="rows")(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids", "use_cache"} and batch["use_cache"] is False
    assert batch["input_ids"][1].tolist() == [5, 6, 0, 0]
    assert batch["labels"][1].tolist() == [-100, 6, -100, -100]
    assert batch["position_ids"][1].tolist() == [0, 1, 0, 1]


def test_narrow_layout_repacks_a_batch_as_wide_as_its_longest_sample() -> None:
    rows = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], "position_ids": [0, 1, 2, 0, 1]},
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 1, 2]},
    ]
    batch = Collator(pad_token_id=0, packed=True)(rows)  # narrow is the default
    # samples of 3, 2 and 3 tokens: first-fit-decreasing into rows of 3, the short one padded
    assert batch["input_ids"].tolist() == [[5, 6, 7], [1, 2, 3], [8, 9, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2], [0, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 2, 3], [-100, 9, -100]]
    assert "attention_mask" not in batch and batch["use_cache"] is False


def test_flat_layout_puts_the_batch_in_one_row_with_varlen_boundaries() -> None:
    rows = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, 6, 7, -100, 9], "position_ids": [0, 1, 2, 0, 1]},
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 1, 2]},
    ]
    batch = Collator(pad_token_id=0, packed=True, layout="flat")(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 3]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 3, 5, 8]
    assert batch["max_length_q"] == batch["max_length_k"] == 3


def test_the_layout_follows_the_attention_kernel() -> None:
    assert packed_layout("flash_attention_2") == packed_layout("flash_attention_3") == "flat"
    assert packed_layout("sdpa") == packed_layout("eager") == packed_layout(None) == "narrow"


def test_collator_right_pads_unpacked_rows_with_a_mask() -> None:
    batch = Collator(pad_token_id=0, packed=False)(
        [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    )
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long


@pytest.fixture(scope="module")
def packing_tok() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def packing_examples(packing_tok: Any) -> list[TokenizedExample]:
    chats = [("What is 2+2?", "4"), ("Name a colour.", "Blue, like the sky."), ("Hi", "Hello there!")]
    examples = [
        Example(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}], origin=str(i))
        for i, (q, a) in enumerate(chats)
    ]
    examples.append(Example(text="Once upon a time there was a tiny model.", origin="3"))
    return [t for e in examples for t in tokenize_example(e, packing_tok, max_length=128)]


def token_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Loss of predicting each next token of ``ids`` from ``logits`` over the same positions."""
    return F.cross_entropy(logits[:-1].float(), ids[1:], reduction="none")


def segments(position_ids: list[int]) -> list[tuple[int, int]]:
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return list(pairwise(starts))


@pytest.mark.parametrize(
    ("attn", "layout"), [("sdpa", "rows"), ("eager", "rows"), ("sdpa", "narrow"), ("sdpa", "flat")]
)
def test_packed_samples_are_isolated(
    attn: str, layout: Any, packing_tok: Any, packing_examples: list[TokenizedExample]
) -> None:
    """Every layout of a packed batch gives each sample the loss it has alone (``flat`` is meant for
    varlen kernels; here it proves the layout, with sdpa's mask doing the isolating)."""
    model = build_random_model(packing_tok, attn_implementation=attn).eval()
    assert model.config._attn_implementation == attn
    rows = pack(packing_examples, max_length=80)
    assert len(rows) == 2 and len(segments(rows[0]["position_ids"])) >= 2, "need shared rows and padding"
    batch = Collator(packing_tok.pad_token_id, packed=True, layout=layout)(rows)
    by_ids = {tuple(e.input_ids): e for e in packing_examples}

    with torch.no_grad():
        packed = model(**batch)  # the batch alone must isolate: it carries use_cache=False
        plain = model(input_ids=batch["input_ids"], use_cache=False)  # concatenation, positions never restart
        expected_sum, expected_count, leaked = 0.0, 0, []
        for r, positions in enumerate(batch["position_ids"].tolist()):
            for start, end in segments(positions):
                if batch["labels"][r, start:end].eq(IGNORE_INDEX).all():
                    continue  # the pad sample
                ids = batch["input_ids"][r, start:end]
                alone = token_losses(model(input_ids=ids[None], use_cache=False).logits[0], ids)
                torch.testing.assert_close(
                    token_losses(packed.logits[r, start:end], ids), alone, atol=1e-5, rtol=1e-5
                )
                leaked.append((token_losses(plain.logits[r, start:end], ids) - alone).abs().max().item())
                trained = torch.tensor(by_ids[tuple(ids.tolist())].labels[1:]) != IGNORE_INDEX
                expected_sum += alone[trained].sum().item()
                expected_count += int(trained.sum())

    # The model's own loss over the packed batch is the mean loss of the trained tokens of each sample alone.
    assert packed.loss.item() == pytest.approx(expected_sum / expected_count, abs=1e-5)
    # Control: without restarting positions the later samples of a row see the earlier ones.
    assert leaked[0] < 1e-5 and max(leaked) > 1e-2


def test_the_sft_trainer_passes_packed_batches_through_with_use_cache_off(
    packing_tok, packing_examples, tmp_path
) -> None:
    """The isolation guarantee must survive the HF Trainer's input handling, not only a bare loop."""
    from tunesmith import Device, TrainContext
    from tunesmith.plugins import Plugins
    from tunesmith.schema import TrainingConfig

    model = build_random_model(packing_tok)
    seen: list[object] = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("use_cache")), with_kwargs=True
    )
    ctx = TrainContext(
        model=model, tokenizer=packing_tok, train_rows=pack(packing_examples, max_length=80),
        collator=Collator(packing_tok.pad_token_id, packed=True), device=Device("cpu"), run_dir=tmp_path,
        training=TrainingConfig(max_steps=1, batch_size=2, learning_rate=1e-3, save_steps=100, logging_steps=100),
    )  # fmt: skip
    Plugins().get("objective", "sft")().train(ctx)
    assert seen and all(value is False for value in seen)
