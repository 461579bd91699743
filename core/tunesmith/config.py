"""Run configuration: YAML plus ``--set a.b=value`` overrides, validated strictly.

Every key is checked, component options included, and all mistakes are reported at once with
did-you-mean suggestions. A component (data source, formatter, method, objective, evaluator) is chosen
by ``name`` with its options beside it: ``method: {name: lora, r: 16}`` — one rule for all five kinds.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from tunesmith.components import Component, option
from tunesmith.errors import TunesmithError
from tunesmith.plugins import KIND_LABELS, Plugins


def component(kind: str, default: str | None = None, help: str = "") -> Any:
    """A field holding a component choice (``{name: ..., options...}``) of the given kind."""
    spec = {"name": default} if default else None
    return field(
        default_factory=(lambda: dict(spec)) if spec else (lambda: None),
        metadata={"help": help, "component": kind},
    )


@dataclass
class ModelConfig:
    path: str = option(
        "tiny", help="Hugging Face model id or local directory; 'tiny' is the built-in tiny Llama"
    )
    revision: str | None = option(None, help="Model revision (branch, tag or commit) on the hub")
    trust_remote_code: bool = option(False, help="Run code shipped with the model (off unless you trust it)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="Weights dtype; auto = float32 on CPU, bfloat16 on a GPU that supports it"
    )
    attn_implementation: str | None = option(
        None, help="Attention kernel: sdpa, eager, flash_attention_2 (default: the model's own)"
    )


@dataclass
class DataConfig:
    train: dict | None = component(
        "data_source", help="Training split: a data source, e.g. {name: jsonl, path: ...}"
    )
    validation: dict | None = component("data_source", help="Validation split (optional)")
    test: dict | None = component("data_source", help="Held-out test split (optional); never trained on")
    max_length: int = option(1024, help="Maximum tokens per example (and per packed row)")
    packing: bool = option(True, help="Pack several examples per row, with no attention across them")
    train_on_prompt: bool = option(False, help="Also train on prompt/user tokens (default: completion only)")
    truncate: bool = option(False, help="Truncate over-long examples (counted) instead of rejecting them")
    on_invalid: Literal["error", "drop"] = option(
        "error", help="What to do with invalid records: error (list them, stop) or drop (count them, go on)"
    )


@dataclass
class TemplateConfig:
    chat_template: str | None = option(
        None,
        help="Replace the tokenizer's chat template: a built-in name (e.g. chatml, llama-3.1, qwen3), "
        "a .jinja file, or inline Jinja; saved with the run",
    )
    system_message: Literal["keep", "merge", "drop"] = option(
        "keep",
        help="System messages: keep (the template renders them), merge into the first user turn, or drop "
        "(for templates without a system role, e.g. Gemma 2, Mistral v0.1)",
    )
    eos: Literal["auto", "always", "template"] = option(
        "auto",
        help="End of trained turns: auto = add EOS only where the template ends a turn with no special "
        "token; always = EOS after every turn; template = exactly what the template renders",
    )
    thinking: Literal["auto", "on", "off"] = option(
        "auto",
        help="Reasoning models: auto = on for examples with reasoning (<think> or a reasoning field), off "
        "(empty think block in the prompt, never trained) otherwise; on / off for every example",
    )
    think_tags: list[str] = option(["<think>", "</think>"], help="Tags that open and close reasoning")
    kwargs: dict = option({}, help="Extra variables for the chat template (like chat_template_kwargs)")


@dataclass
class TrainingConfig:
    epochs: float = option(3.0, help="Passes over the training split")
    max_steps: int = option(-1, help="Stop after this many optimizer steps (-1: use epochs)")
    learning_rate: float | None = option(
        None, help="Peak learning rate (default: the method's, e.g. 2e-4 for LoRA)"
    )
    batch_size: int = option(8, help="Rows per device per step")
    gradient_accumulation_steps: int = option(1, help="Micro-batches per optimizer step")
    lr_scheduler: str = option("cosine", help="transformers scheduler name: linear, cosine, constant, ...")
    warmup_ratio: float = option(0.03, help="Fraction of steps spent warming up the learning rate")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    max_grad_norm: float = option(1.0, help="Gradient clipping norm")
    optimizer: str = option("adamw_torch", help="transformers optimizer name (adamw_torch, adamw_8bit, ...)")
    seed: int = option(42, help="Seed for data order, initialisation and dropout")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", help="auto = fp32 on CPU, bf16 on a GPU that supports it"
    )
    gradient_checkpointing: bool | None = option(None, help="Trade compute for memory (auto: off on CPU)")
    logging_steps: int = option(10, help="Log loss every N steps")
    save_steps: int = option(0, help="Checkpoint every N steps (0: at the end of every epoch)")
    save_total_limit: int = option(2, help="Checkpoints kept on disk")
    torch_compile: bool = option(
        False, help="torch.compile the model (slow first step; helps full fine-tuning)"
    )


@dataclass
class EvaluationConfig:
    splits: list[str] = option(["test"], help="Splits to score (those present); validation if no test split")
    compare_base: bool = option(True, help="Also score the base model, shown side by side")
    batch_size: int = option(16, help="Examples per generation batch")
    max_new_tokens: int = option(64, help="Generation length limit")
    max_examples: int | None = option(None, help="Score at most this many examples per split")
    strip_reasoning: bool = option(
        True, help="Compare final answers: remove <think> blocks from references and generations"
    )


@dataclass
class RunConfig:
    name: str = option("run", help="Run name; the run directory is output_dir with {name} filled in")
    output_dir: str = option("runs/{name}", help="Where the run directory is written")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Base model"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Data splits and tokenization"})
    template: TemplateConfig = field(
        default_factory=TemplateConfig, metadata={"help": "Chat template and how chats are rendered"}
    )
    formatter: dict | None = component("formatter", "alpaca", help="Turns records into examples")
    method: dict | None = component("method", "lora", help="Tuning method: which parameters train")
    objective: dict | None = component("objective", "sft", help="Training objective")
    evaluators: list | None = field(
        default_factory=lambda: [{"name": "perplexity"}, {"name": "exact-match"}],
        metadata={"help": "Evaluators run on the evaluation splits", "component": "evaluator", "many": True},
    )
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"help": "Optimisation"})
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig, metadata={"help": "Evaluation"})

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


@dataclass
class Resolved:
    """A validated config with its components instantiated, plus warnings worth showing."""

    config: RunConfig
    sources: dict[str, Component]
    formatter: Component
    method: Component
    objective: Component
    evaluators: list[Component]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in) as plain data, for the run directory."""
        data = dataclasses.asdict(self.config)
        data["data"].update({split: _component_dict(c) for split, c in self.sources.items()})
        data["formatter"] = _component_dict(self.formatter)
        data["method"] = _component_dict(self.method)
        data["objective"] = _component_dict(self.objective)
        data["evaluators"] = [_component_dict(e) for e in self.evaluators]
        return data


