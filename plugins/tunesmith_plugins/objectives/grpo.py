"""Online RL with TRL's ``GRPOTrainer`` (Group Relative Policy Optimization), rewards from plugins.

For each prompt the policy samples ``num_generations`` completions; reward plugins score them; each
completion's advantage is its reward relative to its group's mean (scaled by the group's std), and the
policy is pushed towards the better ones with a clipped policy-gradient loss (optionally a KL penalty to
the starting model, ``beta``). Generation runs in the training process with ``model.generate`` (no vLLM).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from tunesmith import Objective, Register, Reward, TrainContext, TunesmithError, component, hookimpl, option
from tunesmith_plugins.rewards import labelled


class Grpo(Objective):
    """GRPO (TRL GRPOTrainer): sample several answers per prompt, reward them, reinforce the better ones.

    Uses only the prompt of each example (prompt-only, preference or chat examples; the last assistant
    turn or chosen answer becomes `example.reference` for rewards such as exact-answer). `rewards` lists
    reward plugins with a weight and their options, e.g. `[{name: exact-answer, weight: 1.0}, {name:
    format, pattern: '^\\d+$', weight: 0.5}]`. training.batch_size counts completions, so it must be a
    multiple of num_generations. Works with full, lora, dora and qlora; logs the mean reward (`reward`,
    `rewards/<name>/mean`) to the training log.
    """

    name = "grpo"
    example_kinds: ClassVar[tuple[str, ...]] = ("prompt", "preference", "chat")
    tokenized: ClassVar[bool] = False

    @dataclass
    class Config:
        rewards: list[Reward] = component(
            "reward",
            many=True,
            help="Reward plugins: [{name: <reward>, weight: 1.0, <its options>}] (see plugins list)",
        )
        num_generations: int = option(4, help="Completions sampled per prompt (the group size, at least 2)")
        max_completion_length: int = option(16, minimum=1, help="Maximum new tokens per completion")
        temperature: float = option(1.0, exclusive_minimum=0, help="Sampling temperature of the completions")
        top_p: float = option(
            1.0, exclusive_minimum=0, maximum=1, help="Nucleus sampling threshold (1.0: off)"
        )
        beta: float = option(
            0.0, minimum=0, help="KL penalty to the starting model (0.0: no reference model, faster)"
        )
        epsilon: float = option(0.2, exclusive_minimum=0, help="Clipping range of the policy ratio")
        num_iterations: int = option(1, minimum=1, help="Optimisation passes over each generated batch")
        scale_rewards: Literal["group", "batch", "none"] = option(
            "group", help="Divide advantages by the std of the group, of the batch, or not at all"
        )
        loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = option(
            "dapo", help="How token losses are averaged (TRL's loss_type; dapo is TRL's default)"
        )
        learning_rate: float | None = option(None, help="Learning rate (default: the run's training one)")

    def validate(self) -> Iterator[tuple[str, str]]:
        if not self.config.rewards:
            yield "rewards", "list at least one reward, e.g. [{name: format, pattern: '...'}]"
        if self.config.num_generations < 2:
            yield "num_generations", f"must be at least 2 (a group), got {self.config.num_generations}"

    def reward_functions(self, rewards: list[tuple[str, float, Any]], examples: list[Any], tokenizer: Any):
        """Each reward as a TRL reward function ``f(prompts, completions, index, **kwargs)``."""

        def make(label: str, reward: Any) -> Any:
            def reward_fn(prompts: list[Any], completions: list[Any], index: list[int], **kwargs: Any):
                texts = [_text(c) for c in completions]
                rendered = [
                    tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                    if isinstance(p, list)
                    else p
                    for p in prompts
                ]
                scores = reward.score(rendered, texts, [examples[i] for i in index])
                if len(scores) != len(texts):
                    raise TunesmithError(
                        f"reward '{label}' returned {len(scores)} scores for {len(texts)} completions"
                    )
                return [float(s) for s in scores]

            reward_fn.__name__ = label
            return reward_fn

        return [make(label, reward) for label, _, reward in rewards]

    def train(self, ctx: TrainContext) -> dict[str, float]:
        c = self.config
        rewards = labelled(c.rewards)
        batch = ctx.training.batch_size * ctx.training.gradient_accumulation_steps
        if batch % c.num_generations:
            raise TunesmithError(
                f"objective 'grpo': training.batch_size × gradient_accumulation_steps ({batch}) must be a "
                f"multiple of num_generations ({c.num_generations}): the batch holds whole groups of completions"
            )
        examples = [ex for ex in ctx.train_examples if ex.prompt_messages]
        if not examples:
            raise TunesmithError("objective 'grpo': no training example has a prompt")

        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        dataset = Dataset.from_list(
            [{"prompt": ex.prompt_messages, "index": i} for i, ex in enumerate(examples)]
        )
        overrides: dict[str, Any] = {}
        if c.learning_rate is not None:
            overrides["learning_rate"] = c.learning_rate
        args = GRPOConfig(
            **ctx.training_kwargs(**overrides),
            num_generations=c.num_generations,
            max_completion_length=c.max_completion_length,
            temperature=c.temperature,
            top_p=c.top_p,
            beta=c.beta,
            epsilon=c.epsilon,
            num_iterations=c.num_iterations,
            scale_rewards=c.scale_rewards,
            loss_type=c.loss_type,
            reward_weights=[weight for _, weight, _ in rewards],
            use_vllm=False,
            log_completions=False,
        )
        ctx.model.config.use_cache = True
        trainer = ctx.adopt(
            GRPOTrainer(
                model=ctx.model,
                reward_funcs=self.reward_functions(rewards, examples, ctx.tokenizer),
                args=args,
                train_dataset=dataset,
                processing_class=ctx.tokenizer,
                callbacks=ctx.callbacks,
            )
        )
        result = trainer.train(resume_from_checkpoint=ctx.resume_from)
        return dict(result.metrics)


def _text(completion: Any) -> str:
    """The text of a completion: TRL passes conversational completions as a list of messages."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


@hookimpl
def register_objectives(register: Register[Objective]) -> None:
    register(Grpo)
