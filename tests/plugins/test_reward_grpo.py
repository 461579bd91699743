"""Reward models (objective ``reward``), reward plugins and GRPO (objective ``grpo``) on a tiny random Llama."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from tunesmith import Example, TunesmithError

# ------------------------------------------------------------------------------------------ helpers


def separable_pairs(n: int, seed: int) -> list[Example]:
    """Preference pairs a reward model can separate: chosen answers use a-d, rejected ones w-z."""
    rng = random.Random(seed)

    def word(alphabet: str) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 6)))

    return [
        Example(
            prompt=[{"role": "user", "content": "Pick: " + word("mnop")}],
            chosen=word("abcd"),
            rejected=word("wxyz"),
        )
        for _ in range(n)
    ]


def train_context(model, tokenizer, run_dir: Path, examples, callbacks=None, **training):
    from tunesmith import Device, TrainContext
    from tunesmith.schema import TrainingConfig

    run_dir.mkdir(parents=True, exist_ok=True)
    options = dict(batch_size=8, logging_steps=2, save_steps=0, warmup_ratio=0.0, lr_scheduler="constant")
    options.update(training)
    return TrainContext(
        model=model,
        tokenizer=tokenizer,
        training=TrainingConfig(**options),
        device=Device("cpu"),
        run_dir=run_dir,
        callbacks=callbacks or [],
        train_examples=examples,
    )


def load_classifier(path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1
    ), AutoTokenizer.from_pretrained(path)


def pairwise(model, tokenizer, examples):
    from tunesmith import EvalContext
    from tunesmith.evaluation import to_eval_examples
    from tunesmith_plugins.evaluators.preference_accuracy import PreferenceAccuracy

    ctx = EvalContext(model, tokenizer, to_eval_examples(examples, tokenizer))
    return PreferenceAccuracy().evaluate(ctx)


# ------------------------------------------------------------------------------------ reward model


@pytest.mark.slow
def test_reward_model_learns_a_separable_preference(tiny_model_dir, tmp_path):
    from tunesmith_plugins.objectives.reward import RewardModel

    model, tokenizer = load_classifier(tiny_model_dir)
    held_out = separable_pairs(32, seed=2)
    before = pairwise(model, tokenizer, held_out)
    ctx = train_context(
        model, tokenizer, tmp_path / "run", separable_pairs(64, seed=1), epochs=2, learning_rate=3e-4
    )
    started = time.monotonic()
    RewardModel().train(ctx)
    after = pairwise(model, tokenizer, held_out)
    print(
        f"reward model (full): held-out accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
        f"margin {before['margin']:.3f} -> {after['margin']:.3f}, {time.monotonic() - started:.1f} s"
    )
    assert after["accuracy"] >= 0.9 > before["accuracy"]
    assert after["margin"] > 1.0


@pytest.mark.slow
def test_lora_reward_model_saves_and_reloads_with_identical_scores(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel

    from tunesmith_plugins.evaluators.preference_accuracy import reward_scores
    from tunesmith_plugins.methods.lora import Lora
    from tunesmith_plugins.objectives.reward import RewardModel

    method = Lora(Lora.Config(r=4, alpha=8))
    base, tokenizer = load_classifier(tiny_model_dir)
    model = method.apply(base)
    assert type(model).__name__ == "PeftModelForSequenceClassification"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable)  # the new head trains
    ctx = train_context(
        model, tokenizer, tmp_path / "run", separable_pairs(32, seed=1), max_steps=6, learning_rate=1e-3
    )
    RewardModel().train(ctx)
    out = tmp_path / "adapter"
    method.save(model, str(out))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]

    texts = [
        "<s><|user|>\nPick: mno<|end|><|assistant|>\nabcd<|end|>",
        "<s><|user|>\nx<|end|><|assistant|>\nwxyz<|end|>",
    ]
    trained = reward_scores(model, tokenizer, texts)
    fresh, _ = load_classifier(tiny_model_dir)
    reloaded = method.load(fresh, str(out))
    assert isinstance(reloaded, PeftModel)
    assert torch.allclose(
        torch.tensor(trained), torch.tensor(reward_scores(reloaded, tokenizer, texts)), atol=1e-6
    )
    plain, _ = load_classifier(tiny_model_dir)  # an untrained random head scores differently
    assert not torch.allclose(torch.tensor(trained), torch.tensor(reward_scores(plain, tokenizer, texts)))


def test_reward_objective_refuses_methods_that_cannot_train_the_head():
    from tunesmith.plugins import Plugins

    plugins = Plugins()
    reward = plugins.get("objective", "reward")()
    for name in ("lora", "dora", "qlora", "full"):
        assert reward.check_method(plugins.get("method", name)()) is None, name
    for name in ("ia3", "prefix-tuning", "prompt-tuning", "p-tuning", "adapter"):
        assert reward.check_method(plugins.get("method", name)()), name
    freeze = plugins.get("method", "freeze")
    assert "score" in reward.check_method(freeze(freeze.Config(trainable=["layers\\.3\\."])))
    assert reward.check_method(freeze(freeze.Config(trainable=["score"]))) is None


def test_generation_evaluators_refuse_a_sequence_classifier(tiny_model_dir):
    from tunesmith import EvalContext
    from tunesmith.evaluation import to_eval_examples

    model, tokenizer = load_classifier(tiny_model_dir)
    ctx = EvalContext(model, tokenizer, to_eval_examples(separable_pairs(2, seed=0), tokenizer))
    with pytest.raises(TunesmithError, match="needs a causal LM"):
        ctx.generate(["hi"])
    with pytest.raises(TunesmithError, match="needs a causal LM"):
        ctx.score(["hi"], ["there"])


# ------------------------------------------------------------------------------------------ rewards


def grpo(**options):
    from tunesmith.config import build_component
    from tunesmith.plugins import Plugins

    return build_component(Plugins(), "objective", {"name": "grpo", **options})


def rewards_from(specs):
    from tunesmith_plugins.rewards import labelled

    return labelled(grpo(rewards=specs).config.rewards)


def test_builtin_rewards_score_fixed_strings():
    (_, _, fmt), (_, _, full), (_, _, chars), (_, _, words) = rewards_from(
        [
            {"name": "format", "pattern": r"\d+"},
            {"name": "format", "pattern": r"<a>.*</a>", "full_match": True},
            {"name": "length", "target": 5, "tolerance": 5},
            {"name": "length", "target": 2, "unit": "words", "tolerance": 2, "floor": -1.0},
        ]
    )
    none = [Example(prompt=[{"role": "user", "content": "q"}])] * 3
    assert fmt.score(["p"] * 3, ["abc 12", "abc", "7"], none) == [1.0, 0.0, 1.0]
    assert full.score(["p"] * 3, [" <a>x\ny</a> ", "<a>x</a> and more", "<a></a>"], none) == [1.0, 0.0, 1.0]
    assert chars.score(["p"] * 3, ["abcde", "abcdefg", "a" * 20], none) == [1.0, pytest.approx(0.6), 0.0]
    assert words.score(["p"] * 3, ["one two", "one", "a b c d e f"], none) == [1.0, 0.5, -1.0]

    (_, _, equals), (_, _, contains) = rewards_from(
        [{"name": "exact-answer"}, {"name": "exact-answer", "mode": "contains"}]
    )
    examples = [
        Example(prompt=[{"role": "user", "content": "capital?"}], completion="Paris"),
        Example(prompt=[{"role": "user", "content": "sum?"}], chosen="42", rejected="41"),
        Example(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "New  York"}]),
        Example(prompt=[{"role": "user", "content": "no reference"}]),
    ]
    completions = ["  paris. ", "It is 42!", "new york", "anything"]
    assert equals.score(["p"] * 4, completions, examples) == [1.0, 0.0, 1.0, 0.0]
    assert contains.score(["p"] * 4, completions, examples) == [1.0, 1.0, 1.0, 0.0]
    assert contains.score(["p"], ["It is 142"], [examples[1]]) == [0.0]  # word boundaries

    ((_, _, similarity),) = rewards_from([{"name": "similarity"}])
    date = [Example(prompt=[{"role": "user", "content": "d"}], completion="04/17/2023")] * 3
    got = similarity.score(["p"] * 3, ["04/17/2023", "04/17/2025", "nothing"], date)
    assert got[0] == 1.0 and got[1] == pytest.approx(0.9) and got[2] < 0.2  # 2·9/20 matches for one digit off
    assert similarity.score(["p"], ["x"], [examples[3]]) == [0.0]  # no reference


def test_unknown_reward_or_option_is_a_did_you_mean_error():
    with pytest.raises(TunesmithError) as info:
        rewards_from(
            [{"name": "format", "patern": "x"}, {"name": "lenght"}, {"name": "length", "weight": "a"}]
        )
    text = str(info.value) + " ".join(info.value.details)
    assert "rewards[0].patern: unknown option (did you mean 'pattern'?)" in text
    assert "lenght" in text and "length" in text
    assert "rewards[2].weight: expected float" in text
    with pytest.raises(TunesmithError, match="not a regex"):
        rewards_from([{"name": "format", "pattern": "("}])
    with pytest.raises(TunesmithError, match="at least one reward"):
        rewards_from([])


def test_grpo_objective_checks_rewards_and_batch_before_training(tiny_model_dir, tmp_path):
    prompts = [Example(prompt=[{"role": "user", "content": "hi"}])]
    with pytest.raises(TunesmithError) as info:
        grpo(rewards=[{"name": "length", "targt": 3}])
    assert "objective.rewards[0].targt: unknown option (did you mean 'target'?)" in info.value.details
    with pytest.raises(TunesmithError) as info:
        grpo(rewards=[{"name": "length"}], num_generations=1)
    assert "objective.num_generations: must be at least 2 (a group), got 1" in info.value.details
    uneven = grpo(rewards=[{"name": "length"}], num_generations=3)
    with pytest.raises(TunesmithError, match="multiple of num_generations"):
        uneven.train(train_context(None, None, tmp_path / "b", prompts))


@pytest.mark.slow
def test_reward_model_reward_scores_with_a_saved_reward_run(run_config, tmp_path):
    """A finished `reward` run (built by the CLI) is loaded once and scores prompt + completion."""
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins
    from tunesmith_plugins.evaluators.preference_accuracy import reward_scores

    config = reward_run_config(run_config, tmp_path)
    result = CliRunner().invoke(cli, ["run", str(config)], obj=Plugins(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = config.parent / "runs" / "t"
    ((_, _, reward),) = rewards_from([{"name": "reward-model", "run": str(run_dir)}])
    example = Example(prompt=[{"role": "user", "content": "Pick: mnop"}])
    prompt = "<s><|user|>\nPick: mnop<|end|><|assistant|>\n"
    scores = reward.score([prompt, prompt], ["abcd", "wxyz"], [example, example])
    model, tokenizer = reward.load()
    assert reward.load()[0] is model  # loaded once
    expected = reward_scores(model, tokenizer, [prompt + "abcd<|end|>", prompt + "wxyz<|end|>"])
    assert scores == pytest.approx(expected, abs=1e-6)
    assert scores[0] > scores[1]


# --------------------------------------------------------------------------------------------- grpo


def write_preference_data(directory: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)

    def word(alphabet: str) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 6)))

    path = directory / f"pref-{seed}.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": "Pick: " + word("mnop"), "chosen": word("abcd"), "rejected": word("wxyz")})
            + "\n"
            for _ in range(n)
        ),
        encoding="utf-8",
    )
    return path


def reward_run_config(run_config, tmp_path: Path, **extra) -> Path:
    data = tmp_path / "pref"
    data.mkdir(exist_ok=True)
    train, test = write_preference_data(data, 48, seed=1), write_preference_data(data, 16, seed=2)
    return run_config(
        data__train={"name": "jsonl", "path": str(train)},
        data__test={"name": "jsonl", "path": str(test)},
        formatter={"name": "preference"},
        objective={"name": "reward"},
        evaluators=[{"name": "preference-accuracy"}, {"name": "perplexity"}],
        training={
            "max_steps": 12,
            "batch_size": 8,
            "logging_steps": 4,
            "save_steps": 0,
            "learning_rate": 1e-3,
        },
        **extra,
    )


@pytest.mark.slow
def test_run_with_reward_objective_and_preference_accuracy_end_to_end(run_config, tmp_path):
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins

    config = reward_run_config(run_config, tmp_path)
    result = CliRunner().invoke(cli, ["run", str(config)], obj=Plugins(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dir = config.parent / "runs" / "t"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    base, tuned = metrics["base"]["test"], metrics["tuned"]["test"]
    print(
        f"reward run (lora): test accuracy {base['preference-accuracy/accuracy']:.3f} -> "
        f"{tuned['preference-accuracy/accuracy']:.3f}"
    )
    assert tuned["preference-accuracy/accuracy"] > base["preference-accuracy/accuracy"]
    assert tuned["preference-accuracy/margin"] > base["preference-accuracy/margin"]
    # perplexity cannot score a reward model: recorded as an error, the run still completes
    assert any("needs a causal LM" in e for e in metrics["errors"])
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("accuracy" in entry for entry in log)  # TRL's reward metrics reach the run's log
    assert json.loads((run_dir / "final" / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_grpo_raises_the_mean_reward_on_held_out_prompts(tiny_model_dir, tmp_path, method):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith import EvalContext
    from tunesmith.evaluation import to_eval_examples
    from tunesmith.training import make_callbacks
    from tunesmith_plugins.methods.full import Full
    from tunesmith_plugins.methods.lora import Lora

    def prompts(n: int, seed: int) -> list[Example]:
        rng = random.Random(seed)
        words = ["".join(rng.choice("abcdefgh") for _ in range(4)) for _ in range(n)]
        return [Example(prompt=[{"role": "user", "content": f"Write: {w}"}]) for w in words]

    train, held_out = prompts(32, seed=1), prompts(16, seed=2)
    objective = grpo(rewards=[{"name": "format", "pattern": "[aeiou]"}], max_completion_length=8)
    (reward,) = objective.config.rewards
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = to_eval_examples(held_out, tokenizer)

    def mean_reward(m) -> float:
        torch.manual_seed(0)
        ctx = EvalContext(m, tokenizer, rendered, max_new_tokens=8)
        texts = [e.prompt for e in rendered] * 4
        completions = ctx.generate(texts, do_sample=True, temperature=1.0, top_k=0)
        return sum(reward.score(texts, completions, held_out * 4)) / len(texts)

    before = mean_reward(model)
    wrapper = Lora(Lora.Config(r=8, alpha=16)) if method == "lora" else Full()
    model = wrapper.apply(model)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = train_context(
        model,
        tokenizer,
        run_dir,
        train,
        callbacks=make_callbacks(run_dir),
        max_steps=20,
        batch_size=16,
        logging_steps=5,
        learning_rate=5e-4 if method == "full" else 2e-3,
    )
    started = time.monotonic()
    objective.train(ctx)
    after = mean_reward(model)
    print(
        f"grpo ({method}): held-out mean reward {before:.3f} -> {after:.3f}, {time.monotonic() - started:.1f} s"
    )
    assert after > before + 0.1
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("reward" in entry and "rewards/format/mean" in entry for entry in log)
