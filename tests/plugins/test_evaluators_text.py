"""Text-metric evaluators (bleu, rouge, accuracy), the blind human review and ``tunesmith compare``.

The evaluators are handed a stub context: they may only use the ``EvalContext`` API.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tunesmith import Example, TunesmithError
from tunesmith.cli import cli
from tunesmith.evaluation import EvalContext, EvalExample, to_eval_examples
from tunesmith.plugins import Plugins
from tunesmith_plugins.evaluators.accuracy import Accuracy, normalize_answer
from tunesmith_plugins.evaluators.bleu import Bleu
from tunesmith_plugins.evaluators.human_review import HumanReview
from tunesmith_plugins.evaluators.review_sheet import import_ratings
from tunesmith_plugins.evaluators.rouge import Rouge

REFERENCES = [
    "The cat is sitting on the mat today.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "Colorless green ideas sleep furiously.",
    "Running runners ran quickly home.",
]
PREDICTIONS = [
    "the cat sat on the mat today",
    "It was a bright cold day in April and the clocks struck thirteen.",
    "Green ideas sleep.",
    "The runner runs home quickly.",
]


class StubContext:
    """Just the ``EvalContext`` API, with canned answers instead of a model."""

    def __init__(
        self,
        examples: list[EvalExample],
        config: Any,
        answers: list[str] | None = None,
        scores: dict[tuple[str, str], tuple[float, int]] | None = None,
        *,
        split: str = "validation",
        label: str = "tuned",
        output_dir: Path | None = None,
    ) -> None:
        self.examples, self.config, self.answers, self.scores = examples, config, answers, scores
        self.split, self.label, self.output_dir = split, label, output_dir
        self.samples: list[dict[str, Any]] = []
        self.generate_calls: list[list[str]] = []

    answer = EvalContext.answer  # built on generate: the real one runs against the canned answers
    final_answer = None  # no reasoning to strip

    def generate(self, prompts: list[str], *, max_new_tokens: int | None = None, **kwargs: Any) -> list[str]:
        self.generate_calls.append(list(prompts))
        assert self.answers is not None and len(prompts) == len(self.answers)
        return list(self.answers)

    def score(self, prompts: list[str], completions: list[str]) -> list[tuple[float, int]]:
        assert self.scores is not None
        return [self.scores[(p, c)] for p, c in zip(prompts, completions, strict=True)]

    def record_samples(self, samples: list[dict[str, Any]]) -> None:
        self.samples.extend(samples)


def examples_for(references: list[str | None]) -> list[EvalExample]:
    return [EvalExample(prompt=f"q{i}: ", reference=r, origin=f"t:{i}") for i, r in enumerate(references)]


# --------------------------------------------------------------------------------------- bleu, rouge


@pytest.mark.parametrize(
    "options", [{}, {"lowercase": True}, {"tokenize": "intl"}, {"tokenize": "char", "lowercase": True}]
)
def test_bleu_equals_sacrebleu(options):
    from sacrebleu.metrics import BLEU

    config = Bleu.Config(**options)
    ctx = StubContext(examples_for([*REFERENCES, None]), config, PREDICTIONS)
    metrics = Bleu(config).evaluate(ctx)
    expected = BLEU(tokenize=config.tokenize, lowercase=config.lowercase).corpus_score(
        PREDICTIONS, [REFERENCES]
    )
    assert metrics == {"bleu": expected.score}
    assert 0 < metrics["bleu"] < 100  # sacrebleu's 0-100 scale
    assert ctx.generate_calls == [[f"q{i}: " for i in range(4)]]  # the example without reference skipped
    assert len(ctx.samples) == 3 and ctx.samples[0]["prediction"] == PREDICTIONS[0]


def test_bleu_rejects_an_unknown_tokenizer():
    config = Bleu.Config(tokenize="13b")
    with pytest.raises(TunesmithError, match="unknown tokenize '13b'.*13a"):
        Bleu(config).evaluate(StubContext(examples_for(REFERENCES), config, PREDICTIONS))


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_equals_rouge_score(use_stemmer):
    from rouge_score import rouge_scorer

    config = Rouge.Config(use_stemmer=use_stemmer)
    ctx = StubContext(examples_for(REFERENCES), config, PREDICTIONS)
    metrics = Rouge(config).evaluate(ctx)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)
    scores = [scorer.score(r, p) for r, p in zip(REFERENCES, PREDICTIONS, strict=True)]
    assert set(metrics) == {"rouge1", "rouge2", "rougeL"}
    for name in metrics:
        assert metrics[name] == pytest.approx(sum(s[name].fmeasure for s in scores) / len(scores), abs=1e-12)
        assert 0 < metrics[name] < 1


def test_rouge_stemming_changes_the_score():
    plain = Rouge(Rouge.Config()).evaluate(StubContext(examples_for(REFERENCES), None, PREDICTIONS))
    stemmed_cfg = Rouge.Config(use_stemmer=True)
    stemmed = Rouge(stemmed_cfg).evaluate(StubContext(examples_for(REFERENCES), stemmed_cfg, PREDICTIONS))
    assert stemmed["rouge1"] > plain["rouge1"]  # running/runners/runs share a stem


# ------------------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The Answer.", "answer"),
        ("  an   apple, a pear!  ", "apple pear"),
        ("Paris", "paris"),
        ("the theory", "theory"),  # only whole-word articles go
        ("«Bonjour» — l'ami…", "bonjour lami"),  # Unicode punctuation too
        ("A\tB\nC", "b c"),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_accuracy_generate_normalized_and_exact():
    refs = ["Paris", "the Eiffel Tower", "42", "blue"]
    answers = ["paris.", "Eiffel tower!", " 42\n", "red"]
    normalized = Accuracy(Accuracy.Config()).evaluate(StubContext(examples_for(refs), None, answers))
    assert normalized == {"accuracy": 0.75}
    cfg = Accuracy.Config(match="exact")
    assert Accuracy(cfg).evaluate(StubContext(examples_for(refs), cfg, answers)) == {"accuracy": 0.25}


def mc_examples() -> list[EvalExample]:
    return [
        EvalExample(prompt="P1", reference="yes", choices=["no", "yes"], origin="t:1"),
        EvalExample(prompt="P2", reference="short", choices=["short", "a much longer one"], origin="t:2"),
        EvalExample(prompt="P3", reference="x"),  # no choices: skipped in multiple-choice mode
    ]


def test_multiple_choice_picks_the_highest_score_and_length_normalisation_changes_the_pick():
    scores = {
        ("P1", "no"): (-5.0, 1),
        ("P1", "yes"): (-1.0, 1),
        # In total "short" is likelier; per token the long choice is (-1.0 vs -2.0).
        ("P2", "short"): (-4.0, 2),
        ("P2", "a much longer one"): (-6.0, 6),
    }
    total = Accuracy.Config(mode="multiple-choice")
    ctx = StubContext(mc_examples(), total, scores=scores)
    assert Accuracy(total).evaluate(ctx) == {"accuracy": 1.0}
    assert [s["prediction"] for s in ctx.samples] == ["yes", "short"]
    per_token = Accuracy.Config(mode="multiple-choice", length_normalize=True)
    ctx = StubContext(mc_examples(), per_token, scores=scores)
    assert Accuracy(per_token).evaluate(ctx) == {"accuracy": 0.5}
    assert [s["prediction"] for s in ctx.samples] == ["yes", "a much longer one"]


def test_multiple_choice_errors():
    cfg = Accuracy.Config(mode="multiple-choice")
    with pytest.raises(TunesmithError, match="no evaluation examples have choices"):
        Accuracy(cfg).evaluate(StubContext(examples_for(["a"]), cfg))
    bad = [EvalExample(prompt="P", reference="maybe", choices=["no", "yes"], origin="d.jsonl:3")]
    with pytest.raises(TunesmithError, match="d.jsonl:3.*'maybe' is not one of its choices"):
        Accuracy(cfg).evaluate(StubContext(bad, cfg, scores={}))


def test_choices_travel_from_example_to_eval_example():
    from tunesmith.testing.models import build_tokenizer

    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    (ex,) = to_eval_examples([Example(messages=chat, choices=["3", "4", "5"])], build_tokenizer())
    assert ex.choices == ["3", "4", "5"] and ex.reference == "4"


def test_multiple_choice_with_a_tiny_model_follows_ctx_score():
    from tunesmith.testing.models import build_random_model, build_tokenizer

    tok = build_tokenizer()
    model = build_random_model(tok, seed=5).eval()
    questions = [("Is the sky blue?", ["yes", "no", "yes yes yes yes yes yes yes yes yes yes"], "yes")]
    questions += [("Pick one", ["alpha", "b", "gamma delta epsilon"], "b"), ("Say hi", ["hi", "hello"], "hi")]
    examples = to_eval_examples(
        [
            Example(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": r}], choices=c)
            for q, c, r in questions
        ],
        tok,
    )
    for length_normalize in (False, True):
        cfg = Accuracy.Config(mode="multiple-choice", length_normalize=length_normalize)
        ctx = EvalContext(model, tok, examples, batch_size=2)
        metrics = Accuracy(cfg).evaluate(ctx)
        expected_hits = 0
        for ex, sample in zip(examples, ctx.samples, strict=True):
            scored = ctx.score([ex.prompt] * len(ex.choices), ex.choices)
            values = [lp / n if length_normalize else lp for lp, n in scored]
            best = ex.choices[values.index(max(values))]
            assert sample["prediction"] == best
            expected_hits += best == ex.reference
        assert metrics["accuracy"] == pytest.approx(expected_hits / len(examples))
    # A ten-word choice costs far more log-probability in total than one word: never picked.
    cfg = Accuracy.Config(mode="multiple-choice", show=10)
    ctx = EvalContext(model, tok, examples)
    Accuracy(cfg).evaluate(ctx)
    assert ctx.samples[0]["prediction"] != questions[0][1][2]


# -------------------------------------------------------------------------------------- human review

PROMPTS = [f"question {i}" for i in range(20)]
BASE = [f"base answer {i}" for i in range(20)]
TUNED = [f"tuned answer {i}" for i in range(20)]
TUNED[3] = "<script>alert('x')</script> & more"


def review_examples() -> list[EvalExample]:
    return [
        EvalExample(
            prompt=f"<s><|user|>\n{p}<|end|><|assistant|>\n",
            reference="r",
            messages=[{"role": "user", "content": p}],
            origin=f"d.jsonl:{i + 1}",
        )
        for i, p in enumerate(PROMPTS)
    ]


def run_review(out: Path | None, seed: int = 0) -> tuple[dict, dict]:
    cfg = HumanReview.Config(seed=seed)
    evaluator = HumanReview(cfg)
    base = evaluator.evaluate(StubContext(review_examples(), cfg, BASE, label="base", output_dir=out))
    tuned = evaluator.evaluate(StubContext(review_examples(), cfg, TUNED, label="tuned", output_dir=out))
    return base, tuned


def read_sheet(out: Path) -> list[dict[str, str]]:
    with (out / "review.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_human_review_writes_a_blind_sheet_that_the_key_decodes(tmp_path):
    out = tmp_path / "review"
    base, tuned = run_review(out)
    assert base == tuned == {"items": 20}
    rows = read_sheet(out)
    assert list(rows[0]) == ["id", "prompt", "response_a", "response_b", "rating"]
    assert [r["prompt"] for r in rows] == PROMPTS  # the messages, not the chat template markup
    assert all(r["rating"] == "" for r in rows)
    key = json.loads((out / "review_key.json").read_text())["items"]
    sides = []
    for i, row in enumerate(rows):
        entry = key[row["id"]]
        assert {entry["a"], entry["b"]} == {"base", "tuned"}
        answers = {"base": BASE[i], "tuned": TUNED[i]}
        assert row["response_a"] == answers[entry["a"]] and row["response_b"] == answers[entry["b"]]
        assert entry["origin"] == f"d.jsonl:{i + 1}" and entry["split"] == "validation"
        sides.append(entry["a"])
    assert 0 < sides.count("base") < 20  # the order is drawn per item
    # Seeded: the same seed gives the same order, another seed another one.
    run_review(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "review_key.json").read_text())["items"] == key
    run_review(tmp_path / "other", seed=1)
    assert json.loads((tmp_path / "other" / "review_key.json").read_text())["items"] != key


def test_human_review_html_escapes_the_answers(tmp_path):
    out = tmp_path / "review"
    run_review(out)
    page = (out / "review.html").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "question 19" in page and "tunesmith review import" in page


def test_human_review_without_an_output_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_review(None) == ({}, {})
    assert list(tmp_path.iterdir()) == []


def test_human_review_needs_the_base_answers(tmp_path):
    cfg = HumanReview.Config()
    ctx = StubContext(review_examples(), cfg, TUNED, label="tuned", output_dir=tmp_path / "review")
    with pytest.raises(TunesmithError, match="compare_base"):
        HumanReview(cfg).evaluate(ctx)


def test_human_review_keeps_every_split_on_one_sheet(tmp_path):
    out = tmp_path / "review"
    cfg = HumanReview.Config()
    evaluator = HumanReview(cfg)
    for split in ("validation", "test"):
        for label, answers in (("base", BASE), ("tuned", TUNED)):
            ctx = StubContext(review_examples(), cfg, answers, split=split, label=label, output_dir=out)
            evaluator.evaluate(ctx)
    ids = [r["id"] for r in read_sheet(out)]
    assert len(ids) == 40 and ids[0] == "test-1" and ids[-1] == "validation-20"


def test_run_evaluators_hands_the_output_dir_to_the_context(tmp_path):
    from tunesmith.evaluation import run_evaluators
    from tunesmith.testing.models import build_random_model, build_tokenizer

    tok = build_tokenizer()
    model = build_random_model(tok, seed=1).eval()
    chats = [[{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}] for p in PROMPTS[:3]]
    examples = to_eval_examples([Example(messages=m) for m in chats], tok)
    out = tmp_path / "review"
    common = dict(split="test", batch_size=2, max_new_tokens=4)
    nothing = run_evaluators(model, tok, [HumanReview()], examples, label="base", **common)
    assert nothing.metrics == {} and not out.exists()
    for label in ("base", "tuned"):
        result = run_evaluators(model, tok, [HumanReview()], examples, label=label, output_dir=out, **common)
        assert result.metrics == {"human-review/items": 3.0}
    assert [r["id"] for r in read_sheet(out)] == ["test-1", "test-2", "test-3"]


# --------------------------------------------------------------------------------------- review import


def invoke(*args: str):
    """Run the CLI as ``tunesmith.cli.main`` builds it: the built-in group plus the plugins' commands."""
    plugins = Plugins()
    group = copy.copy(cli)
    group.commands = dict(cli.commands)
    plugins.add_commands(group)
    return CliRunner().invoke(group, list(args), obj=plugins, catch_exceptions=False)


