"""Loading a run config: YAML plus ``--set a.b=value`` overrides, validated strictly, components chosen.

Every key is checked, component options included (nested components too, e.g. a grpo objective's
rewards), and all mistakes are reported at once with did-you-mean suggestions and their config keys.
A component is chosen by ``name`` with its options beside it: ``method: {name: lora, r: 16}`` — one
rule for every kind. A kind left out takes the default its plugins declare.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.coerce import coerce, describe
from tunesmith.components import (
    Component,
    DataSource,
    Evaluator,
    Formatter,
    Method,
    ModelProvider,
    Objective,
    Tracker,
)
from tunesmith.errors import TunesmithError
from tunesmith.kinds import KIND
from tunesmith.options import out_of_range
from tunesmith.plugins import Plugins
from tunesmith.schema import SECTIONS, RunConfig, TrainingConfig

SPLITS = ("train", "validation", "test")


@dataclass
class Resolved:
    """A validated config with its components instantiated, plus warnings worth showing."""

    config: RunConfig
    sources: dict[str, DataSource]
    formatter: Formatter
    method: Method
    objective: Objective
    evaluators: list[Evaluator]
    #: The provider named by ``model.path``, or None when it is a hub id or a directory.
    model_provider: ModelProvider | None
    warnings: list[str]
    #: The experiment trackers of ``tracking:``, in order.
    trackers: list[Tracker] = dataclasses.field(default_factory=list)

    @property
    def training(self) -> TrainingConfig:
        """The ``training`` section as the run uses it: ``learning_rate`` is the method's default when unset."""
        t = self.config.training
        if t.learning_rate is not None:
            return t
        return dataclasses.replace(t, learning_rate=self.method.default_learning_rate)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in) as plain data, for the run directory."""
        data = dataclasses.asdict(self.config)
        data["training"]["learning_rate"] = self.training.learning_rate
        data["data"].update({split: source_dict(c) for split, c in self.sources.items()})
        data["formatter"] = component_dict(self.formatter)
        data["method"] = component_dict(self.method)
        data["objective"] = component_dict(self.objective)
        data["evaluators"] = [component_dict(e) for e in self.evaluators]
        data["tracking"] = [component_dict(t) for t in self.trackers]
        return data


def source_dict(source: DataSource) -> dict[str, Any] | list[dict[str, Any]]:
    """A split's source as a run config writes it: a component, or a mixture's list of weighted parts."""
    from tunesmith.mixing import Mixture

    if not isinstance(source, Mixture):
        return component_dict(source)
    return [
        {
            **component_dict(p.source),
            "weight": p.weight,
            **({"formatter": component_dict(p.formatter)} if p.formatter else {}),
        }
        for p in source.parts
    ]


def component_dict(comp: Component) -> dict[str, Any]:
    """A component as a run config writes it: ``{name, <common options>, <options>}``, nested ones too."""
    options = {}
    for f in dataclasses.fields(comp.config):
        value = getattr(comp.config, f.name)
        if "component" in f.metadata:
            value = [component_dict(c) for c in value] if isinstance(value, list) else value
            value = component_dict(value) if isinstance(value, Component) else value
        else:
            value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # type: ignore[arg-type]
        options[f.name] = value
    common = {key: getattr(comp, key) for key in comp.common_options}
    return {"name": comp.name, **common, **options}


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
    """Apply ``a.b=value`` overrides; values are parsed as YAML (so lists and numbers work).

    A number indexes a list (``evaluators.0.normalize=none``; the next free index appends); a
    component written as a bare name becomes ``{name: ...}`` so its options can be set.
    """
    for item in overrides:
        if "=" not in item:
            raise TunesmithError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise TunesmithError(f"--set {item}: the value is not valid YAML ({problem})") from None
        node: Any = data  # walks the YAML tree: mappings and lists
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i]) or "the config"
            if isinstance(node, list):
                if not part.isdigit():
                    raise TunesmithError(
                        f"--set {item}: {where} is a list; index it by number, e.g. {where}.0"
                    )
                index = int(part)
                if index > len(node) or (index == len(node) and not last):
                    raise TunesmithError(
                        f"--set {item}: {where} has {len(node)} entries, so there is no index {index}"
                    )
                if last:
                    node[index : index + 1] = [value]  # replace, or append at the next free index
                    break
                if isinstance(node[index], str):  # `evaluators: [perplexity]` + `evaluators.0.x=...`
                    node[index] = {"name": node[index]}
                if not isinstance(node[index], (dict, list)):
                    raise TunesmithError(f"--set {item}: {where}.{part} is {node[index]!r}, not a mapping")
                node = node[index]
                continue
            if last:
                node[part] = value
                break
            child = node.get(part)
            if isinstance(child, str) and i == 0 and part in _COMPONENT_FIELDS:
                child = {"name": child}  # `method: lora` + `--set method.r=8`
            if not isinstance(child, (dict, list)):
                child = {}
            node[part] = child
            node = child
    return data


def load_config(path: str | Path | None, overrides: list[str], plugins: Plugins) -> Resolved:
    """Read, override, validate and resolve a run config. Raises one error listing every problem."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    return resolve(data, plugins)