def _component_dict(comp: Component) -> dict[str, Any]:
    return {"name": comp.name, **dataclasses.asdict(comp.config)}


# ------------------------------------------------------------------------------------------ loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TunesmithError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TunesmithError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TunesmithError(f"{path}: the config must be a mapping of keys to values")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides; values are parsed as YAML (so lists and numbers work)."""
    for item in overrides:
        if "=" not in item:
            raise TunesmithError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            child = node.get(part)
            if isinstance(child, str) and i == 0 and part in _COMPONENT_FIELDS:
                child = {"name": child}  # `method: lora` + `--set method.r=8`
            if not isinstance(child, (dict, list)):
                child = {}
            node[part] = child
            node = child
        last = parts[-1]
        if isinstance(node, list) and last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return data


def load_config(path: str | Path | None, overrides: list[str], plugins: Plugins) -> Resolved:
    """Read, override, validate and resolve a run config. Raises one error listing every problem."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    return resolve(data, plugins)


def resolve(data: dict[str, Any], plugins: Plugins) -> Resolved:
    errors: list[str] = []
    config = _build(RunConfig, data, "", errors, plugins)
    if errors:
        raise TunesmithError("invalid config:", details=errors)
    sources = {
        split: _instantiate(plugins, "data_source", getattr(config.data, split), f"data.{split}", errors)
        for split in ("train", "validation", "test")
        if getattr(config.data, split) is not None
    }
    if "train" not in sources:
        errors.append("data.train: required (a data source, e.g. {name: jsonl, path: train.jsonl})")
    errors.extend(_check_template(config.template))
    resolved = Resolved(
        config=config,
        sources=sources,  # type: ignore[arg-type]
        formatter=_instantiate(plugins, "formatter", config.formatter, "formatter", errors),
        method=_instantiate(plugins, "method", config.method, "method", errors),
        objective=_instantiate(plugins, "objective", config.objective, "objective", errors),
        evaluators=[
            _instantiate(plugins, "evaluator", spec, f"evaluators[{i}]", errors)
            for i, spec in enumerate(config.evaluators or [])
        ],
        warnings=[],
    )
    if not errors:
        reason = resolved.objective.check_method(resolved.method)
        if reason:
            errors.append(
                f"objective '{resolved.objective.name}' cannot train with method "
                f"'{resolved.method.name}': {reason}"
            )
        errors.extend(resolved.objective.check(plugins))
    if errors:
        raise TunesmithError("invalid config:", details=errors)
    resolved.warnings = _apply_method_defaults(resolved)
    return resolved


def _check_template(cfg: TemplateConfig) -> list[str]:
    from tunesmith.chat import resolve_template

    errors = []
    if len(cfg.think_tags) != 2 or not all(cfg.think_tags):
        errors.append("template.think_tags: expected two non-empty tags, e.g. ['<think>', '</think>']")
    if cfg.chat_template:
        try:
            resolve_template(cfg.chat_template)
        except TunesmithError as e:
            errors.append(f"template.chat_template: {e.message}")
    return errors


def _apply_method_defaults(resolved: Resolved) -> list[str]:
    """Fill method-aware defaults and warn when a value is far outside the method's usual range."""
    training, method = resolved.config.training, resolved.method
    warnings = []
    if training.learning_rate is None:
        training.learning_rate = method.default_learning_rate
    low, high = method.usual_learning_rates
    if not low / 3 <= training.learning_rate <= high * 3:
        warnings.append(
            f"training.learning_rate={training.learning_rate:g} is far outside the usual range for "
            f"method '{method.name}' ({low:g}..{high:g})"
        )
    if training.max_steps <= 0 and not 0 < training.epochs <= 20:
        warnings.append(f"training.epochs={training.epochs:g} is unusual (1-5 is typical for fine-tuning)")
    return warnings