def test_review_import_is_a_command_of_the_human_review_plugin(monkeypatch):
    assert "review" not in cli.commands  # the core group knows nothing of review sheets
    result = invoke("--help")
    assert result.exit_code == 0 and "review" in result.output.split()
    assert "import" in invoke("review", "--help").output
    monkeypatch.setenv("TUNESMITH_DISABLE_PLUGINS", "human-review")
    result = invoke("--help")
    assert result.exit_code == 0 and "compare" in result.output.split()
    assert "review" not in result.output.split()
    assert invoke("review", "import", "run", "rated.csv").exit_code == 2  # click: no such command


def fill(out: Path, choose, path: Path) -> Path:
    """Write a rated copy of the sheet: ``choose(index, key_entry)`` gives each rating."""
    key = json.loads((out / "review_key.json").read_text())["items"]
    rows = read_sheet(out)
    for i, row in enumerate(rows):
        row["rating"] = choose(i, key[row["id"]])
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def tuned_side(entry):
    return "a" if entry["a"] == "tuned" else "b"


def base_side(entry):
    return "a" if entry["a"] == "base" else "b"


def test_review_import_counts_wins_ties_and_losses(tmp_path):
    run = tmp_path / "run"
    run_review(run / "review")

    # 10 tuned wins, 6 ties, 4 losses; ratings in any letter case.
    def choose(i, entry):
        if i < 10:
            return tuned_side(entry).upper()
        return " Tie " if i < 16 else base_side(entry)

    ratings = fill(run / "review", choose, tmp_path / "rated.csv")
    result = invoke("review", "import", str(run), str(ratings))
    assert result.exit_code == 0, result.output
    assert "50.0% (10)" in result.output and "30.0% (6)" in result.output and "20.0% (4)" in result.output
    saved = json.loads((run / "review" / "results.json").read_text())
    assert (saved["tuned_wins"], saved["ties"], saved["tuned_losses"], saved["rated"]) == (10, 6, 4, 20)
    assert (saved["win_rate"], saved["tie_rate"], saved["loss_rate"]) == (0.5, 0.3, 0.2)
    assert saved["by_split"]["validation"]["tuned_wins"] == 10
    assert saved == import_ratings(run, ratings)


