"""Evaluation: batched generation and scoring match plain torch, and evaluators only need the ctx API."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from tunesmith import EvalContext, EvalExample, Evaluator, Example, TunesmithError, option
from tunesmith.evaluation import EvalResult, run_evaluators, to_eval_examples
from tunesmith.testing.models import build_random_model, build_tokenizer
from tunesmith_plugins.evaluators import exact_match, perplexity
from tunesmith_plugins.evaluators.exact_match import ExactMatch
from tunesmith_plugins.evaluators.perplexity import Perplexity

CHATS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is two plus two?"},
        {"role": "assistant", "content": "4"},
    ],
    [
        {"role": "user", "content": "a much longer question, to make the padding matter"},
        {"role": "assistant", "content": "ok then"},
    ],
    [{"role": "user", "content": "é ü"}, {"role": "assistant", "content": "ça va"}],
]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_random_model(tok, seed=3).eval()


@pytest.fixture(scope="module")
def examples(tok):
    return to_eval_examples([Example(messages=m, origin=f"t:{i}") for i, m in enumerate(CHATS)], tok)


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def greedy_teacher_forced(model, tok, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy decoding the slow way: a full forward pass per token, no cache, no padding."""
    ids = ids_of(tok, prompt)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids + new])).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == tok.eos_token_id:
                break
    return new


# ------------------------------------------------------------------------------------ examples


def test_to_eval_examples_renders_prompt_and_completion(tok):
    chat, text = to_eval_examples(
        [Example(messages=CHATS[0], origin="f:1"), Example(text="plain", origin="f:2")], tok
    )
    assert chat.prompt == "<s><|user|>\nhi<|end|><|assistant|>\n"
    assert chat.reference == "hello"
    assert chat.completion == "hello<|end|>"
    assert chat.messages == CHATS[0][:-1]
    assert chat.origin == "f:1"
    assert (text.prompt, text.text, text.reference, text.origin) == ("", "plain", None, "f:2")


def test_importing_evaluation_and_evaluators_does_not_import_torch():
    code = (
        "import sys, tunesmith.evaluation, tunesmith_plugins.evaluators.perplexity, "
        "tunesmith_plugins.evaluators.exact_match; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ generate


def test_generate_batched_equals_unbatched_equals_teacher_forced(model, tok, examples):
    prompts = [ex.prompt for ex in examples]
    batched = EvalContext(model, tok, examples, batch_size=4).generate(prompts, max_new_tokens=8)
    single = EvalContext(model, tok, examples, batch_size=1).generate(prompts, max_new_tokens=8)
    expected = [
        tok.decode(greedy_teacher_forced(model, tok, p, 8), skip_special_tokens=True) for p in prompts
    ]
    assert batched == single == expected
    assert any(expected), "the random model should produce some visible text"


def test_generate_stops_at_eos_and_drops_padding(model, tok):
    # Two prompts of equal length keep their order in the batch; row 0 is forced to emit EOS at step 3.
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False)
        for c in ("abc", "xyz")
    ]
    free = [greedy_teacher_forced(model, tok, p, 6) for p in prompts]
    calls = {"n": 0}

    def force_eos(module, args, output):
        calls["n"] += 1
        if calls["n"] == 3:
            output = output.clone()
            output[0, -1, :] = -1e9
            output[0, -1, tok.eos_token_id] = 1e9
        return output

    handle = model.lm_head.register_forward_hook(force_eos)
    try:
        out = EvalContext(model, tok, [], batch_size=2).generate(prompts, max_new_tokens=6)
    finally:
        handle.remove()
    assert out[0] == tok.decode(free[0][:2], skip_special_tokens=True)
    assert out[1] == tok.decode(free[1], skip_special_tokens=True)


def test_generate_restores_padding_side_and_training_mode(tok, examples):
    model = build_random_model(tok, seed=1)
    model.train()
    ctx = EvalContext(model, tok, examples, batch_size=2)
    ctx.generate([examples[0].prompt], max_new_tokens=2)
    assert tok.padding_side == "right"
    assert model.training
    ctx.score([examples[0].prompt], ["x"])
    assert model.training


# --------------------------------------------------------------------------------------- score


