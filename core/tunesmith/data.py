"""From raw records to training rows: format, tokenize with loss masks, pack, collate.

Loss masking. A chat is rendered with the tokenizer's own chat template and a token is trained when its
character span overlaps an assistant turn's target: what the model must generate after the template's
generation prompt. :mod:`tunesmith.chat` finds those targets on real templates, including ones that
rewrite history (Qwen3, Mistral v3), put EOS after the last turn only (Phi-3) or force a think block open
(DeepSeek-R1); a conversation can therefore give more than one training sequence.

Packing without attention across samples. :func:`pack` puts several samples in one row with
``position_ids`` restarting at 0 for each, and :class:`Collator` passes no ``attention_mask``. Read from
``transformers/masking_utils.py`` (5.24: ``_preprocess_mask_arguments``, ``find_packed_sequence_indices``)
and proven by ``tests/core/test_packing.py``, transformers then builds a per-sample causal mask only when ALL of:

1. ``position_ids`` are passed; a new sample starts wherever a position is not the previous one plus 1.
2. ``attention_mask`` is ``None``: any 2D mask, even all ones, turns detection off (hence no mask here,
   and padding is one more "sample" of pad tokens with its own restarting positions and no labels).
3. There is no cache. ``LlamaModel.forward`` defaults ``use_cache`` to ``config.use_cache`` (True) and
   then creates a ``DynamicCache``, in train and eval mode alike, which silently disables detection
   (samples then attend to each other: logit differences ~1). So :class:`Collator` puts
   ``use_cache=False`` in every packed batch and ``model(**batch)`` isolates by itself; setting
   ``model.config.use_cache = False`` or training with gradient checkpointing also works.
4. ``config._attn_implementation`` is one transformers builds masks for: ``sdpa`` and ``eager`` (tested
   here), ``flex_attention``. The ``flash_attention_*`` kernels read sample boundaries from
   ``position_ids`` only in a batch of ONE row (``_is_packed_sequence`` in
   ``modeling_flash_attention_utils.py``); rows side by side would attend across samples. So for them
   :class:`Collator` flattens the batch into one row with ``cu_seq_lens_*`` (``layout="flat"``, chosen by
   :func:`packed_layout`; ``bench/packing.py --gpu`` verifies it on a GPU). A custom kernel gets no mask.
5. No 4D mask is passed (it is used as is).

HF shifts labels inside the model, so position t is trained to predict token t+1. The first token of
every packed sample is therefore masked: otherwise the previous sample's last position would be trained
to predict it across the boundary.

No torch import at module level: only :class:`Collator` needs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tunesmith.chat import ChatFormat
from tunesmith.components import DataSource, Formatter
from tunesmith.errors import TunesmithError
from tunesmith.examples import Example, InvalidRecord, RecordProblem

IGNORE_INDEX = -100


def format_records(source: DataSource, formatter: Formatter) -> Iterator[Example | RecordProblem]:
    """Each record of one split formatted, or the problem that stopped it (reading goes on)."""
    for item in source.read():
        if isinstance(item, RecordProblem):
            yield item
            continue
        try:
            example = formatter.format(item)
        except InvalidRecord as e:
            yield RecordProblem(item.origin, e.message, e.field)
            continue
        example.origin = item.origin
        yield example


def read_split(source: DataSource, formatter: Formatter) -> tuple[list[Example], list[RecordProblem]]:
    """Read and format every record of one split, collecting problems instead of stopping at the first."""
    examples: list[Example] = []
    problems: list[RecordProblem] = []
    for item in format_records(source, formatter):
        (problems if isinstance(item, RecordProblem) else examples).append(item)  # type: ignore[arg-type]
    return examples, problems


def render_prompt(tokenizer: Any, example: Example, chat: ChatFormat | None = None) -> str:
    """The text a model continues at evaluation: the conversation before the last assistant turn, then the
    generation prompt. It already holds the template's special tokens: encode it with ``add_special_tokens=False``.
    """
    messages = example.prompt_messages
    if messages is None:
        raise TunesmithError(
            f"{example.origin}: not a chat ending with an assistant turn, so it has no prompt"
        )
    return (chat or ChatFormat(tokenizer)).with_tools(example.tools).prompt(messages)


# -------------------------------------------------------------------------------------- tokenizing


@dataclass
class TokenizedExample:
    """Token ids and labels (``-100`` = not trained) of one example, with where it came from."""

    input_ids: list[int]
    labels: list[int]
    origin: str = ""
    truncated: bool = False

    @property
    def num_trained(self) -> int:
        """Tokens that contribute to the loss; the first label never does (nothing predicts it)."""
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise TunesmithError("the tokenizer has no EOS token, so a model could not learn to stop")
    return tokenizer.eos_token_id


def _encode_chat(
    chat: ChatFormat, messages: list[dict[str, Any]], *, last_turn_only: bool = False
) -> list[tuple[list[int], list[bool]]]:
    """Token ids of each training sequence of a chat and, per token, whether it is trained.

    ``last_turn_only`` trains only the final assistant turn: the answer of a preference pair or of an
    unpaired completion, whose prompt may itself hold earlier assistant turns.
    """
    tokenizer = chat.tokenizer
    _eos_id(tokenizer)  # fails clearly for a tokenizer without EOS
    out = []
    for seq in chat.sequences(messages, last_turn_only=last_turn_only):
        try:
            encoding = tokenizer(seq.text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            raise TunesmithError(
                "loss masking needs a fast tokenizer (one that returns character offsets)"
            ) from None
        trained = [
            any(start < e and max(end, start + 1) > s for s, e in seq.spans)
            for start, end in encoding["offset_mapping"]
        ]
        out.append((list(encoding["input_ids"]), trained))
    return out


def _answered(example: Example, answer: str) -> list[dict[str, str]]:
    return [*(example.prompt or []), {"role": "assistant", "content": answer}]


#: No tokenizer packs more characters than this into one token on average (16 is already rare): a
#: record longer than ``max_length`` times this is over-long without tokenizing it (a 5 MB line would
#: take minutes and gigabytes to tokenize only to be rejected).
MAX_CHARS_PER_TOKEN = 32


def _characters(example: Example) -> int:
    texts = [example.text, example.chosen, example.rejected, example.completion]
    for turns in (example.messages, example.prompt):
        texts += [str(m.get("content", "")) + str(m.get("reasoning", "")) for m in turns or []]
    return sum(len(t) for t in texts if t)


def tokenize_example(
    example: Example,
    tokenizer: Any,
    *,
    max_length: int,
    train_on_prompt: bool = False,
    truncate: bool = False,
    chat: ChatFormat | None = None,
) -> list[TokenizedExample]:
    """Tokenize one example and mask what is not trained; raises :class:`InvalidRecord` for unusable ones.

    Usually one sequence; a chat whose template rewrites history gives one per such turn (see
    :mod:`tunesmith.chat`). Chat and text examples become training rows. The kinds that objectives
    tokenize themselves (TRL trainers) are measured here so that over-long records are caught before a
    model loads, and are returned in a displayable form: a preference pair as prompt + chosen (trained =
    chosen tokens; the longer of prompt + chosen and prompt + rejected is what must fit ``max_length``),
    an unpaired example as prompt + completion, a prompt alone with nothing trained. ``train_on_prompt``
    does not apply to them (the TRL losses are over answers only).
    """
    chat = chat or ChatFormat(tokenizer)
    kind = example.kind
    pair_truncated = False
    chars = _characters(example)
    if chars > max_length * MAX_CHARS_PER_TOKEN and not truncate:
        raise InvalidRecord(
            f"{chars:,} characters: far longer than data.max_length={max_length} tokens can hold "
            "(found before tokenizing it; data.truncate: true cuts such records instead)"
        )
    if kind == "chat":
        encoded = _encode_chat(chat.with_tools(example.tools), example.messages or [])
    elif kind == "text":
        ids = list(tokenizer(example.text)["input_ids"])
        eos = _eos_id(tokenizer)
        if not ids or ids[-1] != eos:
            ids.append(eos)
        encoded = [(ids, [True] * len(ids))]
    elif kind in ("preference", "unpaired"):
        if not example.prompt:
            raise ValueError(f"{example.origin}: {kind} example has no prompt")
        answer = example.chosen if kind == "preference" else example.completion
        encoded = _encode_chat(chat, _answered(example, answer or ""), last_turn_only=True)
        if kind == "preference":
            ids = encoded[-1][0]
            rejected = _encode_chat(chat, _answered(example, example.rejected or ""), last_turn_only=True)
            longest = max(len(ids), len(rejected[-1][0]))
            if longest > max_length and not truncate:
                raise InvalidRecord(
                    f"pair has {len(ids)} tokens with the chosen answer and {len(rejected[-1][0])} with the "
                    f"rejected one, more than max_length {max_length} (raise max_length, or set truncate to cut it)"
                )
            pair_truncated = longest > max_length
        train_on_prompt = False
    elif kind == "prompt":
        if not example.prompt:
            raise ValueError(f"{example.origin}: example has no messages, text or prompt")
        ids = list(tokenizer(render_prompt(tokenizer, example, chat), add_special_tokens=False)["input_ids"])
        encoded = [(ids, [False] * len(ids))]
        train_on_prompt = False
    else:  # pragma: no cover - Example.kind has no other values
        raise ValueError(f"{example.origin}: unknown example kind {kind!r}")
    return [
        _masked(example, ids, trained, max_length, train_on_prompt, truncate, pair_truncated)
        for ids, trained in encoded
    ]


def _masked(
    example: Example,
    ids: list[int],
    trained: list[bool],
    max_length: int,
    train_on_prompt: bool,
    truncate: bool,
    pair_truncated: bool,
) -> TokenizedExample:
    labels = [t if (train_on_prompt or keep) else IGNORE_INDEX for t, keep in zip(ids, trained, strict=True)]
    result = TokenizedExample(ids, labels, example.origin)
    if len(ids) > max_length:
        if not truncate:
            raise InvalidRecord(
                f"example has {len(ids)} tokens, more than max_length {max_length} "
                "(raise max_length, or set truncate to cut it)"
            )
        result = TokenizedExample(ids[:max_length], labels[:max_length], example.origin, truncated=True)
    result.truncated = result.truncated or pair_truncated
    if result.num_trained == 0 and example.kind != "prompt":  # a bare prompt trains nothing (online RL)
        after = f" after truncation to {max_length} tokens" if result.truncated else ""
        raise InvalidRecord(f"no tokens left to train on{after}")
    return result


@dataclass
class TokenStats:
    """Token counts of a tokenized split, for the run report and sanity checks."""

    count: int = 0
    min_tokens: int = 0
    mean_tokens: float = 0.0
    p95_tokens: int = 0
    max_tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0


def tokenize_split(
    examples: Iterable[Example],
    tokenizer: Any,
    *,
    max_length: int,
    train_on_prompt: bool = False,
    truncate: bool = False,
    chat: ChatFormat | None = None,
) -> tuple[list[TokenizedExample], list[RecordProblem], TokenStats]:
    """Tokenize a split; an unusable example becomes a problem at its origin instead of stopping."""
    done: list[TokenizedExample] = []
    problems: list[RecordProblem] = []
    chat = chat or ChatFormat(tokenizer)
    for example in examples:
        try:
            done.extend(
                tokenize_example(
                    example,
                    tokenizer,
                    max_length=max_length,
                    train_on_prompt=train_on_prompt,
                    truncate=truncate,
                    chat=chat,
                )
            )
        except InvalidRecord as e:
            problems.append(RecordProblem(example.origin, e.message, e.field))
    lengths = sorted(len(t.input_ids) for t in done)
    stats = TokenStats()
    if lengths:
        stats = TokenStats(
            count=len(lengths),
            min_tokens=lengths[0],
            mean_tokens=sum(lengths) / len(lengths),
            p95_tokens=lengths[math.ceil(0.95 * len(lengths)) - 1],
            max_tokens=lengths[-1],
            trained_tokens=sum(t.num_trained for t in done),
            truncated=sum(t.truncated for t in done),
        )
    return done, problems, stats


def trained_segments(tokenized: TokenizedExample, tokenizer: Any) -> list[tuple[str, bool]]:
    """The example's text in consecutive pieces, each with whether its tokens are trained (for display)."""
    segments: list[tuple[str, bool]] = []
    run: list[int] = []
    for i, (token, label) in enumerate(zip(tokenized.input_ids, tokenized.labels, strict=True)):
        run.append(token)
        here = label != IGNORE_INDEX
        if i + 1 == len(tokenized.input_ids) or (tokenized.labels[i + 1] != IGNORE_INDEX) != here:
            segments.append((tokenizer.decode(run, skip_special_tokens=False), here))
            run = []
    return segments


