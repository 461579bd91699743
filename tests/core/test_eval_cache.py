"""Evaluation cheaper than training: shared forward passes, early-stopping generation, base-model cache.

Every reused result is compared with a cold computation of the same thing; forward passes are counted
with a hook on the model's output head (one call per forward pass).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import upper_task, write_jsonl

from tunesmith import EvalContext, Example
from tunesmith.config import resolve
from tunesmith.eval_cache import BaseEvalCache
from tunesmith.evaluation import evaluate, run_evaluators, to_eval_examples
from tunesmith.plugins import Plugins
from tunesmith.prepare import prepare
from tunesmith.testing.models import build_random_model, build_tokenizer
from tunesmith.ui import Quiet
from tunesmith_plugins.evaluators.bleu import Bleu
from tunesmith_plugins.evaluators.exact_match import ExactMatch
from tunesmith_plugins.evaluators.perplexity import Perplexity
from tunesmith_plugins.evaluators.rouge import Rouge


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_random_model(tok, seed=3).eval()


def chat_examples(tok, n: int = 6):
    words = ["alpha", "beta", "gamma delta", "epsilon", "zeta eta theta", "iota"][:n]
    examples = [
        Example(messages=[{"role": "user", "content": f"repeat {w}"}, {"role": "assistant", "content": w}])
        for w in words
    ]
    return to_eval_examples(examples, tok)


class ForwardCounter:
    """Counts forward passes of a model (its output head runs once per pass)."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        self.handle = self.model.lm_head.register_forward_hook(self._count)
        return self

    def _count(self, module, args, output):
        self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------------------- shared forward passes


def test_generation_evaluators_share_one_generation_pass(model, tok):
    examples = chat_examples(tok)
    evaluators = [ExactMatch(), Bleu(), Rouge()]
    with ForwardCounter(model) as alone:
        run_evaluators(model, tok, [ExactMatch()], examples, split="test", label="tuned", batch_size=4)
    with ForwardCounter(model) as shared:
        together = run_evaluators(model, tok, evaluators, examples, split="test", label="tuned", batch_size=4)
    assert shared.calls == alone.calls > 0  # bleu and rouge reused exact-match's generations
    for evaluator in evaluators:  # ... and the numbers are those of each on its own
        own = run_evaluators(model, tok, [evaluator], examples, split="test", label="tuned", batch_size=4)
        for name, value in own.metrics.items():
            assert together.metrics[name] == value
        assert together.samples[evaluator.name] == own.samples[evaluator.name]


def test_scores_are_computed_once_per_pass(model, tok):
    examples = chat_examples(tok)
    with ForwardCounter(model) as counter:
        twice = run_evaluators(
            model, tok, [Perplexity(), Perplexity()], examples, split="test", label="tuned", batch_size=4
        )
        once = counter.calls
    cold = run_evaluators(model, tok, [Perplexity()], examples, split="test", label="tuned", batch_size=4)
    assert once == 2  # six examples in batches of four: the second evaluator ran no forward pass
    assert twice.metrics == cold.metrics


def test_a_memo_is_per_option_and_sampling_is_never_reused(model, tok):
    prompts = [ex.prompt for ex in chat_examples(tok, 2)]
    ctx = EvalContext(model, tok, [], batch_size=2)
    with ForwardCounter(model) as counter:
        ctx.generate(prompts, max_new_tokens=3)
        ctx.generate(prompts, max_new_tokens=3)
        same = counter.calls
        ctx.generate(prompts, max_new_tokens=4)  # other options: generated again
        longer = counter.calls - same
        ctx.generate(prompts, max_new_tokens=3, do_sample=True)
        ctx.generate(prompts, max_new_tokens=3, do_sample=True)
        sampled = counter.calls - same - longer
    assert same <= 3 and longer > 0 and sampled > same


def test_generation_stops_as_soon_as_every_row_has_finished(model, tok):
    """Both rows are forced to end (EOS) by the third token: the batch stops there, not at 20."""
    prompts = [ex.prompt for ex in chat_examples(tok, 2)]
    calls = {"n": 0}

    def end_rows(module, args, output):
        calls["n"] += 1
        row = {2: 0, 3: 1}.get(calls["n"])  # row 0 ends at its 2nd token, row 1 at its 3rd
        if row is not None:
            output = output.clone()
            output[row, -1, :] = -1e9
            output[row, -1, tok.eos_token_id] = 1e9
        return output

    handle = model.lm_head.register_forward_hook(end_rows)
    try:
        out = EvalContext(model, tok, [], batch_size=2).generate(prompts, max_new_tokens=20)
    finally:
        handle.remove()
    assert calls["n"] == 3
    assert all(len(tok(text, add_special_tokens=False)["input_ids"]) <= 2 for text in out)


# ------------------------------------------------------------------------------ base-model cache


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    """A config on the tiny random model and a function that evaluates its base model with the cache."""
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", upper_task(16, seed=1))
    write_jsonl(data / "test.jsonl", upper_task(6, seed=2))
    config = {
        "name": "t",
        "output_dir": str(tmp_path / "runs" / "{name}"),
        "model": {"path": str(tiny_model_dir)},
        "data": {
            "train": {"name": "jsonl", "path": str(data / "train.jsonl")},
            "test": {"name": "jsonl", "path": str(data / "test.jsonl")},
            "max_length": 128,
        },
        "evaluators": [{"name": "perplexity"}, {"name": "exact-match"}],
        "evaluation": {"max_new_tokens": 6, "batch_size": 4},
    }
    plugins = Plugins()
    models: dict[str, object] = {}

    def base_pass(changes=None, model_dir=None):
        import copy

        from transformers import AutoModelForCausalLM

        cfg = copy.deepcopy(config)
        (changes or (lambda c: None))(cfg)
        if model_dir is not None:
            cfg["model"]["path"] = str(model_dir)
        resolved = resolve(cfg, plugins)
        prepared, tokenizer = prepare(resolved, Quiet(), plugins)
        path = cfg["model"]["path"]
        if path not in models:
            models[path] = AutoModelForCausalLM.from_pretrained(path).eval()
        model = models[path]
        cache = BaseEvalCache.for_run(model, tokenizer, resolved)
        with ForwardCounter(model) as counter:
            metrics, samples, errors, _ = evaluate(
                model, tokenizer, resolved, prepared, "base", Quiet(), cache=cache
            )
        assert not errors
        return metrics, samples, cache, counter.calls

    return base_pass, data


