"""Reward modelling with TRL's ``RewardTrainer``: a sequence classifier learns to score chosen > rejected.

The base model is loaded with a one-output classification head (``model_kind =
"sequence-classification"``); the loss is the Bradley-Terry ``-log σ(r(chosen) − r(rejected))`` over
each preference pair, the reward being read at the last non-pad token of the whole conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tunesmith import Objective, Register, hookimpl, option

# Methods whose artifact cannot carry a trained classification head (the head of a reward model is new
# and random, so it must train and be saved), with the reason shown to the user.
UNSUPPORTED = {
    "ia3": "its PEFT config is for causal LMs and does not train or save the new reward head; use lora",
    "prefix-tuning": "prompt-learning methods do not train or save the new reward head; use lora",
    "prompt-tuning": "prompt-learning methods do not train or save the new reward head; use lora",
    "p-tuning": "prompt-learning methods do not train or save the new reward head; use lora",
    "adapter": "bottleneck adapters save only their own weights, not the new reward head; use lora",
}


class RewardModel(Objective):
    """Reward model training (TRL RewardTrainer): learn a scalar score that ranks chosen above rejected.

    Trains on preference examples (prompt + chosen + rejected). The model is loaded as a sequence
    classifier with one output; the pairwise loss is -log sigmoid(r_chosen - r_rejected). Works with
    full, lora, dora and qlora (the new `score` head trains fully and is saved with the adapter) and with
    freeze when its trainable list includes the head (`score`). Score the result with the
    `preference-accuracy` evaluator, or use it as the `reward-model` reward in GRPO.
    """

    name = "reward"
    example_kinds: ClassVar[tuple[str, ...]] = ("preference",)
    tokenized: ClassVar[bool] = False
    model_kind: ClassVar[str] = "sequence-classification"
    validates: ClassVar[bool] = True

    @dataclass
    class Config:
        max_length: int | None = option(
            1024, help="Drop pairs whose chosen or rejected conversation is longer (tokens); null: keep all"
        )
        center_rewards_coefficient: float | None = option(
            None, help="Weight of a penalty pulling rewards towards mean zero (0.01 is typical); null: off"
        )

    def check_method(self, method: Any) -> str | None:
        if method.name in UNSUPPORTED:
            return UNSUPPORTED[method.name]
        if method.name == "freeze":
            import re

            patterns = list(getattr(method.config, "trainable", []) or [])
            if not any(re.search(p, "score.weight") for p in patterns if _is_regex(p)):
                return "the new reward head must train: add 'score' to freeze's trainable list"
        return None

    def train(self, ctx: Any) -> dict[str, float]:
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer

        from tunesmith.hf import ensure_pad_token_id

        ensure_pad_token_id(ctx.model, ctx.tokenizer)

        def rows(examples: list[Any]) -> list[dict[str, Any]]:
            return [
                {
                    "prompt": ex.prompt_messages,
                    "chosen": [{"role": "assistant", "content": ex.chosen}],
                    "rejected": [{"role": "assistant", "content": ex.rejected}],
                }
                for ex in examples
            ]

        c = self.config
        args = RewardConfig(
            **ctx.training_kwargs(
                remove_unused_columns=True,  # the collator needs only chosen_ids / rejected_ids
            ),
            max_length=c.max_length,
            center_rewards_coefficient=c.center_rewards_coefficient,
            disable_dropout=True,
        )
        trainer = ctx.adopt(
            RewardTrainer(
                model=ctx.model,
                args=args,
                train_dataset=Dataset.from_list(rows(ctx.train_examples)),
                eval_dataset=Dataset.from_list(rows(ctx.eval_examples)) if ctx.eval_examples else None,
                processing_class=ctx.tokenizer,
                callbacks=ctx.callbacks,
            )
        )
        result = trainer.train(resume_from_checkpoint=ctx.resume_from)
        return dict(result.metrics)


def _is_regex(pattern: str) -> bool:
    import re

    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@hookimpl
def register_objectives(register: Register[Objective]) -> None:
    register(RewardModel)
