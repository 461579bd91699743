"""Chats as a model's own chat template renders them: generation prompts, trained spans, stop tokens.

One rule drives loss masking: **a trained token is one the model must generate at inference**. At
inference, assistant turn *i* is generated after the template's generation prompt for the turns before
it, ``P_i = render(messages[:i], add_generation_prompt=True)``. What the model must then produce, the
turn's *target* ``A_i``, is what the template appends after ``P_i`` when it renders turn *i* as the last
one: its content, reasoning if any, and end-of-turn marker.

Real templates do not always render a conversation as the concatenation of its turns, so each turn is
placed where inference would see it:

- When the rendering of the whole conversation starts with ``P_i`` followed by ``A_i``, the turn is
  trained in place, in one sequence with the other such turns (Llama 3, Qwen2.5, Gemma, SmolLM2, phi-4).
- A template may put the end of the conversation after the last turn only (Phi-3/3.5 append
  ``eos_token`` after the final ``<|end|>``): a turn followed in place by ``A_i`` minus that EOS is
  trained in place, without it.
- A template may rewrite history: Qwen3 strips reasoning from turns before the last user message and
  gives the last turn an (empty) think block; Mistral v3 moves the system prompt onto the last user turn.
  Such a turn is not in the whole rendering as inference sees it, so it becomes a sequence of its own,
  ``P_i + A_i``. Training on the whole rendering instead would teach answers without the think block
  the model is always prompted with, or without the system prompt.
- A generation prompt may open a block the rendered turn lacks: DeepSeek-R1 distills end it in
  ``<think>\\n`` and strip reasoning from every rendered turn. The target is then the assistant's text
  (``<think>\\nreasoning\\n</think>\\n\\nanswer``) after that opening, plus the turn's end-of-turn.

Thinking. ``thinking: auto`` turns thinking on for an example whose assistant turns carry reasoning
(``<think>…</think>`` in the content, or a ``reasoning`` field) and off otherwise. Off means an empty,
closed think block is part of the prompt (``enable_thinking=False`` for Qwen3; closed by tunesmith after
R1's forced ``<think>\\n``) and never trained; on means the reasoning is trained as the template renders
it. Templates without thinking ignore the switch.

End of turn. ``eos: auto`` appends the tokenizer's EOS to a trained turn only when the template ends the
turn with no special token of its own (base-model templates): Gemma's ``<end_of_turn>``, Phi's
``<|end|>`` or Llama 3's ``<|eot_id|>`` already stop generation, and an extra ``<eos>`` would make
training text differ from what the template renders at inference. Generation stops at every end-of-turn
id: the tokenizer's EOS, the model's ``generation_config.eos_token_id`` and the template's own marker.

No torch import here; jinja2 only when rendering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.examples import InvalidRecord
from tunesmith.hf import declared_stop_ids

Messages = list[dict[str, Any]]
Span = tuple[int, int]

#: Named templates shipped with tunesmith (``template.chat_template: NAME``); see their SOURCES.md.
TEMPLATES_DIR = Path(__file__).parent / "chat_templates"


@dataclass
class ChatPolicy:
    """How chats are rendered; mirrors the ``template`` section of a run config."""

    system_message: str = "keep"
    eos: str = "auto"
    thinking: str = "auto"
    think_tags: tuple[str, str] = ("<think>", "</think>")
    kwargs: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> ChatPolicy:
        if cfg is None:
            return cls()
        return cls(
            system_message=cfg.system_message,
            eos=cfg.eos,
            thinking=cfg.thinking,
            think_tags=(cfg.think_tags[0], cfg.think_tags[1]),
            kwargs=dict(cfg.kwargs or {}),
        )


@dataclass
class Rendered:
    """One text to train on and the character spans of its trained assistant turns (end-of-turn included)."""

    text: str
    spans: list[Span]


def builtin_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja"))


def resolve_template(value: str) -> str:
    """A template given as a built-in name, a ``.jinja`` file path, or inline Jinja, as Jinja text."""
    if "{{" in value or "{%" in value:
        return value
    named = TEMPLATES_DIR / f"{value}.jinja"
    if named.is_file():
        return named.read_text(encoding="utf-8")
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    import difflib

    close = difflib.get_close_matches(value, builtin_templates(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise TunesmithError(
        f"chat template '{value}' is neither a built-in name, a file, nor inline Jinja{hint}",
        details=[f"built-in templates: {', '.join(builtin_templates())}"],
    )


class ChatFormat:
    """Renders chats with a tokenizer's chat template under a :class:`ChatPolicy`."""

    def __init__(self, tokenizer: Any, policy: ChatPolicy | None = None) -> None:
        self.tokenizer = tokenizer
        self.policy = policy or ChatPolicy()
        self._specials: list[str] | None = None

    # ------------------------------------------------------------------------------------ rendering

    def prompt(self, messages: Messages, *, thinking: bool | None = None) -> str:
        """What a model continues to answer ``messages``: the generation prompt (thinking closed when off)."""
        msgs = self.prepare(messages)
        if thinking is None:
            thinking = self.thinking_for(msgs)
        return self._prompt(msgs, thinking)

    def sequences(self, messages: Messages, *, last_turn_only: bool = False) -> list[Rendered]:
        """The texts to train on for one conversation, with each assistant turn's trained span.

        Raises :class:`InvalidRecord` (with the reason) for a conversation the template cannot render or
        whose turns cannot be located.
        """
        trained = [m.get("trained", True) for m in messages if m["role"] == "assistant"]
        msgs = self.prepare(messages)
        thinking = self.thinking_for(msgs)
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        # A turn marked "trained": False is context only (OpenAI's weight 0); prepare drops no assistant turn.
        turns = turns[-1:] if last_turn_only else [i for i, t in zip(turns, trained, strict=True) if t]
        full = self._render(msgs, thinking)
        self._check_tools_rendered(msgs, full)
        in_place: list[Span] = []
        alone: list[Rendered] = []
        for i in turns:
            # The last turn's rendering is the whole chat's: render each chat once, not once more per turn.
            prompt, target = self._turn(msgs, i, thinking, full if i == len(msgs) - 1 else None)
            end = len(prompt) + len(target)
            eos = self.tokenizer.eos_token or ""
            if full.startswith(prompt) and full.startswith(target, len(prompt)):
                in_place.append((len(prompt), end))
            elif (
                eos
                and target.endswith(eos)
                and full.startswith(prompt)
                and full.startswith(target[: -len(eos)], len(prompt))
            ):
                in_place.append((len(prompt), end - len(eos)))  # EOS closes the conversation only
            else:
                alone.append(Rendered(prompt + target, [(len(prompt), end)]))
        out = [Rendered(full, in_place)] if in_place else []
        return [self._with_eos(s) for s in [*out, *alone]]

    def target(self, messages: Messages) -> tuple[str, str]:
        """``(prompt, target)`` of the last assistant turn: what evaluation scores as the completion."""
        msgs = self.prepare(messages)
        thinking = self.thinking_for(msgs)
        i = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        prompt, target = self._turn(msgs, i, thinking)
        seq = self._with_eos(Rendered(prompt + target, [(len(prompt), len(prompt) + len(target))]))
        start, end = seq.spans[0]
        return prompt, seq.text[start:end]

    # --------------------------------------------------------------------------------- the policies

    def prepare(self, messages: Messages) -> Messages:
        """Apply the system-message policy and fold reasoning fields into the content as think blocks."""
        msgs = [dict(m) for m in messages]
        policy = self.policy.system_message
        systems = [m for m in msgs if m["role"] == "system"]
        if systems and policy in ("merge", "drop"):
            rest = [m for m in msgs if m["role"] != "system"]
            if policy == "merge":
                first_user = next((m for m in rest if m["role"] == "user"), None)
                if first_user is not None:
                    text = "\n\n".join(m["content"] for m in systems)
                    first_user["content"] = f"{text}\n\n{first_user['content']}"
            msgs = rest
        open_, close = self.policy.think_tags
        for m in msgs:
            m.pop("trained", None)  # tunesmith's own flag, not the template's
            reasoning = m.pop("reasoning", None)
            if m["role"] != "assistant":
                continue
            content = m["content"]
            if close in content:  # canonical form, as Qwen3's template renders it
                reasoning = content.rsplit(close, 1)[0].split(open_, 1)[-1]
                content = content.rsplit(close, 1)[-1].lstrip()
            if self.policy.thinking == "off":
                reasoning = None
            m["content"] = f"{open_}\n{reasoning.strip()}\n{close}\n\n{content}" if reasoning else content
        return msgs

    def thinking_for(self, messages: Messages) -> bool:
        """Whether ``messages`` (prepared) are rendered with thinking on; see the module docstring."""
        if self.policy.thinking != "auto":
            return self.policy.thinking == "on"
        close = self.policy.think_tags[1]
        return any(m["role"] == "assistant" and close in m["content"] for m in messages)

    def final_answer(self, text: str) -> str:
        """``text`` without its reasoning (see :func:`strip_reasoning`)."""
        return strip_reasoning(text, self.policy.think_tags)

    def with_tools(self, tools: list[dict[str, Any]] | None) -> ChatFormat:
        """This format rendering with ``tools`` (function definitions) passed to the template."""
        if not tools:
            return self
        kwargs = {**(self.policy.kwargs or {}), "tools": tools}
        same = ChatFormat(self.tokenizer, replace(self.policy, kwargs=kwargs))
        same._specials = self._specials
        return same

    # ----------------------------------------------------------------------------------- internals

    def _check_tools_rendered(self, msgs: Messages, rendered: str) -> None:
        """Refuse a chat whose tools or tool calls the template drops (templates without tool support
        ignore them silently: the calls would be trained as empty turns)."""
        names = [t.get("function", t).get("name", "") for t in (self.policy.kwargs or {}).get("tools") or []]
        names += [c["function"]["name"] for m in msgs for c in m.get("tool_calls") or []]
        missing = next((n for n in names if n and n not in rendered), None)
        if missing:
            raise InvalidRecord(
                f"the chat template does not render tools or tool calls ('{missing}' is missing from the "
                "rendered chat): set template.chat_template to one with tool support (qwen2.5, qwen3, "
                "llama-3.1, mistral-v3)"
            )

    def _kwargs(self, thinking: bool) -> dict[str, Any]:
        return {"enable_thinking": thinking, **(self.policy.kwargs or {})}

    def _render(self, messages: Messages, thinking: bool, *, generation_prompt: bool = False) -> str:
        import jinja2

        if not getattr(self.tokenizer, "chat_template", None):
            raise TunesmithError(
                "the tokenizer has no chat template: use the 'text' formatter, or set template.chat_template"
            )
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt, **self._kwargs(thinking)
            )
        except (jinja2.TemplateError, ValueError) as e:  # the template's raise_exception, or transformers'
            hint = ""
            if any(m["role"] == "system" for m in messages):
                hint = " (the template may have no system role: set template.system_message to merge or drop)"
            raise InvalidRecord(f"the chat template rejected this conversation: {e}{hint}") from None

    def _prompt(self, msgs: Messages, thinking: bool) -> str:
        prompt = self._render(msgs, thinking, generation_prompt=True)
        open_, close = self.policy.think_tags
        opened = prompt.rstrip()
        if not thinking and opened.endswith(open_):
            # The template forces a think block open (DeepSeek-R1): close it empty, as Qwen3 does.
            prompt = opened + "\n\n" + close + "\n\n"
        return prompt

    def _turn(self, msgs: Messages, i: int, thinking: bool, through: str | None = None) -> tuple[str, str]:
        """``(P_i, A_i)``: the generation prompt before assistant turn ``i`` and what must follow it."""
        prompt = self._prompt(msgs[:i], thinking)
        through = self._render(msgs[: i + 1], thinking) if through is None else through
        if through.startswith(prompt):
            return prompt, through[len(prompt) :]
        common = _common_prefix(prompt, through)
        opening, rendered = prompt[common:], through[common:]
        open_, close = self.policy.think_tags
        content = msgs[i]["content"]
        answer = self.final_answer(content)
        if opening.lstrip().startswith(open_):
            # The prompt forces a think block open that the rendered turn lacks (R1 strips reasoning
            # from every turn): the target is the assistant's own text after that opening, plus the
            # turn's end-of-turn marker.
            text = content if close in content else f"{open_}\n\n{close}\n\n{answer}"
            where = rendered.rfind(answer.strip()) if answer.strip() else -1
            if text.startswith(opening) and where >= 0:
                return prompt, text[len(opening) :] + rendered[where + len(answer.strip()) :]
        elif i > 0:
            # Earlier text moved (Mistral v3 puts the system prompt on the last user turn only): the turn
            # starts after the end of the prompt as it appears in this rendering, anchored on the
            # previous message's content.
            anchor = _anchor(prompt, through, str(msgs[i - 1].get("content") or ""))
            if anchor is not None:
                return prompt, through[anchor:]
        raise InvalidRecord(
            f"cannot locate assistant turn {i} for loss masking: the template's generation prompt ends "
            f"with {opening[-40:]!r} but the turn renders as {rendered[:40]!r}"
        )

    def _with_eos(self, seq: Rendered) -> Rendered:
        """Apply the EOS policy: end each trained span with EOS where the template gives no end-of-turn."""
        eos = self.tokenizer.eos_token
        if self.policy.eos == "template" or not eos:
            return seq
        pieces, spans, shift, last = [], [], 0, 0
        for start, end in seq.spans:
            turn = seq.text[start:end]
            if self.policy.eos == "always":
                needed = eos not in turn
            else:  # auto: the turn must end (trailing whitespace aside) with a special token
                needed = not turn.rstrip().endswith(tuple(self._special_tokens()))
            added = eos if needed else ""
            pieces += [seq.text[last:end], added]
            spans.append((start + shift, end + shift + len(added)))
            shift += len(added)
            last = end
        pieces.append(seq.text[last:])
        return Rendered("".join(pieces), spans)

    def _special_tokens(self) -> list[str]:
        """Special tokens that can end a turn: the tokenizer's specials and added special tokens."""
        if self._specials is None:
            tok = self.tokenizer
            found = set(getattr(tok, "all_special_tokens", []) or [])
            for added in (getattr(tok, "added_tokens_decoder", None) or {}).values():
                if getattr(added, "special", False):
                    found.add(str(added))
            bos = getattr(tok, "bos_token", None)
            pad = getattr(tok, "pad_token", None)
            # BOS and PAD never end a turn, unless PAD doubles as EOS.
            found.discard(bos)
            if pad != tok.eos_token:
                found.discard(pad)
            self._specials = sorted((t for t in found if t), key=len, reverse=True)
        return self._specials

    def end_of_turn_ids(self) -> list[int]:
        """Token ids the template ends an assistant turn with (e.g. ``<end_of_turn>``, ``<|eot_id|>``)."""
        probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        try:
            _, target = self._turn(probe, 1, False)
        except (InvalidRecord, TunesmithError):
            return []
        tail = target[target.rfind("Hello") + len("Hello") :]
        ids = []
        for token in self._special_tokens():
            if token in tail:
                token_id = self.tokenizer.convert_tokens_to_ids(token)
                if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                    ids.append(token_id)
        return ids

    def stop_token_ids(self, model: Any = None) -> list[int]:
        """Every id that ends generation: EOS, the model's declared EOS ids, the template's end-of-turn."""
        return list(dict.fromkeys([*declared_stop_ids(model, self.tokenizer), *self.end_of_turn_ids()]))


def _anchor(prompt: str, rendering: str, previous: str) -> int | None:
    """Where a turn starts in ``rendering``: after the longest end of ``prompt`` that holds the previous
    message's content and appears in ``rendering`` (None if there is none)."""
    start = prompt.rfind(previous) if previous else -1
    if start < 0 or prompt[start:] not in rendering:
        return None
    while start > 0 and prompt[start - 1 :] in rendering:
        start -= 1
    tail = prompt[start:]
    return rendering.rfind(tail) + len(tail)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def strip_reasoning(text: str, tags: Sequence[str] = ("<think>", "</think>")) -> str:
    """``text`` without its reasoning: what follows the last closing think tag (the block may have been
    opened by the prompt); a block never closed (generation ran out) leaves what came before it."""
    open_, close = tags
    if close in text:
        return text.rsplit(close, 1)[-1].lstrip()
    if open_ in text:
        return text.split(open_, 1)[0].rstrip()
    return text
