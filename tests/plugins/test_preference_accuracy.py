"""The ``preference-accuracy`` evaluator on a causal LM (log-likelihoods) and a reward model (scores)."""

from __future__ import annotations

import pytest

from tunesmith import Example, TunesmithError

PAIRS = [
    Example(prompt=[{"role": "user", "content": "Say yes."}], chosen="yes", rejected="no thanks"),
    Example(prompt=[{"role": "user", "content": "Count."}], chosen="1 2 3", rejected="a"),
    Example(
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        chosen="Hello!",
        rejected="Hello there, how are you?",
    ),
]


def context(model, tokenizer, examples, **options):
    from tunesmith import EvalContext
    from tunesmith.evaluation import to_eval_examples
    from tunesmith_plugins.evaluators.preference_accuracy import PreferenceAccuracy

    config = PreferenceAccuracy.Config(**options)
    return PreferenceAccuracy(config), EvalContext(model, tokenizer, to_eval_examples(examples, tokenizer))


def test_preference_examples_render_chosen_and_rejected_like_completions():
    from tunesmith.evaluation import to_eval_examples
    from tunesmith.testing.models import build_tokenizer

    tokenizer = build_tokenizer()
    (pref, prompt_only) = to_eval_examples(
        [PAIRS[0], Example(prompt=[{"role": "user", "content": "Q?"}], completion="A")], tokenizer
    )
    assert pref.prompt == "<s><|user|>\nSay yes.<|end|><|assistant|>\n"
    assert (pref.chosen, pref.rejected, pref.reference, pref.completion) == (
        "yes<|end|>",
        "no thanks<|end|>",
        "yes",
        "yes<|end|>",
    )
    assert prompt_only.prompt.endswith("<|assistant|>\n") and prompt_only.completion == "A<|end|>"
    assert prompt_only.chosen is None and prompt_only.rejected is None
    chat = Example(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    (rendered,) = to_eval_examples([chat], tokenizer)
    assert rendered.completion == "y<|end|>" and rendered.chosen is None


@pytest.mark.parametrize("length_normalize", [False, True])
def test_causal_lm_accuracy_equals_a_hand_computation_with_ctx_score(tiny_model_dir, length_normalize):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    evaluator, ctx = context(model, tokenizer, PAIRS, length_normalize=length_normalize)
    metrics = evaluator.evaluate(ctx)

    wins, margins = [], []
    for ex in ctx.examples:
        (good, n_good), (bad, n_bad) = ctx.score([ex.prompt, ex.prompt], [ex.chosen, ex.rejected])
        margins.append(good - bad)
        wins.append(good / n_good > bad / n_bad if length_normalize else good > bad)
    assert metrics["accuracy"] == pytest.approx(sum(wins) / len(wins))
    assert metrics["margin"] == pytest.approx(sum(margins) / len(margins), abs=1e-5)
    assert len(ctx.samples) == 3 and {"score_chosen", "score_rejected", "correct"} <= set(ctx.samples[0])


def test_reward_model_accuracy_equals_hand_computed_rewards(tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    evaluator, ctx = context(model, tokenizer, PAIRS)
    metrics = evaluator.evaluate(ctx)

    def reward(text: str) -> float:  # one sequence at a time: no padding involved
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).logits[0, 0].item()

    good = [reward(ex.prompt + ex.chosen) for ex in ctx.examples]
    bad = [reward(ex.prompt + ex.rejected) for ex in ctx.examples]
    assert ctx.examples[0].prompt + ctx.examples[0].chosen == tokenizer.apply_chat_template(
        [*PAIRS[0].prompt, {"role": "assistant", "content": "yes"}], tokenize=False
    )  # what the reward trainer scores
    assert metrics["accuracy"] == pytest.approx(sum(g > b for g, b in zip(good, bad, strict=True)) / 3)
    assert metrics["margin"] == pytest.approx(
        sum(g - b for g, b in zip(good, bad, strict=True)) / 3, abs=1e-5
    )


def test_a_peft_wrapped_reward_model_is_scored_as_a_reward_model(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith_plugins.methods.lora import Lora

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain = context(model, tokenizer, PAIRS)
    expected = plain[0].evaluate(plain[1])
    wrapped = Lora(Lora.Config(r=2)).apply(model)  # LoRA B starts at zero: same scores
    evaluator, ctx = context(wrapped, tokenizer, PAIRS)
    assert evaluator.evaluate(ctx) == pytest.approx(expected, abs=1e-5)


def test_no_preference_examples_is_a_clear_error(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    evaluator, ctx = context(
        model, tokenizer, [Example(prompt=[{"role": "user", "content": "Q"}], completion="A")]
    )
    with pytest.raises(TunesmithError, match="chosen and a rejected"):
        evaluator.evaluate(ctx)
