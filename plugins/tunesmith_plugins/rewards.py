"""Built-in reward functions for online RL objectives (``grpo``), and the ``mean-reward`` evaluator.

A reward scores completions: ``score(prompts, completions, examples) -> list[float]``, one float per
completion. ``prompts`` are the chat-rendered prompts (generation prompt included), ``completions`` the
generated answer texts, ``examples`` the :class:`tunesmith.Example` each prompt came from (its reference
answer is ``example.reference``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tunesmith import (
    EvalContext,
    Evaluator,
    Example,
    Register,
    Reward,
    TunesmithError,
    component,
    hookimpl,
    option,
)


class FormatReward(Reward):
    """1.0 when the completion matches a regular expression, else 0.0.

    `pattern` is searched (or, with `full_match`, must match the whole stripped completion), e.g.
    `^<answer>.*</answer>$` to reward a required answer format.
    """

    name = "format"

    @dataclass
    class Config:
        pattern: str = option(".+", help="Regular expression the completion must match")
        full_match: bool = option(False, help="The whole (stripped) completion must match, not just a part")
        ignore_case: bool = option(False, help="Match letters case-insensitively")
        multiline: bool = option(True, help="Let . match newlines (DOTALL) and ^/$ match at each line")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        c = self.config
        flags = (re.IGNORECASE if c.ignore_case else 0) | (re.DOTALL | re.MULTILINE if c.multiline else 0)
        try:
            self.regex = re.compile(c.pattern, flags)
        except re.error as exc:
            raise TunesmithError(f"reward 'format': pattern {c.pattern!r} is not a regex: {exc}") from None

    def score(self, prompts: list[str], completions: list[str], examples: list[Example]) -> list[float]:
        match = self.regex.fullmatch if self.config.full_match else self.regex.search
        return [1.0 if match(c.strip() if self.config.full_match else c) else 0.0 for c in completions]


class LengthReward(Reward):
    """Rewards completions of a target length: 1.0 at the target, falling linearly to 0 (or below).

    reward = 1 - |length - target| / tolerance, floored at `floor`. Length is counted in characters or
    words (`unit`).
    """

    name = "length"

    @dataclass
    class Config:
        target: int = option(20, help="Ideal length of a completion")
        unit: Literal["chars", "words"] = option(
            "chars", help="Count characters or whitespace-separated words"
        )
        tolerance: float = option(20.0, help="Distance from the target at which the reward reaches 0")
        floor: float = option(0.0, help="Lowest reward given (e.g. -1 to keep penalising very long answers)")

    def score(self, prompts: list[str], completions: list[str], examples: list[Example]) -> list[float]:
        c = self.config
        if c.tolerance <= 0:
            raise TunesmithError(f"reward 'length': tolerance must be positive, got {c.tolerance}")
        out = []
        for text in completions:
            n = len(text.split()) if c.unit == "words" else len(text)
            out.append(max(c.floor, 1.0 - abs(n - c.target) / c.tolerance))
        return out


def normalize_answer(text: str, *, case_sensitive: bool = False, strip_punctuation: bool = True) -> str:
    """Unicode NFKC, collapsed whitespace, optionally case-folded and without punctuation at the ends."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"\s+", " ", text).strip()
    if strip_punctuation:
        text = text.strip(".,;:!?\"'()[]{} ")
    return text if case_sensitive else text.casefold()


class ExactAnswerReward(Reward):
    """1.0 when the completion gives the example's reference answer, else 0.0.

    Both are normalised (Unicode NFKC, whitespace collapsed, case folded, punctuation stripped at the
    ends). `mode: equals` needs the whole completion to be the answer; `contains` accepts it anywhere
    (at word boundaries). Examples without a reference score 0.
    """

    name = "exact-answer"

    @dataclass
    class Config:
        mode: Literal["equals", "contains"] = option(
            "equals", help="equals: the completion is the answer; contains: the answer appears in it"
        )
        case_sensitive: bool = option(False, help="Compare letter case too")

    def score(self, prompts: list[str], completions: list[str], examples: list[Example]) -> list[float]:
        c = self.config
        out = []
        for text, ex in zip(completions, examples, strict=True):
            reference = ex.reference
            if reference is None:
                out.append(0.0)
                continue
            got = normalize_answer(text, case_sensitive=c.case_sensitive)
            want = normalize_answer(reference, case_sensitive=c.case_sensitive)
            if c.mode == "equals":
                hit = got == want
            else:
                hit = bool(want) and re.search(rf"(?<!\w){re.escape(want)}(?!\w)", got) is not None
            out.append(1.0 if hit else 0.0)
        return out


class SimilarityReward(Reward):
    """Partial credit: how close the completion is to the reference answer, from 0.0 to 1.0.

    The similarity is difflib's ratio (2·matches / total length) of the normalised strings, so an
    answer with one wrong character still earns most of the reward. Dense rewards like this give GRPO a
    signal long before whole answers are right; pair it with `exact-answer` to pay for finishing.
    """

    name = "similarity"

    @dataclass
    class Config:
        case_sensitive: bool = option(False, help="Compare letter case too")

    def score(self, prompts: list[str], completions: list[str], examples: list[Example]) -> list[float]:
        import difflib

        out = []
        for text, ex in zip(completions, examples, strict=True):
            if ex.reference is None:
                out.append(0.0)
                continue
            got = normalize_answer(text, case_sensitive=self.config.case_sensitive)
            want = normalize_answer(ex.reference, case_sensitive=self.config.case_sensitive)
            out.append(difflib.SequenceMatcher(None, got, want, autojunk=False).ratio())
        return out


