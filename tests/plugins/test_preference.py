"""Preference data and objectives: formatters, tokenization checks, TRL's DPO loss against the paper's
formulas, config-time refusals, and DPO / ORPO / KTO / SimPO actually moving held-out preference accuracy."""

from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tunesmith import Example, InvalidRecord, Record
from tunesmith_plugins.formatters import PreferenceFormatter, PromptFormatter, UnpairedFormatter


def fmt(formatter: Any, fields: dict) -> Example:
    return formatter.format(Record(fields, "f.jsonl:1"))


def user(text: str = "q") -> dict:
    return {"role": "user", "content": text}


def bot(text: str = "a") -> dict:
    return {"role": "assistant", "content": text}


# ------------------------------------------------------------------------------------- formatters


def test_preference_strings_and_messages() -> None:
    example = fmt(
        PreferenceFormatter(), {"prompt": "2+2?", "chosen": "4", "rejected": "5", "system": "Terse."}
    )
    assert example.kind == "preference"
    assert example.prompt == [{"role": "system", "content": "Terse."}, user("2+2?")]
    assert (example.chosen, example.rejected, example.reference) == ("4", "5", "4")
    conversational = fmt(
        PreferenceFormatter(),
        {"prompt": [user("hi"), bot("hello"), user("2+2?")], "chosen": [bot("4")], "rejected": [bot("5")]},
    )
    assert conversational.prompt == [user("hi"), bot("hello"), user("2+2?")]
    assert (conversational.chosen, conversational.rejected) == ("4", "5")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"chosen": "a", "rejected": "b"}, "prompt", "missing"),
        ({"prompt": "q", "rejected": "b"}, "chosen", "missing"),
        ({"prompt": "q", "chosen": "a"}, "rejected", "missing"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt", "expected a string or a list"),
        ({"prompt": "q", "chosen": {"text": "a"}, "rejected": "b"}, "chosen", "got an object"),
        ({"prompt": "q", "chosen": " ", "rejected": "b"}, "chosen", "empty completion"),
        ({"prompt": "q", "chosen": "a", "rejected": ""}, "rejected", "empty completion"),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, "rejected", "teaches no preference"),
        ({"prompt": [], "chosen": "a", "rejected": "b"}, "prompt", "empty conversation"),
        ({"prompt": [{"role": "human", "content": "q"}], "chosen": "a", "rejected": "b"}, "prompt[0].role", "did you mean 'user'?"),
        ({"prompt": [user(), bot()], "chosen": "a", "rejected": "b"}, "prompt[1].role", "must end with a user turn"),
        ({"prompt": "q", "chosen": [bot("a"), bot("b")], "rejected": "b"}, "chosen", "one assistant turn"),
        ({"prompt": "q", "chosen": [user("a")], "rejected": "b"}, "chosen[0].role", "expected an assistant turn"),
        ({"prompt": [{"role": "system", "content": "s"}, user()], "system": "t", "chosen": "a", "rejected": "b"}, "system", "both"),
    ],
)  # fmt: skip
def test_preference_errors(fields: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        fmt(PreferenceFormatter(), fields)
    assert info.value.field == field
    assert message in info.value.message


def test_unpaired_and_prompt() -> None:
    example = fmt(UnpairedFormatter(), {"prompt": "q", "completion": [bot("a")], "label": False})
    assert (example.kind, example.completion, example.label, example.reference) == (
        "unpaired",
        "a",
        False,
        None,
    )
    for label, message in ((1, "got a number 1"), ("yes", "got a string 'yes'")):
        with pytest.raises(InvalidRecord) as info:
            fmt(UnpairedFormatter(), {"prompt": "q", "completion": "a", "label": label})
        assert info.value.field == "label" and message in info.value.message
    with pytest.raises(InvalidRecord) as info:
        fmt(UnpairedFormatter(), {"prompt": "q", "completion": "a"})
    assert (info.value.field, info.value.message) == ("label", "missing")
    prompt = fmt(PromptFormatter(), {"prompt": "2+2?", "answer": "4"})
    assert (prompt.kind, prompt.prompt, prompt.reference) == ("prompt", [user("2+2?")], "4")
    assert fmt(PromptFormatter(), {"prompt": "2+2?"}).completion is None


def test_broken_preference_jsonl_reports_file_and_line(tmp_path: Path) -> None:
    from tunesmith.data import read_split
    from tunesmith_plugins.sources import JsonlSource

    path = tmp_path / "pairs.jsonl"
    lines = [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a"},
        "not json",
        {"prompt": "q", "chosen": "a", "rejected": "a"},
        {"prompt": [{"role": "bot", "content": "q"}], "chosen": "a", "rejected": "b"},
    ]
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    examples, problems = read_split(JsonlSource(JsonlSource.Config(path=str(path))), PreferenceFormatter())
    assert len(examples) == 1 and examples[0].origin.endswith("pairs.jsonl:1")
    shown = [str(p) for p in problems]
    assert [s.split(": ")[0].rsplit(":", 1)[1] for s in shown] == ["2", "3", "4", "5"]
    assert "field 'rejected': missing" in shown[0]
    assert "field 'rejected': identical to chosen" in shown[2]
    assert "field 'prompt[0].role': unknown role 'bot'" in shown[3]


# ------------------------------------------------------------------------------------ tokenizing


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tunesmith.testing.models import build_tokenizer

    return build_tokenizer()


def test_tokenize_preference_measures_the_longer_answer(tokenizer: Any) -> None:
    from tunesmith.data import IGNORE_INDEX, tokenize_example

    example = Example(prompt=[user("q")], chosen="ab", rejected="abcdefgh", origin="p.jsonl:3")
    [tokenized] = tokenize_example(example, tokenizer, max_length=64)
    trained = [
        t for t, label in zip(tokenized.input_ids, tokenized.labels, strict=True) if label != IGNORE_INDEX
    ]
    assert tokenizer.decode(trained) == "ab<|end|>"  # the chosen answer and its end-of-turn only
    n_chosen = len(tokenized.input_ids)
    with pytest.raises(InvalidRecord) as info:
        tokenize_example(example, tokenizer, max_length=n_chosen + 2)
    assert (
        f"{n_chosen} tokens with the chosen answer and {n_chosen + 6} with the rejected" in info.value.message
    )
    [cut] = tokenize_example(example, tokenizer, max_length=n_chosen + 2, truncate=True)
    assert cut.truncated and cut.input_ids == tokenized.input_ids


def test_tokenize_unpaired_and_prompt_kinds(tokenizer: Any) -> None:
    from tunesmith.data import tokenize_split

    examples = [
        Example(prompt=[user("q")], completion="yes", label=False, origin="u:1"),
        Example(prompt=[user("q")], completion="4", origin="p:1"),
    ]
    done, problems, stats = tokenize_split(examples, tokenizer, max_length=64)
    assert not problems
    assert done[0].num_trained == len("yes") + 1  # completion + end-of-turn
    assert done[1].num_trained == 0  # a bare prompt trains nothing, and that is not an error
    assert tokenizer.decode(done[1].input_ids).endswith("<|assistant|>\n")
    assert stats.count == 2


# ------------------------------------------------------------------------- DPO loss vs the paper


class _Accelerator:
    device = "cpu"

    @staticmethod
    def gather_for_metrics(x: Any) -> Any:
        return x

    gather = gather_for_metrics


def _trl_dpo_loss(
    loss_type: str, beta: float, policy: list[tuple[list[float], list[float]]], ref: Any
) -> float:
    """Run TRL's own ``DPOTrainer._compute_loss`` on fixed per-token log-probabilities.

    ``policy`` holds, per pair, the chosen and rejected answers' per-token log-probs; ``ref`` the
    reference's sequence log-probs (chosen, rejected) per pair. The model is a stub returning those
    log-probs; reference log-probs come in as precomputed (TRL's ``precompute_ref_log_probs`` path).
    """
    import torch
    from trl import DPOTrainer

    rows = [c for c, _ in policy] + [r for _, r in policy]  # TRL batches [chosen..., rejected...]
    width = max(len(r) for r in rows) + 1
    log_probs = torch.zeros(len(rows), width - 1)
    completion_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        log_probs[i, : len(row)] = torch.tensor(row)
        completion_mask[i, 1 : len(row) + 1] = 1

    def model(**kwargs: Any) -> Any:
        shape = log_probs.shape
        return SimpleNamespace(
            log_probs=log_probs,
            entropy=torch.zeros(shape),
            mean_logits=torch.zeros(shape),
            is_top1=torch.zeros(shape, dtype=torch.bool),
        )

    model.training = True  # type: ignore[attr-defined]
    trainer = object.__new__(DPOTrainer)
    trainer.__dict__.update(
        model=model,
        accelerator=_Accelerator(),
        precompute_ref_logps=True,
        aux_loss_enabled=False,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": __import__("collections").defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.ones(len(rows), width, dtype=torch.long),
        "attention_mask": torch.ones(len(rows), width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": torch.tensor([c for c, _ in ref]),
        "ref_rejected_logps": torch.tensor([r for _, r in ref]),
    }
    return float(trainer._compute_loss(model, inputs, return_outputs=False))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Two pairs with fixed log-probabilities: per-token policy log-probs (chosen, rejected), and the
# reference's sequence log-probs (chosen, rejected).
POLICY = [([-0.5, -1.0], [-2.0, -0.5, -1.5]), ([-3.0], [-0.25])]
REF = [(-2.0, -3.5), (-2.5, -1.0)]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_trl_dpo_loss_matches_the_papers(beta: float) -> None:
    deltas = []
    for (chosen, rejected), (ref_c, ref_r) in zip(POLICY, REF, strict=True):
        deltas.append((sum(chosen) - ref_c) - (sum(rejected) - ref_r))
    # DPO (Rafailov et al., eq. 7): -log σ(β[(π_c - ref_c) - (π_r - ref_r)]), averaged over pairs.
    sigmoid = sum(-math.log(_sigmoid(beta * d)) for d in deltas) / len(deltas)
    assert _trl_dpo_loss("sigmoid", beta, POLICY, REF) == pytest.approx(sigmoid, rel=1e-6)
    # SLiC hinge: max(0, 1 - βΔ).
    hinge = sum(max(0.0, 1 - beta * d) for d in deltas) / len(deltas)
    assert _trl_dpo_loss("hinge", beta, POLICY, REF) == pytest.approx(hinge, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_trl_ipo_loss_matches_the_paper(beta: float) -> None:
    # IPO (Azar et al., eq. 17): (Δ - 1/(2β))². With one-token answers this is the paper's formula as is;
    # with longer answers TRL divides each log-ratio by its answer's token count first (its documented
    # normalisation, confirmed with the IPO authors), which the second case checks.
    one_token = [([-0.5], [-2.0]), ([-3.0], [-0.25])]
    deltas = [(c[0] - rc) - (r[0] - rr) for (c, r), (rc, rr) in zip(one_token, REF, strict=True)]
    ipo = sum((d - 1 / (2 * beta)) ** 2 for d in deltas) / len(deltas)
    assert _trl_dpo_loss("ipo", beta, one_token, REF) == pytest.approx(ipo, rel=1e-6)
    normalised = [
        (sum(c) - rc) / len(c) - (sum(r) - rr) / len(r) for (c, r), (rc, rr) in zip(POLICY, REF, strict=True)
    ]
    ipo_per_token = sum((d - 1 / (2 * beta)) ** 2 for d in normalised) / len(normalised)
    assert _trl_dpo_loss("ipo", beta, POLICY, REF) == pytest.approx(ipo_per_token, rel=1e-6)


# ------------------------------------------------------------------------------- config / CLI


def _config(tmp_path: Path, objective: dict, method: dict, formatter: str = "preference") -> dict:
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    return {
        "model": {"path": str(tmp_path)},
        "data": {"train": {"name": "jsonl", "path": str(data)}},
        "formatter": {"name": formatter},
        "method": method,
        "objective": objective,
        "evaluators": [],
    }


@pytest.mark.parametrize(
    ("objective", "method", "reason"),
    [
        ({"name": "dpo", "reference": "adapter"}, {"name": "full"}, "trains the model's own weights"),
        ({"name": "kto", "reference": "adapter"}, {"name": "freeze", "last_n_layers": 1}, "reference: auto"),
        ({"name": "dpo", "reference": "model"}, {"name": "lora"}, "at no memory cost"),
    ],
)
def test_impossible_reference_is_refused_at_config_time(
    tmp_path: Path, objective: dict, method: dict, reason: str
) -> None:
    from tunesmith import TunesmithError
    from tunesmith.config import resolve
    from tunesmith.plugins import Plugins

    with pytest.raises(TunesmithError) as info:
        resolve(_config(tmp_path, objective, method), Plugins())
    text = str(info.value) + " ".join(getattr(info.value, "details", []) or [])
    assert f"objective '{objective['name']}' cannot train with method '{method['name']}'" in text
    assert reason in text


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "prompt-tuning", "adapter"])
def test_every_method_is_accepted_with_the_default_reference(tmp_path: Path, method: str) -> None:
    from tunesmith.config import resolve
    from tunesmith.plugins import Plugins

    for objective in ("dpo", "orpo", "kto", "simpo"):
        resolved = resolve(_config(tmp_path, {"name": objective}, {"name": method}), Plugins())
        assert resolved.objective.tokenized is False


def test_dpo_with_alpaca_data_is_refused_before_any_model_loads(run_config: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins

    config = run_config(objective={"name": "dpo"})
    result = CliRunner().invoke(cli, ["run", str(config)], obj=Plugins())
    assert result.exit_code == 2, result.output
    assert "objective 'dpo' trains on preference examples" in result.output
    assert "formatter 'alpaca' produced chat examples" in result.output
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- objectives really train


def sign_task(n: int, seed: int) -> list[Example]:
    """Prefer 'A' after a '+' prompt and 'B' after a '-' prompt; words in the prompt are noise.

    The rule depends on the prompt, so a model that merely prefers one letter scores ~0.5 on balanced
    held-out pairs; a random model is near chance.
    """
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 4)))
        sign = "+-"[i % 2]
        chosen, rejected = ("A", "B") if sign == "+" else ("B", "A")
        examples.append(Example(prompt=[user(f"{word} {sign}")], chosen=chosen, rejected=rejected))
    return examples