def resolve(data: dict[str, Any], plugins: Plugins, *, new_run: bool = True) -> Resolved:
    """Validate ``data`` against the schema and the installed components; instantiate the components.

    ``new_run=False`` reads the config of a run that already exists (``eval``, ``generate``, ``merge``):
    the checks that only guard starting a run (its name, its output directory, its splits) are skipped,
    so a run made under older rules stays usable.
    """
    errors: list[str] = []
    builder = _Builder(plugins, errors)
    config = builder.build(RunConfig, data, "", nested=False)
    if config is None:  # a required section is missing: nothing more can be checked
        raise TunesmithError("invalid config:", details=errors)
    # A bad value was reported and left at its default: go on, so every mistake is listed at once.
    provider = _model_provider(config, plugins, errors)
    sources = {
        split: builder.choose_source(getattr(config.data, split), f"data.{split}")
        for split in SPLITS
        if getattr(config.data, split) is not None
    }
    if "train" not in sources:
        errors.append("data.train: required (a data source, e.g. {name: jsonl, path: train.jsonl})")
    if new_run:
        errors.extend(_check_run_dir(config))
        errors.extend(_check_splits(config))
        errors.extend(_check_training(config))
    errors.extend(_check_template(config.template))
    evaluators = config.evaluators
    if evaluators is None:
        evaluators = [{"name": cls.name} for cls in plugins.defaults("evaluator")]
    resolved = Resolved(
        config=config,
        sources=sources,
        formatter=builder.choose("formatter", config.formatter, "formatter"),
        method=builder.choose("method", config.method, "method"),
        objective=builder.choose("objective", config.objective, "objective"),
        evaluators=[
            builder.choose("evaluator", spec, f"evaluators[{i}]") for i, spec in enumerate(evaluators)
        ],
        model_provider=provider,
        warnings=[],
        trackers=[  # only a new run reports to trackers: a finished run's need not be installed
            builder.choose("tracker", spec, f"tracking[{i}]")
            for i, spec in enumerate(config.tracking)
            if spec is not None and new_run
        ],
    )
    if not errors:
        reason = resolved.objective.check_method(resolved.method)
        if reason:
            errors.append(
                f"objective '{resolved.objective.name}' cannot train with method "
                f"'{resolved.method.name}': {reason}"
            )
    if errors:
        raise TunesmithError("invalid config:", details=errors)
    resolved.warnings = _warnings(resolved)
    return resolved


def build_component(plugins: Plugins, kind: str, spec: str | dict[str, Any], path: str | None = None) -> Any:
    """One component from a spec as a run config writes it (a name, or ``{name, ...options}``), validated
    exactly as in a run config, nested components included. Raises one error listing every problem."""
    errors: list[str] = []
    builder = _Builder(plugins, errors)
    where = path or kind
    component = builder.choose(kind, builder.spec(spec, where, many=False), where)
    if errors:
        raise TunesmithError(f"invalid {KIND[kind].label}:", details=errors)
    return component


def _model_provider(config: RunConfig, plugins: Plugins, errors: list[str]) -> ModelProvider | None:
    """The provider ``model.path`` names (the default provider when it is unset), else None."""
    if config.model.path is None:
        default = plugins.default("model")
        if default is None:
            errors.append("model.path: required (a Hugging Face id or a local directory)")
            return None
        config.model.path = default.name
    cls = plugins.components["model"].get(config.model.path)
    return typing.cast(ModelProvider, cls()) if cls is not None else None


def _check_run_dir(config: RunConfig) -> list[str]:
    """The run name is one path component, and output_dir has no placeholder but ``{name}``."""
    name = config.name
    if not name or name in (".", "..") or any(c in name for c in "/\\") or name != name.strip():
        return [f"name: {name!r} is not a valid run name: use one path component (letters, digits, - _ .)"]
    try:
        config.output_dir.format(name=name)
    except KeyError as e:
        hint = " (did you mean '{name}'?)" if difflib.get_close_matches(str(e.args[0]), ["name"]) else ""
        return [f"output_dir: unknown placeholder {{{e.args[0]}}}{hint}; the only one is {{name}}"]
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        return [
            f"output_dir: {config.output_dir!r} is not a valid pattern ({e}); write {{name}} for the run name"
        ]
    return []