# ----------------------------------------------------------------------------------------- packing


def pack(examples: Sequence[TokenizedExample], max_length: int) -> list[dict[str, list[int]]]:
    """Pack examples first-fit-decreasing into rows of at most ``max_length`` tokens.

    Each row has ``input_ids``, ``labels`` and ``position_ids`` restarting at 0 per sample; the first label
    of every sample is masked so no position learns to predict across a boundary.
    """
    for example in examples:
        if len(example.input_ids) > max_length:
            raise ValueError(
                f"{example.origin}: {len(example.input_ids)} tokens do not fit max_length {max_length}"
            )
    packed = []
    for members in first_fit_decreasing([len(e.input_ids) for e in examples], max_length):
        input_ids: list[int] = []
        labels: list[int] = []
        position_ids: list[int] = []
        for i in members:
            example = examples[i]
            input_ids += example.input_ids
            labels += [IGNORE_INDEX, *example.labels[1:]]
            position_ids += range(len(example.input_ids))
        packed.append({"input_ids": input_ids, "labels": labels, "position_ids": position_ids})
    return packed


def first_fit_decreasing(sizes: Sequence[int], width: int) -> list[list[int]]:
    """Indices of ``sizes`` grouped into bins of at most ``width``, longest first, each in the first bin
    with room; every size must be at most ``width``."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    free = _MaxTree(len(sizes))  # free space per bin, to find the first bin that fits in O(log n)
    bins: list[list[int]] = []
    for i in order:
        row = free.first_at_least(sizes[i])
        if row is None:
            row = len(bins)
            bins.append([])
            free.set(row, width)
        bins[row].append(i)
        free.set(row, free.get(row) - sizes[i])
    return bins


class _MaxTree:
    """A segment tree over row free space: first row whose free space is at least a size."""

    def __init__(self, n: int) -> None:
        self.size = 1
        while self.size < max(n, 1):
            self.size *= 2
        self.tree = [-1] * (2 * self.size)

    def get(self, i: int) -> int:
        return self.tree[self.size + i]

    def set(self, i: int, value: int) -> None:
        i += self.size
        self.tree[i] = value
        while i > 1:
            i //= 2
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])

    def first_at_least(self, value: int) -> int | None:
        if self.tree[1] < value:
            return None
        i = 1
        while i < self.size:
            i = 2 * i if self.tree[2 * i] >= value else 2 * i + 1
        return i - self.size


#: How a packed batch is laid out for the attention kernel (see :class:`Collator`).
Layout = Literal["narrow", "rows", "flat"]

#: Kernels that read sample boundaries from ``position_ids`` of a single flattened row (varlen).
VARLEN_KERNELS = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn")


def packed_layout(attn_implementation: str | None) -> Layout:
    """The cheaper layout for a kernel: one flat row for varlen (flash) kernels, narrow rows otherwise."""
    name = attn_implementation or ""
    return "flat" if name in VARLEN_KERNELS or name.startswith("flash_attention") else "narrow"


def _samples(row: Mapping[str, Sequence[int]]) -> list[tuple[int, int]]:
    """(start, end) of each sample of a packed row: a sample starts where a position is not the previous
    one plus 1, the rule transformers applies to find them."""
    positions = row["position_ids"]
    starts = [i for i in range(len(positions)) if i == 0 or positions[i] != positions[i - 1] + 1]
    return list(zip(starts, [*starts[1:], len(positions)], strict=True))


class Collator:
    """Batches rows into tensors; see the module docstring for what packed batches rely on.

    Features are mappings with ``input_ids`` and ``labels`` (and ``position_ids`` when ``packed``).
    Unpacked rows are right-padded with an ``attention_mask``. Packed rows get no ``attention_mask``, and
    their samples are laid out for the attention kernel; a step trains the same samples with the same
    loss in every layout, only the cost differs:

    - ``narrow`` (dense kernels: sdpa, eager): the batch's samples are re-packed into rows as wide as
      its longest sample. A dense kernel computes every row's full width squared whatever the mask
      says, so rows of ``max_length`` holding short samples cost up to ``max_length / longest`` times
      the attention they need (measured in ``bench/packing.py``).
    - ``rows``: the rows as given, padded to the widest (the layout before ``narrow``; kept to measure).
    - ``flat`` (varlen kernels, flash-attention): every sample in one row with ``cu_seq_lens_*`` and
      ``max_length_*``, which transformers hands to ``flash_attn_varlen_func``: no padding, and attention
      within each sample only. Flash kernels see boundaries only in a batch of one row; packed rows
      batched side by side would attend across samples there.

    Padding is one more sample of pad tokens (positions from 0, no labels). A packed batch also carries
    ``use_cache=False``: transformers derives the per-sample masks from ``position_ids`` only when no KV
    cache is built, so the batch itself says so and any loop or objective that calls ``model(**batch)``
    keeps the samples isolated without having to know.
    """

    def __init__(self, pad_token_id: int, packed: bool, layout: Layout = "narrow") -> None:
        self.pad_token_id = pad_token_id
        self.packed = packed
        self.layout = layout

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, Any]:
        import torch

        if self.packed and self.layout != "rows":
            features = self._relaid(features)
        width = max(len(f["input_ids"]) for f in features)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        batch["position_ids" if self.packed else "attention_mask"] = []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            batch["input_ids"].append([*f["input_ids"], *[self.pad_token_id] * pad])
            batch["labels"].append([*f["labels"], *[IGNORE_INDEX] * pad])
            if self.packed:
                batch["position_ids"].append([*f["position_ids"], *range(pad)])
            else:
                batch["attention_mask"].append([1] * n + [0] * pad)
        tensors: dict[str, Any] = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        if self.packed:
            tensors["use_cache"] = False
        if self.packed and self.layout == "flat":
            tensors.update(self._varlen_kwargs(features[0]))
        return tensors

    def _relaid(self, features: Sequence[Mapping[str, Sequence[int]]]) -> list[dict[str, list[int]]]:
        """The batch's samples, re-packed one row (``flat``) or rows as wide as the longest (``narrow``)."""
        samples = [
            {key: list(f[key][start:end]) for key in ("input_ids", "labels", "position_ids")}
            for f in features
            for start, end in _samples(f)
        ]
        sizes = [len(s["input_ids"]) for s in samples]
        width = sum(sizes) if self.layout == "flat" else max(sizes)
        rows = []
        for members in first_fit_decreasing(sizes, width):
            row: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
            for i in sorted(members):  # the batch's order within a row: a stable, readable layout
                for key in row:
                    row[key] += samples[i][key]
            rows.append(row)
        return rows

    @staticmethod
    def _varlen_kwargs(row: Mapping[str, Sequence[int]]) -> dict[str, Any]:
        import torch

        bounds = _samples(row)
        cu = torch.tensor([0, *(end for _, end in bounds)], dtype=torch.int32)
        longest = max(end - start for start, end in bounds)
        return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