class RewardModelReward(Reward):
    """The score of a trained reward model: a finished tunesmith run of the `reward` objective.

    `run` is the run directory. Its base model and trained head/adapter are loaded once (on first use) as
    a sequence classifier, and each prompt + completion is scored as the chat template renders it with
    the completion as the assistant's answer (end-of-turn included), as the reward model was trained.
    """

    name = "reward-model"

    @dataclass
    class Config:
        run: str = option("", help="Directory of a finished tunesmith run with objective 'reward'")
        batch_size: int = option(16, help="Sequences scored per forward pass")

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._loaded: tuple[Any, Any] | None = None

    def validate(self) -> Iterator[tuple[str, str]]:
        if not self.config.run:
            yield "run", "set it to the directory of a finished reward run (objective: reward)"

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer) of the reward run, loaded once."""
        if self._loaded is not None:
            return self._loaded
        from tunesmith import load_run

        finished = load_run(self.config.run)
        if finished.model_kind != "sequence-classification":
            raise TunesmithError(
                f"reward 'reward-model': {self.config.run} was trained with objective "
                f"'{finished.objective}', not a reward model (objective: reward)"
            )
        for parameter in finished.model.parameters():
            parameter.requires_grad_(False)
        self._loaded = (finished.model, finished.tokenizer)
        return self._loaded

    def score(self, prompts: list[str], completions: list[str], examples: list[Example]) -> list[float]:
        from tunesmith_plugins.evaluators.preference_accuracy import reward_scores

        model, tokenizer = self.load()
        texts = []
        for prompt, completion, ex in zip(prompts, completions, examples, strict=True):
            messages = ex.prompt_messages
            if messages is not None:
                # Render with the reward run's own template (the policy's may differ).
                texts.append(
                    tokenizer.apply_chat_template(
                        [*messages, {"role": "assistant", "content": completion}], tokenize=False
                    )
                )
            else:
                texts.append(prompt + completion)
        return reward_scores(model, tokenizer, texts, batch_size=self.config.batch_size)


# ------------------------------------------------------------------------------------ the evaluator


class MeanReward(Evaluator):
    """Mean reward of the model's greedy answers to the evaluation prompts, by reward plugins.

    `rewards` lists reward functions as in the grpo objective (`{name: <reward>, weight: 1.0, ...its
    options}`); the metric `reward` is the weighted sum averaged over examples, and `<name>` each
    reward's own mean. Use it to see what GRPO improved, base vs tuned.
    """

    name = "mean-reward"

    @dataclass
    class Config:
        rewards: list[Reward] = component(
            "reward", many=True, help="Reward functions: [{name: format, weight: 1.0, pattern: ...}]"
        )
        max_new_tokens: int | None = option(None, help="Generation length limit (default: the run's)")
        show: int = option(3, help="How many scored answers to keep for the report")

    def validate(self) -> Iterator[tuple[str, str]]:
        if not self.config.rewards:
            yield "rewards", "list at least one reward, e.g. [{name: format, pattern: '...'}]"

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        cfg = self.config
        rewards = labelled(cfg.rewards)
        examples = [ex for ex in ctx.examples if ex.messages is not None]
        if not examples:
            raise TunesmithError("mean-reward: no evaluation example has a prompt")
        prompts = [ex.prompt for ex in examples]
        completions = ctx.generate(prompts, max_new_tokens=cfg.max_new_tokens)
        as_examples = [
            Example(prompt=ex.messages, completion=ex.reference, origin=ex.origin) for ex in examples
        ]
        totals = [0.0] * len(examples)
        metrics: dict[str, float] = {}
        for label, weight, reward in rewards:
            scores = [float(s) for s in reward.score(prompts, completions, as_examples)]
            metrics[label] = sum(scores) / len(scores)
            totals = [t + weight * s for t, s in zip(totals, scores, strict=True)]
        ctx.record_samples(
            [
                {"prompt": p, "reference": ex.reference, "prediction": c, "reward": t}
                for p, ex, c, t in list(zip(prompts, examples, completions, totals, strict=True))[: cfg.show]
            ]
        )
        return {"reward": sum(totals) / len(totals), **metrics}


def labelled(rewards: list[Reward]) -> list[tuple[str, float, Reward]]:
    """``(label, weight, reward)`` per reward; labels are the names, numbered when a name repeats."""
    out: list[tuple[str, float, Reward]] = []
    seen: dict[str, int] = {}
    for reward in rewards:
        seen[reward.name] = seen.get(reward.name, 0) + 1
        label = reward.name if seen[reward.name] == 1 else f"{reward.name}_{seen[reward.name]}"
        out.append((label, float(reward.weight), reward))
    return out


@hookimpl
def register_rewards(register: Register[Reward]) -> None:
    register(FormatReward)
    register(LengthReward)
    register(ExactAnswerReward)
    register(SimilarityReward)
    register(RewardModelReward)


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(MeanReward)