def test_score_equals_hand_computed_log_softmax_sum(model, tok, examples):
    prompts = [ex.prompt for ex in examples]
    completions = [ex.completion for ex in examples]
    batched = EvalContext(model, tok, examples, batch_size=3).score(prompts, completions)
    single = EvalContext(model, tok, examples, batch_size=1).score(prompts, completions)
    for (p, c), (lp_b, n_b), (lp_s, n_s) in zip(
        zip(prompts, completions, strict=True), batched, single, strict=True
    ):
        prompt_ids, comp_ids = ids_of(tok, p), ids_of(tok, c)
        ids = torch.tensor([prompt_ids + comp_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        expected = sum(float(logprobs[len(prompt_ids) + j - 1, t]) for j, t in enumerate(comp_ids))
        assert n_b == n_s == len(comp_ids)
        assert lp_b == pytest.approx(expected, abs=1e-4)
        assert lp_s == pytest.approx(expected, abs=1e-4)


def test_score_edge_cases(model, tok):
    ctx = EvalContext(model, tok, [])
    [(lp, n)] = ctx.score(["<s>abc"], [""])
    assert (lp, n) == (0.0, 0)
    # Nothing precedes the first token of an empty prompt, so it is not scored.
    [(lp, n)] = ctx.score([""], ["abcd"])
    assert n == 3 and lp < 0
    with pytest.raises(ValueError):
        ctx.score(["a"], [])


# ---------------------------------------------------------------------------------- perplexity


def test_perplexity_equals_exp_mean_nll(model, tok, examples):
    text = Example(text="just some plain text", origin="t:text")
    all_examples = examples + to_eval_examples([text], tok)
    result = run_evaluators(
        model, tok, [Perplexity()], all_examples, split="validation", label="tuned", batch_size=2
    )

    total_nll, total_tokens = 0.0, 0
    pairs = [
        (
            tok.apply_chat_template(m[:-1], add_generation_prompt=True, tokenize=False),
            tok.apply_chat_template(m, tokenize=False),
        )
        for m in CHATS
    ]
    pairs.append(("<s>", "<s>" + text.text))
    for prompt, full in pairs:
        ids = torch.tensor([ids_of(tok, full)])
        labels = ids.clone()
        labels[0, : len(ids_of(tok, prompt))] = -100
        n = int((labels[0, 1:] != -100).sum())
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()  # mean over the n predicted tokens
        total_nll += loss * n
        total_tokens += n
    mean_nll = total_nll / total_tokens
    assert result.metrics["perplexity/loss"] == pytest.approx(mean_nll, rel=1e-5)
    assert result.metrics["perplexity/perplexity"] == pytest.approx(math.exp(mean_nll), rel=1e-5)
    assert result.samples == {}


# --------------------------------------------------------------------------------- exact match


class StubContext:
    """Just the ctx API an evaluator may use: proves evaluators do not reach into engine internals."""

    def __init__(self, references, predictions, config):
        self.examples = [EvalExample(prompt=f"p{i}", reference=r) for i, r in enumerate(references)]
        self.predictions = predictions
        self.config = config
        self.samples = []
        self.generate_calls = []

    answer = EvalContext.answer  # built on generate: the real one runs against the canned predictions
    final_answer = None  # no reasoning to strip

    def generate(self, prompts, *, max_new_tokens=None, **kwargs):
        self.generate_calls.append((list(prompts), max_new_tokens))
        return list(self.predictions[: len(prompts)])

    def record_samples(self, samples):
        self.samples.extend(samples)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 0.5),  # strip, case-sensitive: "Paris " and "4" match
        ({"case_sensitive": False}, 0.75),  # + "LONDON"
        ({"normalize": "none"}, 0.25),  # only "4"
        ({"normalize": "whitespace", "case_sensitive": False}, 1.0),  # + "new  york"
    ],
)
def test_exact_match_counts(options, expected):
    refs = ["Paris", "4", "london", "New York"]
    preds = ["Paris ", "4", "LONDON", " new  york"]
    ctx = StubContext(refs, preds, ExactMatch.Config(**options))
    assert ExactMatch(ctx.config).evaluate(ctx) == {"exact_match": expected}