# --------------------------------------------------------------------------------------- validation

_COMPONENT_FIELDS = {f.name for f in dataclasses.fields(RunConfig) if "component" in f.metadata}


def _build(cls: type, data: Any, path: str, errors: list[str], plugins: Plugins | None) -> Any:
    """Build dataclass ``cls`` from a mapping, recording every unknown key and bad value in ``errors``."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{where}: expected a mapping, got {_type_name(data)}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            errors.append(f"{key_path}: unknown option{_suggest(str(key), fields, cls)}")
            continue
        f = fields[key]
        if "component" in f.metadata:
            values[key] = _component_spec(value, key_path, errors, many=f.metadata.get("many", False))
        elif dataclasses.is_dataclass(hints[key]):
            values[key] = _build(hints[key], value, key_path, errors, plugins)
        else:
            ok, coerced = coerce(value, hints[key])
            if ok:
                values[key] = coerced
            else:
                errors.append(f"{key_path}: expected {_describe(hints[key])}, got {value!r}")
    missing = [n for n, f in fields.items() if _required(f) and n not in values]
    for name in missing:
        errors.append(f"{path + '.' if path else ''}{name}: required")
    if missing:
        return None
    return cls(**values)


def _component_spec(value: Any, path: str, errors: list[str], many: bool) -> Any:
    if many:
        if value is None:
            return []
        if not isinstance(value, list):
            value = [value]
        return [_component_spec(v, f"{path}[{i}]", errors, many=False) for i, v in enumerate(value)]
    if value is None:
        return None
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        errors.append(f"{path}: expected a component name or a mapping with 'name', got {value!r}")
        return None
    return dict(value)


def _instantiate(plugins: Plugins, kind: str, spec: dict | None, path: str, errors: list[str]) -> Any:
    if spec is None:
        errors.append(f"{path}: a {KIND_LABELS[kind]} is required")
        return None
    try:
        cls = plugins.get(kind, str(spec["name"]))
    except TunesmithError as exc:
        errors.append(f"{path}: {exc.message}; " + "; ".join(exc.details))
        return None
    options = {k: v for k, v in spec.items() if k != "name"}
    before = len(errors)
    config = _build(cls.Config, options, f"{path}", errors, plugins)
    if len(errors) > before:
        return None
    return cls(config)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


def _suggest(key: str, fields: dict[str, Any], cls: type) -> str:
    match = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    if match:
        return f" (did you mean '{match[0]}'?)"
    if cls is RunConfig:  # a section's option written at the top level: `learning_rate: ...`
        for section in ("model", "data", "template", "training", "evaluation"):
            sub = {f.name for f in dataclasses.fields(_section(section))}
            close = difflib.get_close_matches(key, list(sub), n=1, cutoff=0.8)
            if close:
                return f" (did you mean '{section}.{close[0]}'?)"
    return ""


def _section(name: str) -> type:
    return typing.get_type_hints(RunConfig)[name]


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against type ``tp``, converting strings from ``--set`` where unambiguous."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        exact = [a for a in args if isinstance(a, type) and type(value) is a]  # str stays str in list|str
        for arg in exact + [a for a in args if a not in exact]:
            if arg is type(None):
                continue
            ok, out = coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is Literal:
        return (value in typing.get_args(tp)), value
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for v in value:
            ok, c = coerce(v, item_tp)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return True, value.lower() in ("true", "yes", "on", "1")
        return False, value
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        if isinstance(value, str):
            try:
                return True, int(value)
            except ValueError:
                return False, value
        return False, value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)  # PyYAML reads "2e-4" as a string
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return True, str(value)
        return False, value
    return isinstance(value, tp) if isinstance(tp, type) else True, value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_describe(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def _type_name(value: Any) -> str:
    return type(value).__name__


def describe_type(tp: Any) -> str:
    """A short, human name for a Config field's type (for ``plugins show`` and the docs)."""
    return _describe(tp)