def _check_splits(config: RunConfig) -> list[str]:
    """Evaluation names existing splits, and no held-out split is the training data itself."""
    errors = []
    for i, split in enumerate(config.evaluation.splits):
        if split not in SPLITS:
            hint = difflib.get_close_matches(split, SPLITS, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            errors.append(
                f"evaluation.splits[{i}]: unknown split '{split}'{suggestion}; splits are {', '.join(SPLITS)}"
            )
    train = config.data.train
    for split in ("validation", "test"):
        held_out = getattr(config.data, split)
        if train is not None and held_out is not None and held_out == train:
            errors.append(
                f"data.{split}: the same data as data.train; a held-out split must not be trained on"
            )
    return errors


#: Names transformers is known to accept (a test checks them against its lists): a config using them
#: is validated without importing ``transformers.training_args``, which costs seconds (torch,
#: accelerate), so ``data check`` stays quick.
COMMON_SCHEDULERS = frozenset(
    {"linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"}
)
COMMON_OPTIMIZERS = frozenset({"adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "sgd"})


def _check_training(config: RunConfig) -> list[str]:
    """The scheduler and optimizer are names transformers knows (checked against its own lists)."""
    t = config.training
    if t.lr_scheduler in COMMON_SCHEDULERS and t.optimizer in COMMON_OPTIMIZERS:
        return []
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    errors = []
    for key, value, known in (
        ("lr_scheduler", t.lr_scheduler, [s.value for s in SchedulerType]),
        ("optimizer", t.optimizer, [o.value for o in OptimizerNames]),
    ):
        if value not in known:
            hint = difflib.get_close_matches(value, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else f"; one of {', '.join(known[:12])}, ..."
            errors.append(f"training.{key}: unknown {key.replace('lr_', '')} '{value}'{suggestion}")
    return errors


def _check_template(cfg: Any) -> list[str]:
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


def _warnings(resolved: Resolved) -> list[str]:
    """Values far outside what the chosen method or fine-tuning usually takes."""
    training, method = resolved.training, resolved.method
    warnings = []
    low, high = method.usual_learning_rates
    lr = training.learning_rate or method.default_learning_rate
    if not low / 3 <= lr <= high * 3:
        warnings.append(
            f"training.learning_rate={lr:g} is far outside the usual range for method '{method.name}' "
            f"({low:g}..{high:g})"
        )
    if training.max_steps <= 0 and not 0 < training.epochs <= 20:
        warnings.append(f"training.epochs={training.epochs:g} is unusual (1-5 is typical for fine-tuning)")
    return warnings


# --------------------------------------------------------------------------------------- validation

_COMPONENT_FIELDS = {f.name for f in dataclasses.fields(RunConfig) if "component" in f.metadata}


class _Builder:
    """Builds dataclasses from mappings and components from specs, recording every problem in ``errors``."""

    def __init__(self, plugins: Plugins, errors: list[str]) -> None:
        self.plugins = plugins
        self.errors = errors

    def build(self, cls: type, data: Any, path: str, *, nested: bool = True) -> Any:
        """Dataclass ``cls`` from a mapping. Component fields hold instances (``nested``) or, for the run
        config's own sections, their validated specs (chosen later, with the kind's defaults)."""
        errors = self.errors
        where = path or "config"
        if data is None:
            data = {}
        if not isinstance(data, dict):
            errors.append(f"{where}: expected a mapping, got {type(data).__name__}")
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
                kind, many = f.metadata["component"], f.metadata.get("many", False)
                if kind == "data_source" and isinstance(value, list):  # a mixed split
                    values[key] = [self.spec(v, f"{key_path}[{i}]", many=False) for i, v in enumerate(value)]
                    continue
                spec = self.spec(value, key_path, many=many)
                if nested:
                    spec = (
                        self.choose_many(kind, spec, key_path) if many else self.choose(kind, spec, key_path)
                    )
                values[key] = spec
            elif dataclasses.is_dataclass(hints[key]):
                values[key] = self.build(hints[key], value, key_path, nested=nested)
            else:
                ok, coerced = coerce(value, hints[key])
                if not ok:
                    errors.append(f"{key_path}: expected {describe(hints[key])}, got {value!r}")
                elif (problem := out_of_range(coerced, f.metadata)) is not None:
                    errors.append(f"{key_path}: {problem}")
                else:
                    values[key] = coerced
        missing = [n for n, f in fields.items() if _required(f) and n not in values]
        for name in missing:
            errors.append(f"{path + '.' if path else ''}{name}: required")
        if missing:
            return None
        return cls(**values)

    def spec(self, value: Any, path: str, many: bool) -> Any:
        """A component choice in its canonical shape: ``{name, ...}`` (or a list of them), or None."""
        if many:
            if value is None:
                return []
            if not isinstance(value, list):
                value = [value]
            return [self.spec(v, f"{path}[{i}]", many=False) for i, v in enumerate(value)]
        if value is None:
            return None
        if isinstance(value, str):
            return {"name": value}
        if not isinstance(value, dict) or "name" not in value:
            self.errors.append(f"{path}: expected a component name or a mapping with 'name', got {value!r}")
            return None
        return dict(value)

    def choose_source(self, spec: dict | list, path: str) -> Any:
        """A split's data source; a list of sources is a :class:`tunesmith.mixing.Mixture`, each part with
        its ``weight`` (default 1) and optional ``formatter``."""
        from tunesmith.mixing import Mixture, Part

        if not isinstance(spec, list):
            return self.choose("data_source", spec, path)
        if not spec:
            self.errors.append(f"{path}: an empty list; give at least one data source")
            return None
        parts = []
        for i, item in enumerate(spec):
            where = f"{path}[{i}]"
            if item is None:
                continue
            options = dict(item)
            for key in [k for k in options if k not in ("weight", "formatter", "name")]:
                close = difflib.get_close_matches(str(key), ["weight", "formatter"], n=1, cutoff=0.75)
                if close:
                    self.errors.append(f"{where}.{key}: unknown option (did you mean '{close[0]}'?)")
                    options.pop(key)
            weight = options.pop("weight", 1.0)
            ok, weight = coerce(weight, float)
            if not ok or isinstance(weight, bool):
                self.errors.append(f"{where}.weight: expected a number, got {item['weight']!r}")
            elif (problem := out_of_range(weight, {"exclusive_minimum": 0})) is not None:
                self.errors.append(f"{where}.weight: {problem}")
            formatter = options.pop("formatter", None)
            if formatter is not None:
                formatter = self.choose(
                    "formatter", self.spec(formatter, f"{where}.formatter", many=False), f"{where}.formatter"
                )
            source = self.choose("data_source", options, where)
            if source is not None:
                parts.append(Part(source, weight, formatter))
        return Mixture(parts) if len(parts) == len(spec) else None

    def choose_many(self, kind: str, specs: list[Any], path: str) -> list[Any]:
        chosen = [self.choose(kind, spec, f"{path}[{i}]") for i, spec in enumerate(specs) if spec is not None]
        return [c for c in chosen if c is not None]

    def choose(self, kind: str, spec: dict | None, path: str) -> Any:
        """Instantiate the component ``spec`` names (the kind's default when ``spec`` is None)."""
        label = KIND[kind].label
        if spec is None:
            default = self.plugins.default(kind)
            if default is None:
                self.errors.append(f"{path}: a {label} is required (no default {label} is installed)")
                return None
            spec = {"name": default.name}
        try:
            cls = self.plugins.get(kind, str(spec["name"]))
        except TunesmithError as exc:
            self.errors.append(f"{path}: {exc.message}; " + "; ".join(exc.details))
            return None
        before = len(self.errors)
        common = {}
        for key, default_value in cls.common_options.items():
            if key in spec:
                ok, value = coerce(spec[key], type(default_value))
                if not ok:
                    self.errors.append(
                        f"{path}.{key}: expected {describe(type(default_value))}, got {spec[key]!r}"
                    )
                common[key] = value
        options = {k: v for k, v in spec.items() if k != "name" and k not in cls.common_options}
        config = self.build(cls.Config, options, path)
        if len(self.errors) > before:
            return None
        try:
            instance = cls(config)
        except TunesmithError as exc:
            self.errors.append(f"{path}: {exc.message}")
            return None
        for key, value in common.items():
            setattr(instance, key, value)
        for option_name, message in instance.validate():
            self.errors.append(f"{path}.{option_name}: {message}" if option_name else f"{path}: {message}")
        return instance


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _suggest(key: str, fields: dict[str, Any], cls: type) -> str:
    match = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    if match:
        return f" (did you mean '{match[0]}'?)"
    initials = [name for name in fields if "".join(w[0] for w in name.split("_") if w) == key.lower()]
    if len(initials) == 1:  # `lr` for learning_rate, `bs` for batch_size
        return f" (did you mean '{initials[0]}'?)"
    if cls is RunConfig:  # a section's option written at the top level: `learning_rate: ...`
        hints = typing.get_type_hints(RunConfig)
        for section in SECTIONS:
            sub = {f.name for f in dataclasses.fields(hints[section])}
            close = difflib.get_close_matches(key, list(sub), n=1, cutoff=0.8)
            if close:
                return f" (did you mean '{section}.{close[0]}'?)"
    return ""