def test_exact_match_skips_examples_without_reference_and_records_samples():
    ctx = StubContext(
        ["a", None, "b", "c", "d"], ["a", "x", "c", "d"], ExactMatch.Config(show=2, max_new_tokens=5)
    )
    assert ExactMatch(ctx.config).evaluate(ctx) == {"exact_match": 0.75}
    assert ctx.generate_calls == [(["p0", "p2", "p3", "p4"], 5)]
    assert ctx.samples == [
        {"prompt": "p0", "reference": "a", "prediction": "a", "match": True},
        {"prompt": "p2", "reference": "b", "prediction": "x", "match": False},
    ]


def test_exact_match_rejects_bad_config_and_no_references():
    from tunesmith.config import resolve
    from tunesmith.plugins import Plugins

    data = {"data": {"train": {"name": "jsonl", "path": "t.jsonl"}}, "evaluators": [
        {"name": "exact-match", "normalize": "lower"}]}  # fmt: skip
    with pytest.raises(TunesmithError, match="evaluators\\[0\\].normalize: expected one of"):
        resolve(data, Plugins())  # at config time, before any model loads
    with pytest.raises(TunesmithError, match="reference"):
        ctx = StubContext([None], ["a"], ExactMatch.Config())
        ExactMatch(ctx.config).evaluate(ctx)


def test_exact_match_on_a_real_model(model, tok, examples):
    own = EvalContext(model, tok, examples).generate([ex.prompt for ex in examples], max_new_tokens=6)
    # References set to the model's own greedy output (2 of 4) make the expected score known.
    targets = [
        EvalExample(prompt=ex.prompt, reference=own[i] if i % 2 == 0 else "nope")
        for i, ex in enumerate(examples)
    ]
    evaluator = ExactMatch(ExactMatch.Config(normalize="none", max_new_tokens=6, show=10))
    result = run_evaluators(model, tok, [evaluator], targets, split="test", label="base", batch_size=3)
    assert result.metrics == {"exact-match/exact_match": 0.5}
    assert [s["prediction"] for s in result.samples["exact-match"]] == own


# ------------------------------------------------------------------------------ plugin contract


def test_builtin_evaluators_register_through_their_hook():
    registered = []
    perplexity.register_evaluators(register=registered.append)
    exact_match.register_evaluators(register=registered.append)
    assert [cls.name for cls in registered] == ["perplexity", "exact-match"]


class PromptLength(Evaluator):
    """Mean length of generations, written the way a vendor would, from the docs alone."""

    name = "acme-length"

    @dataclass
    class Config:
        unit: int = option(1, help="divide lengths by this")

    def evaluate(self, ctx):
        outputs = ctx.generate([ex.prompt for ex in ctx.examples], max_new_tokens=3)
        ctx.record_samples([{"prompt": ctx.examples[0].prompt, "prediction": outputs[0]}])
        return {
            "mean_chars": sum(len(o) for o in outputs) / len(outputs) / self.config.unit,
            "label_is_base": ctx.label == "base",
        }


class Broken(Evaluator):
    """Always fails."""

    name = "broken"

    def evaluate(self, ctx):
        raise RuntimeError("boom")


def test_vendor_evaluator_runs_through_run_evaluators(model, tok, examples):
    progress = []
    result = run_evaluators(
        model,
        tok,
        [PromptLength(PromptLength.Config(unit=2)), Perplexity()],
        examples,
        split="validation",
        label="base",
        batch_size=3,
        on_batch=progress.append,
    )
    assert isinstance(result, EvalResult)
    assert set(result.metrics) == {
        "acme-length/mean_chars",
        "acme-length/label_is_base",
        "perplexity/perplexity",
        "perplexity/loss",
    }
    assert result.metrics["acme-length/label_is_base"] == 1.0
    assert all(isinstance(v, float) for v in result.metrics.values())
    assert list(result.samples) == ["acme-length"]
    assert progress == [3, 1, 3, 1]  # two passes over 4 examples in batches of 3


def test_evaluator_errors_propagate(model, tok, examples):
    with pytest.raises(RuntimeError, match="boom"):
        run_evaluators(model, tok, [Broken()], examples, split="validation", label="tuned")
