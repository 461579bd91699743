"""An Ollama ``Modelfile`` for an exported GGUF: the run's chat template in Ollama's Go-template form, stop
tokens and generation defaults.

Ollama templates are Go templates over ``.Messages`` (each with ``.Role`` and ``.Content``); Hugging Face
templates are Jinja. Rather than translating Jinja, the template is *measured*: the run's tokenizer renders
short conversations with marker contents, which gives the text around each role's turn, the generation
prompt and the default system block some templates write when no system message is given (Llama 3.x,
Qwen2.5). Those pieces become a Go template, and they are checked by re-assembling longer conversations
and comparing with the Jinja rendering. A template whose turns depend on their position (history
rewritten, thinking blocks kept only in the last turn: Qwen3, Phi-3.5) fails that check; the Modelfile
then carries no ``TEMPLATE`` and says so, and Ollama falls back to the template it recognises in the GGUF's
``tokenizer.chat_template``. What the measurement freezes: a template that prints today's date prints the
export's date.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tunesmith.hf import declared_stop_ids

MARK = {"system": "SYSTEMMARK7", "user": "USERMARK7", "assistant": "ASSISTANTMARK7"}


@dataclass
class TurnPieces:
    """The text a chat template puts around each role's content, and the generation prompt."""

    start: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str
    default_system: str = ""  #: what the template writes when the first message is not a system one

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """The conversation as the Go template renders it (the check against the Jinja rendering)."""
        text = self.start
        if self.default_system and (not messages or messages[0]["role"] != "system"):
            text += self.default_system
        for m in messages:
            text += self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]]
        return text + (self.generation if add_generation_prompt else "")

    def go_template(self) -> str:
        """Ollama's Go template; one line of actions so no template whitespace leaks into the prompt."""
        branches: list[str] = []
        for role in ("system", "user", "assistant"):
            if role in self.prefix:
                keyword = "if" if not branches else "else if"
                branches.append(
                    f'{{{{ {keyword} eq .Role "{role}" }}}}{_go(self.prefix[role])}{{{{ .Content }}}}'
                    f"{_go(self.suffix[role])}"
                )
        last = f'{{{{ if and $last (ne .Role "assistant") }}}}{_go(self.generation)}{{{{ end }}}}'
        default = (
            f'{{{{ if ne (index .Messages 0).Role "system" }}}}{_go(self.default_system)}{{{{ end }}}}'
            if self.default_system
            else ""
        )
        return (
            f"{_go(self.start)}{default}{{{{ range $i, $_ := .Messages }}}}"
            "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            f"{''.join(branches)}{{{{ end }}}}{last}{{{{ end }}}}"
        )


def _go(text: str) -> str:
    """Literal text inside a Go template (``{{`` would open an action)."""
    return text.replace("{{", '{{ "{{" }}')


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def measure_template(tokenizer: Any, *, add_bos: bool) -> TurnPieces | None:
    """The turn pieces of ``tokenizer``'s chat template, or None when they do not reproduce it."""
    pieces = _measure(tokenizer, with_system=True) or _measure(tokenizer, with_system=False)
    if pieces is None or not _reproduces(tokenizer, pieces):
        return None
    if add_bos and pieces.start == tokenizer.bos_token:
        pieces.start = ""  # llama.cpp adds BOS itself (tokenizer.ggml.add_bos_token)
    return pieces