def test_review_import_rejects_a_bad_rating_with_its_row(tmp_path):
    run = tmp_path / "run"
    run_review(run / "review")
    ratings = fill(run / "review", lambda i, e: "maybe" if i == 1 else "a", tmp_path / "rated.csv")
    result = invoke("review", "import", str(run), str(ratings))
    assert result.exit_code == 2
    assert "1 bad row" in result.output
    assert "row 3 (id validation-2): rating 'maybe'; use a, b or tie" in result.output
    assert not (run / "review" / "results.json").exists()


def test_review_import_rejects_unknown_ids_and_a_missing_key(tmp_path):
    run = tmp_path / "run"
    run_review(run / "review")
    ratings = fill(run / "review", lambda i, e: "tie", tmp_path / "rated.csv")
    text = ratings.read_text().replace("validation-5,", "validation-99,")
    ratings.write_text(text)
    result = invoke("review", "import", str(run), str(ratings))
    assert result.exit_code == 2 and "row 6: id 'validation-99' is not in the review key" in result.output
    result = invoke("review", "import", str(tmp_path), str(ratings))
    assert result.exit_code == 2 and "no review key" in result.output


# -------------------------------------------------------------------------------------------- compare


def fake_run(path: Path, model: str, base: dict, tuned: dict, status: str = "complete") -> Path:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"status": status}))
    (path / "config.yaml").write_text(f"model:\n  path: {model}\n")
    (path / "metrics.json").write_text(json.dumps({"base": base, "tuned": tuned, "train": {}}))
    return path