def reused(cache) -> set[str]:
    return {r["evaluator"] for r in cache.reused}


def test_an_unchanged_base_pass_is_reused_exactly(setup):
    base_pass, _ = setup
    cold_metrics, cold_samples, cold, cold_calls = base_pass()
    warm_metrics, warm_samples, warm, warm_calls = base_pass()
    assert reused(cold) == set() and cold_calls > 0
    assert reused(warm) == {"perplexity", "exact-match"} and warm_calls == 0
    assert warm_metrics == cold_metrics and warm_samples == cold_samples
    assert warm.summary()["reused"][0]["computed_at"]


def _option(evaluator: int, **options):
    def change(cfg):
        cfg["evaluators"][evaluator].update(options)

    return change


def _evaluation(**options):
    def change(cfg):
        cfg["evaluation"].update(options)

    return change


@pytest.mark.parametrize(
    ("change", "recomputed"),
    [
        (_option(1, normalize="whitespace"), {"exact-match"}),  # an evaluator's option: that evaluator
        (_evaluation(max_new_tokens=5), {"perplexity", "exact-match"}),  # generation settings
        (_evaluation(batch_size=2), {"perplexity", "exact-match"}),
        (_evaluation(strip_reasoning=False), {"perplexity", "exact-match"}),
        (_evaluation(max_examples=4), {"perplexity", "exact-match"}),  # the evaluation data
        (
            lambda cfg: cfg.setdefault("template", {}).update(
                chat_template="{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}"
            ),
            {"perplexity", "exact-match"},  # the chat template
        ),
    ],
)
def test_each_key_change_recomputes(setup, change, recomputed):
    base_pass, _ = setup
    base_pass()
    _, _, cache, _ = base_pass(change)
    assert {"perplexity", "exact-match"} - reused(cache) == recomputed


def test_changed_test_data_recomputes(setup):
    base_pass, data = setup
    base_pass()
    write_jsonl(data / "test.jsonl", upper_task(6, seed=3))
    _, _, cache, _ = base_pass()
    assert reused(cache) == set()


def test_changed_model_weights_recompute(setup, tiny_model_dir, tmp_path):
    base_pass, _ = setup
    copy = tmp_path / "model-copy"
    shutil.copytree(tiny_model_dir, copy)
    base_pass(model_dir=copy)
    _, _, same, _ = base_pass(model_dir=copy)
    assert reused(same) == {"perplexity", "exact-match"}
    from safetensors.torch import load_file, save_file

    weights = copy / "model.safetensors"
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})
    _, _, changed, _ = base_pass(model_dir=copy)
    assert reused(changed) == set()


# --------------------------------------------------------------------------------------- a run


def run_twice(tmp_path, run_config, **overrides):
    from tunesmith.pipeline import run

    plugins = Plugins()
    out = []
    for name in ("first", "second"):
        data = yaml.safe_load(Path(run_config(**overrides)).read_text())
        data["name"] = name
        out.append(run(resolve(data, plugins), plugins))
    return [json.loads((r.run_dir / "metrics.json").read_text()) for r in out], out


@pytest.mark.slow
def test_a_second_run_reuses_the_base_scores_and_says_so(tmp_path, run_config):
    evaluators = [
        {"name": "perplexity"},
        {"name": "exact-match"},
        {"name": "forgetting", "max_documents": 4, "threshold": 100.0},
    ]
    (first, second), results = run_twice(tmp_path, run_config, evaluators=evaluators)
    assert first["evaluation"]["base_cache"]["reused"] == []
    assert {r["evaluator"] for r in second["evaluation"]["base_cache"]["reused"]} == {
        "perplexity",
        "exact-match",
        "forgetting",
    }
    assert second["base"] == first["base"]
    # the forgetting gate still compares tuned with base, the base side now from the cache
    assert [g["name"] for g in second["gates"]] == [g["name"] for g in first["gates"]] == ["forgetting"]
    assert second["tuned"]["test"]["forgetting/relative_change"] == pytest.approx(
        first["tuned"]["test"]["forgetting/relative_change"]
    )
    report = (results[1].run_dir / "report.md").read_text()
    assert "(cached)" in report and "(cached)" not in (results[0].run_dir / "report.md").read_text()


@pytest.mark.slow
def test_cache_base_false_always_evaluates_the_base_model(tmp_path, run_config):
    (first, second), _ = run_twice(
        tmp_path, run_config, evaluation={"max_new_tokens": 4, "cache_base": False}
    )
    assert second["evaluation"]["base_cache"] == {"enabled": False, "reused": [], "computed": []}
    assert second["base"] == first["base"]


def test_clearing_the_cache_forgets_base_scores(setup):
    from tunesmith import cache as disk_cache

    base_pass, _ = setup
    base_pass()
    assert {u.kind: u.entries for u in disk_cache.usage()}["eval"] == 2
    disk_cache.clear()
    _, _, after, _ = base_pass()
    assert reused(after) == set()