def _measure(tokenizer: Any, *, with_system: bool) -> TurnPieces | None:
    """Render marker conversations and cut the text around the markers.

    ``first`` is [system?, user]; each longer conversation must extend the shorter one, which is what
    "turn by turn" means. The text before the first user turn, without a system message, is the default
    system block some templates add (Llama 3.x, Qwen2.5).
    """
    system, user, assistant, user2 = MARK["system"], MARK["user"], MARK["assistant"], MARK["user"] + "2"
    lead = [{"role": "system", "content": system}] if with_system else []
    turns = [*lead, {"role": "user", "content": user}]
    try:
        first = _render(tokenizer, turns, False)
        asked = _render(tokenizer, turns, True)
        turns.append({"role": "assistant", "content": assistant})
        pair = _render(tokenizer, turns, False)
        more = _render(tokenizer, [*turns, {"role": "user", "content": user2}], False)
        bare = _render(tokenizer, [{"role": "user", "content": user}], False)
    except Exception:  # a template that refuses these turns (Gemma refuses a system role)
        return None
    if not (asked.startswith(first) and pair.startswith(first) and more.startswith(pair)):
        return None
    head, _, user_suffix = first.partition(user)
    assistant_prefix, _, assistant_suffix = pair[len(first) :].partition(assistant)
    user_prefix = more[len(pair) :].partition(user2)[0]
    bare_head = bare.partition(user)[0]
    if not head.endswith(user_prefix) or not bare_head.endswith(user_prefix):
        return None
    bos = tokenizer.bos_token or ""
    start = bos if bos and head.startswith(bos) else ""
    prefix = {"user": user_prefix, "assistant": assistant_prefix}
    suffix = {"user": user_suffix, "assistant": assistant_suffix}
    if with_system:
        prefix["system"], _, suffix["system"] = head[len(start) : len(head) - len(user_prefix)].partition(
            system
        )
    if not bare_head.startswith(start):
        return None
    default = bare_head[len(start) : len(bare_head) - len(user_prefix)]
    return TurnPieces(start, prefix, suffix, asked[len(first) :], default)


def _reproduces(tokenizer: Any, pieces: TurnPieces) -> bool:
    """Longer conversations than those measured render the same through the pieces and through Jinja."""
    turns = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?\nAnswer briefly."},
        {"role": "assistant", "content": "6"},
        {"role": "user", "content": "Thanks."},
    ]
    cases = [(turns, True), (turns[:4], False)]
    if "system" in pieces.prefix:
        cases.append(([{"role": "system", "content": "Be terse."}, *turns], True))
    return all(_render(tokenizer, m, g) == pieces.render(m, g) for m, g in cases)


def stop_tokens(model_dir: Path, tokenizer: Any) -> list[str]:
    """EOS and the ids ``generation_config.json`` declares as ending generation, as token strings."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(str(model_dir))
    except OSError:
        generation = None
    ids = declared_stop_ids(SimpleNamespace(generation_config=generation), tokenizer)
    return list(dict.fromkeys(tokenizer.convert_ids_to_tokens(ids)))


def generation_parameters(model_dir: Path) -> dict[str, float | int]:
    """Sampling defaults from ``generation_config.json``; greedy (temperature 0) when it does not sample,
    which is how tunesmith evaluated the model."""
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if not config.get("do_sample"):
        params: dict[str, float | int] = {"temperature": 0}
    else:
        params = {k: config[k] for k in ("temperature", "top_p", "top_k") if config.get(k) is not None}
    if config.get("repetition_penalty") not in (None, 1.0):
        params["repeat_penalty"] = config["repetition_penalty"]
    return params


def write_modelfile(gguf_path: Path, model_dir: Path, *, add_bos: bool) -> tuple[Path, bool]:
    """``Modelfile`` beside ``gguf_path``; returns its path and whether it carries a TEMPLATE."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    pieces = measure_template(tokenizer, add_bos=add_bos) if tokenizer.chat_template else None
    lines = [f"FROM ./{gguf_path.name}", ""]
    if pieces is not None:
        lines += [
            "# The run's chat template, measured from its Jinja rendering (see docs/export.md).",
            f'TEMPLATE """{pieces.go_template()}"""',
        ]
        if "system" not in pieces.prefix:
            lines.append("# The template has no system turn of its own: system messages are left out.")
    else:
        lines += [
            "# No TEMPLATE: the run's chat template could not be reproduced as turn-by-turn text (see",
            "# docs/export.md). Ollama uses the template it recognises in the GGUF's tokenizer.chat_template.",
        ]
    lines.append("")
    for token in stop_tokens(model_dir, tokenizer):
        lines.append(f"PARAMETER stop {json.dumps(token)}")
    for key, value in generation_parameters(model_dir).items():
        lines.append(f"PARAMETER {key} {value}")
    path = gguf_path.with_name("Modelfile")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, pieces is not None