@pytest.fixture
def two_runs(tmp_path):
    base = {"validation": {"perplexity/perplexity": 30.0, "bleu/bleu": 1.5}}
    a = fake_run(
        tmp_path / "lora-r8",
        "tiny",
        base,
        {"validation": {"perplexity/perplexity": 12.5, "bleu/bleu": 20.25}},
    )
    b = fake_run(
        tmp_path / "full",
        "tiny",
        {"validation": {"perplexity/perplexity": 31.0}},
        {"validation": {"perplexity/perplexity": 9.0}, "test": {"accuracy/accuracy": 0.5}},
    )
    return a, b


def test_compare_shows_every_run_and_the_base_row(two_runs):
    a, b = two_runs
    result = invoke("compare", str(a), str(b))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("base" in line and "30.0000" in line for line in lines)
    assert any("lora-r8" in line and "12.5000" in line for line in lines)
    assert any("full" in line and "9.0000" in line for line in lines)
    assert "note" not in result.output  # same base model


def test_compare_json(two_runs):
    a, b = two_runs
    result = invoke("compare", str(a), str(b), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["columns"] == [
        "validation/perplexity/perplexity",
        "validation/bleu/bleu",
        "test/accuracy/accuracy",
    ]
    rows = {r["name"]: r["metrics"] for r in data["rows"]}
    assert [r["name"] for r in data["rows"]] == ["base", "lora-r8", "full"]
    assert rows["base"] == {"validation/perplexity/perplexity": 30.0, "validation/bleu/bleu": 1.5}
    assert rows["full"] == {"validation/perplexity/perplexity": 9.0, "test/accuracy/accuracy": 0.5}
    assert data["notes"] == []


def test_compare_notes_different_base_models(tmp_path, two_runs):
    a, _ = two_runs
    other = fake_run(tmp_path / "big", "org/big-model", {}, {"validation": {"bleu/bleu": 3.0}})
    data = json.loads(invoke("compare", str(a), str(other), "--json").output)
    assert len(data["notes"]) == 1 and "different base models" in data["notes"][0]
    assert "org/big-model" in data["notes"][0]


def test_compare_refuses_an_incomplete_run(tmp_path, two_runs):
    a, _ = two_runs
    running = fake_run(tmp_path / "crashed", "tiny", {}, {}, status="running")
    result = invoke("compare", str(a), str(running))
    assert result.exit_code == 2
    assert "crashed is not a complete run (status: running)" in result.output
    result = invoke("compare", str(a), str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "no run directory" in result.output


def test_bleu_of_an_empty_generation_is_zero():
    config = Bleu.Config()
    metrics = Bleu(config).evaluate(StubContext(examples_for(["a b c d e"]), config, [""]))
    assert metrics == {"bleu": 0.0}