def preference_accuracy(model: Any, tokenizer: Any, examples: list[Example]) -> float:
    """Fraction of pairs where the model's log-likelihood of chosen exceeds that of rejected."""
    import torch

    from tunesmith.data import render_prompt

    def loglik(example: Example, answer: str) -> float:
        prompt = tokenizer(render_prompt(tokenizer, example), add_special_tokens=False)["input_ids"]
        ids = prompt + tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        logps = torch.log_softmax(logits, -1)[len(prompt) - 1 :]
        return logps.gather(1, torch.tensor(ids[len(prompt) :])[:, None]).sum().item()

    model.eval()
    wins = [loglik(ex, ex.chosen) > loglik(ex, ex.rejected) for ex in examples]
    return sum(wins) / len(wins)


@pytest.fixture(scope="module")
def saved_random_model() -> Path:
    from tunesmith.testing.models import build_random_model, build_tokenizer

    path = Path(tempfile.mkdtemp(prefix="tiny-pref-"))
    tokenizer = build_tokenizer()
    build_random_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


PAIRS = [
    ("dpo", "full"),
    ("dpo", "lora"),
    ("dpo", "qlora"),
    ("orpo", "full"),
    ("orpo", "lora"),
    ("orpo", "qlora"),
    ("kto", "full"),
    ("kto", "lora"),
    ("kto", "qlora"),
    ("simpo", "full"),
    ("simpo", "lora"),
    ("simpo", "qlora"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("objective", "method"), PAIRS)
def test_objective_raises_held_out_preference_accuracy(
    saved_random_model: Path, tmp_path: Path, objective: str, method: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from tunesmith import Device, TrainContext
    from tunesmith.plugins import Plugins
    from tunesmith.schema import TrainingConfig

    plugins = Plugins()
    m = plugins.get("method", method)()
    o = plugins.get("objective", objective)()
    tokenizer = AutoTokenizer.from_pretrained(saved_random_model)
    model = AutoModelForCausalLM.from_pretrained(saved_random_model, **m.model_load_kwargs("cpu"))
    held_out = sign_task(64, seed=2)
    before = preference_accuracy(model, tokenizer, held_out)
    set_seed(0)
    model = m.apply(model)
    training = TrainingConfig(
        max_steps=30,
        learning_rate=1e-4 if method == "full" else 1e-3,
        batch_size=8,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        logging_steps=10,
        save_steps=1000,  # no checkpoint within 30 steps
    )
    ctx = TrainContext(
        model=model,
        tokenizer=tokenizer,
        training=training,
        device=Device("cpu"),
        run_dir=tmp_path,
        train_examples=sign_task(256, seed=1),
    )
    args = o.args(ctx, SimpleNamespace)  # what the TRL config receives
    assert args.bf16 is False and args.gradient_checkpointing is False
    metrics = o.train(ctx)
    after = preference_accuracy(model, tokenizer, held_out)
    assert metrics["train_loss"] == metrics["train_loss"]  # not NaN
    assert before < 0.7 and after >= 0.9, (before, after)
    if m.produces_adapter:  # TRL's frozen reference adapter is gone: the artifact is the trained one only
        assert list(model.peft_config) == ["default"]
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
