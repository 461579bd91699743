"""The ``lm-eval`` evaluator: any lm-evaluation-harness task, on the base and the tuned model in memory.

lm-eval's own Hugging Face wrapper (``lm_eval.models.huggingface.HFLM``) is given the model and tokenizer
the run already holds, so the tuned model is scored as trained (a PEFT adapter on its base, no merge, no
reload) and the numbers are lm-eval's: the same task run by ``lm_eval --model hf`` on the merged model
gives the same values. lm-eval is imported only when an evaluation starts, so listing plugins stays cheap.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith import EvalContext, Evaluator, Register, TunesmithError, hookimpl, option


class LmEval(Evaluator):
    """lm-evaluation-harness tasks (`lm-eval` package) on the base and the tuned model.

    Runs each task in `tasks` through lm-eval's Hugging Face model wrapper on the model in memory and
    reports every metric lm-eval computes as `TASK/METRIC` (`TASK/METRIC/FILTER` for a filter other than
    lm-eval's default `none`), e.g. `lm-eval/hellaswag/acc_norm`. Tasks are lm-eval's own (by name,
    group or tag) or your YAML files in `include_path`. The tasks do not depend on the run's data: they
    are scored once per model, and every evaluation split reports the same numbers. Global random seeds
    are left alone (lm-eval's command line sets them); few-shot sampling uses lm-eval's fixed seed.
    """

    name = "lm-eval"

    @dataclass
    class Config:
        tasks: list[str] = option([], help="lm-eval task, group or tag names (at least one)")
        num_fewshot: int | None = option(
            None, help="few-shot examples per prompt (default: each task's own)", minimum=0
        )
        limit: int | None = option(
            None, help="score only the first this many documents of each task (for quick checks)", minimum=1
        )
        include_path: str | None = option(
            None, help="directory of your own task YAML files, relative to the working directory"
        )
        batch_size: int | None = option(
            None, help="requests per forward pass (default: evaluation.batch_size)", minimum=1
        )
        apply_chat_template: bool = option(
            False, help="render prompts with the tokenizer's chat template (lm-eval's --apply_chat_template)"
        )

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._task_manager: Any = None
        self._passes: dict[str, tuple[str, dict[str, float]]] = {}  # label -> (first split, metrics)

    def validate(self) -> Iterable[tuple[str, str]]:
        if not self.config.tasks:
            yield "tasks", "give at least one lm-eval task, e.g. tasks: [hellaswag]"
            return
        if self.config.include_path is not None and not Path(self.config.include_path).is_dir():
            yield "include_path", f"not a directory: {self.config.include_path}"
            return
        try:
            known = self.task_manager().all_tasks
        except ImportError:
            yield "", "needs lm-eval, not installed: pip install lm-eval"
            return
        for name in self.config.tasks:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                where = (
                    " or in include_path" if self.config.include_path else " (give include_path for your own)"
                )
                yield "tasks", f"no lm-eval task, group or tag named '{name}' among lm-eval's{where}{hint}"

    def task_manager(self) -> Any:
        """lm-eval's task index (built once: it scans every task YAML lm-eval ships)."""
        if self._task_manager is None:
            from lm_eval.tasks import TaskManager

            self._task_manager = TaskManager(include_path=self.config.include_path)
        return self._task_manager

    def evaluate(self, ctx: EvalContext) -> Mapping[str, float]:
        seen = self._passes.get(ctx.label)
        if seen is not None and seen[0] != ctx.split:
            return dict(seen[1])  # a later split of the same pass: the tasks do not change
        metrics = flatten(self.run(ctx.model, ctx.tokenizer, ctx.batch_size))
        self._passes[ctx.label] = (ctx.split, metrics)
        return dict(metrics)

    def run(self, model: Any, tokenizer: Any, batch_size: int) -> dict[str, Any]:
        """lm-eval's results (the ``results`` table of ``simple_evaluate``) for ``model`` as it is."""
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        c = self.config
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=c.batch_size or batch_size)
        output = simple_evaluate(
            model=lm,
            tasks=list(c.tasks),
            num_fewshot=c.num_fewshot,
            limit=c.limit,
            task_manager=self.task_manager(),
            apply_chat_template=c.apply_chat_template,
            log_samples=False,
            random_seed=None,  # leave the run's random state alone
            numpy_random_seed=None,
            torch_random_seed=None,
        )
        if output is None:  # pragma: no cover - only on non-zero ranks of lm-eval's own launcher
            raise TunesmithError("lm-eval returned no results")
        return dict(output["results"])


def flatten(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """lm-eval's ``{task: {"acc,none": 0.5, "acc_stderr,none": ..., "alias": ...}}`` as
    ``{"task/acc": 0.5}``: numeric metrics only, standard errors left out."""
    out: dict[str, float] = {}
    for task, values in results.items():
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr") or isinstance(value, bool):
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            name = f"{task}/{metric}" if filter_name == "none" else f"{task}/{metric}/{filter_name}"
            out[name] = float(value)
    return out


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(LmEval)
