"""Using finished runs: merge, generate, chat, and several adapters on one base model.

Several runs tuned from the same base with PEFT methods share one copy of the base weights: each
run's adapter is loaded under the run's name and switched with ``set_adapter`` (the "easy to swap
adapters" workflow); the base model itself is always available as ``base``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.contexts import EvalContext
from tunesmith.errors import TunesmithError
from tunesmith.examples import InvalidRecord
from tunesmith.plugins import Plugins
from tunesmith.runs import LoadedRun, load_base, open_run

BASE = "base"


@dataclass
class Session:
    """A model with one or more runs' artifacts loaded; ``active`` is the adapter in use."""

    model: Any
    tokenizer: Any
    runs: dict[str, LoadedRun]
    active: str
    history: list[dict[str, str]] = field(default_factory=list)

    @property
    def chat(self) -> Any:
        """The active run's chat rendering: its saved template under its ``template`` policy."""
        from tunesmith.chat import ChatFormat, ChatPolicy

        run = self.runs.get(self.active) or next(iter(self.runs.values()))
        policy = ChatPolicy.from_config(run.resolved.config.template)
        if policy.thinking == "auto":  # prompt as training rendered its chats
            policy.thinking = "on" if run.run.manifest().get("thinking") else "off"
        return ChatFormat(self.tokenizer, policy)

    @property
    def names(self) -> list[str]:
        return [*self.runs, BASE] if self._is_peft else list(self.runs)

    @property
    def _is_peft(self) -> bool:
        return next(iter(self.runs.values())).resolved.method.produces_adapter

    def use(self, name: str) -> None:
        """Switch to the run called ``name`` (or ``base`` for the plain base model)."""
        if name not in self.names:
            raise TunesmithError(f"no adapter named '{name}'", details=[f"loaded: {', '.join(self.names)}"])
        if name != BASE and self._is_peft:
            self.model.set_adapter(adapter_name(name))
        self.active = name

    def generate(
        self, prompts: list[str], *, max_new_tokens: int = 128, system: str | None = None
    ) -> list[str]:
        """Answer each prompt as a one-turn chat rendered with the run's saved chat template."""
        rendered = [self.render([*self._system(system), {"role": "user", "content": p}]) for p in prompts]
        return self._generate(rendered, max_new_tokens)

    def reply(self, message: str, *, max_new_tokens: int = 256, system: str | None = None) -> str:
        """One chat turn: the conversation so far plus ``message``; the answer joins the history."""
        if not self.history:
            self.history.extend(self._system(system))
        self.history.append({"role": "user", "content": message})
        answer = self._generate([self.render(self.history)], max_new_tokens)[0]
        self.history.append({"role": "assistant", "content": answer})
        return answer

    def render(self, messages: list[dict[str, str]]) -> str:
        """The generation prompt for ``messages``, as the run rendered prompts in training and evaluation."""
        try:
            return self.chat.prompt(messages)
        except InvalidRecord as e:
            raise TunesmithError(e.message) from None

    @staticmethod
    def _system(system: str | None) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}] if system else []

    def _generate(self, rendered: list[str], max_new_tokens: int) -> list[str]:
        chat = self.chat
        ctx = EvalContext(
            self.model,
            self.tokenizer,
            [],
            max_new_tokens=max_new_tokens,
            stop_token_ids=chat.stop_token_ids(self.model),
        )
        if self.active == BASE and self._is_peft:
            with self.model.disable_adapter():
                return ctx.generate(rendered)
        return ctx.generate(rendered)


def load_session(paths: list[Path], plugins: Plugins, *, active: str | None = None) -> Session:
    """Load one run, or several PEFT runs of the same base model onto one copy of it."""
    runs = [open_run(p, plugins) for p in paths]
    first = runs[0]
    names = [r.name for r in runs]
    if len({adapter_name(n) for n in names}) != len(names):
        raise TunesmithError(
            "two runs have the same directory name (or names that differ only in '.'); adapters are named "
            "after it"
        )
    if len(runs) > 1:
        bases = {str(r.resolved.config.model.path) for r in runs}  # set for every resolved run
        if len(bases) > 1:
            raise TunesmithError("runs loaded together must share a base model", details=sorted(bases))
        not_peft = [r.name for r in runs if not r.resolved.method.produces_adapter]
        if not_peft:
            raise TunesmithError(
                "only PEFT adapters can share a base model",
                details=[f"{n} has a method that saves a whole model" for n in not_peft],
            )
    base, tokenizer = load_base(first, plugins)
    model = first.resolved.method.load(base, str(first.run.final))
    if first.resolved.method.produces_adapter:
        # PeftModel.from_pretrained names the first adapter "default"; rename it to the run's name.
        model.load_adapter(str(first.run.final), adapter_name=adapter_name(first.name))
        model.set_adapter(adapter_name(first.name))
        model.delete_adapter("default")
        for r in runs[1:]:
            model.load_adapter(str(r.run.final), adapter_name=adapter_name(r.name))
    model.eval()
    session = Session(model, tokenizer, {r.name: r for r in runs}, active=first.name)
    session.use(active or first.name)
    return session


def adapter_name(run_name: str) -> str:
    """PEFT's name for a run's adapter: module names cannot hold '.', so ``qwen2.5-lora`` -> ``qwen2_5-lora``.

    Two names that differ only there cannot be loaded together (``load_session`` refuses them).
    """
    return run_name.replace(".", "_")
