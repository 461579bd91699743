"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020), written by hand.

PEFT has no bottleneck-adapter method, and AdapterHub's ``adapters`` package pins transformers 4.x and
cannot be installed beside transformers 5, so the layers live here: plain ``nn.Module`` wrappers around
each decoder layer's MLP (and, for Houlsby placement, its attention block). They train under the HF
``Trainer`` like any other module, leave the KV cache alone (only the hidden-states element of the
attention output is adapted) and are saved on their own, not through ``save_pretrained``:

- ``adapter_config.json``: format version, the base model's name or path, its hidden size and layer
  count, and one entry of options per adapter in the stack;
- ``adapter_model.safetensors``: only the adapter weights, keyed ``{k}.layers.{i}.{site}.{down|up}.
  {weight|bias}`` for stack entry ``k``, decoder layer ``i`` and site ``mlp`` or ``attn`` (plus
  ``norms.<module path>.weight`` when norms were trained).

Torch is imported inside functions, so listing plugins stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from tunesmith import Method, Register, TunesmithError, hookimpl, option

FORMAT = "tunesmith-bottleneck-adapter"
FORMAT_VERSION = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ACTIVATIONS = ("relu", "gelu", "silu")
PLACEMENTS = {"pfeiffer": ("mlp",), "houlsby": ("attn", "mlp")}
# Attribute names of the two sites in common decoder layers (Llama/Mistral/Qwen/Gemma, GPT-2, ...).
SITE_NAMES = {
    "attn": ("self_attn", "attn", "attention", "self_attention"),
    "mlp": ("mlp", "feed_forward", "ffn"),
}
# Options that decide the shapes and the function of an adapter (averaging needs them equal).
STRUCTURAL = ("bottleneck", "placement", "activation", "layers", "train_norms")


class Adapter(Method):
    """Bottleneck adapters: small down-project → non-linearity → up-project layers with a residual.

    Pfeiffer placement adds one adapter after each decoder layer's MLP; Houlsby placement adds one after
    the attention block too. The up-projection starts at zero, so the adapted model equals the base
    model at step 0; everything else is frozen (norms train too with train_norms). Saves
    adapter_config.json + adapter_model.safetensors (adapter weights only), loaded back by this method
    (not by PEFT). Adapters compose: `compose` stacks a new adapter on previously trained ones, and
    `load_adapters` in this module stacks or averages saved adapters. A non-linear adapter cannot be
    merged into the base weights.
    """

    name = "adapter"
    default_learning_rate: ClassVar[float] = 3e-4
    usual_learning_rates: ClassVar[tuple[float, float]] = (3e-5, 3e-3)
    produces_adapter: ClassVar[bool] = False  # not a PEFT adapter: PeftModel.from_pretrained can't load it

    @dataclass
    class Config:
        bottleneck: int = option(
            64, minimum=1, help="Width of the adapter's bottleneck (hidden → bottleneck → hidden)"
        )
        reduction_factor: int | None = option(
            None, help="If set, bottleneck = hidden_size // reduction_factor (overrides bottleneck)"
        )
        placement: Literal["pfeiffer", "houlsby"] = option(
            "pfeiffer", help="pfeiffer: one adapter after each MLP; houlsby: after attention and after MLP"
        )
        activation: Literal["relu", "gelu", "silu"] = option("relu", help="Non-linearity in the bottleneck")
        dropout: float = option(
            0.0, minimum=0, exclusive_maximum=1, help="Dropout on the bottleneck activations (training only)"
        )
        layers: list[int] | None = option(
            None, help="Decoder layers to adapt (0-based, negative counts from the end); null: all"
        )
        train_norms: bool = option(False, help="Also train the model's normalisation layers (saved too)")
        compose: list[str] | None = option(
            None, help="Saved adapters to load first and freeze; the new adapter stacks on top of them"
        )

    def apply(self, model: Any) -> Any:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        if self.config.compose:
            load_adapters(model, list(self.config.compose), combine="stack")
        spec = resolve_spec(model, vars(self.config))
        insert_adapter(model, spec, trainable=True)
        if spec["train_norms"]:
            for parameter in norm_parameters(model).values():
                parameter.requires_grad_(True)
        return model

    def expected_trainable(self, base_model: Any) -> int:
        """Trainable parameters ``apply`` gives ``base_model``: per adapted site 2·h·b + b + h."""
        spec = resolve_spec(base_model, vars(self.config))
        h, b = _hidden_size(base_model), spec["bottleneck"]
        count = len(spec["layers"]) * len(PLACEMENTS[spec["placement"]]) * (2 * h * b + b + h)
        if spec["train_norms"]:
            count += sum(p.numel() for p in norm_parameters(base_model).values())
        return count

    def save(self, model: Any, path: str) -> None:
        save_adapters(model, path)

    def load(self, base_model: Any, path: str) -> Any:
        return load_adapters(base_model, [path], combine="stack")

    def merge(self, model: Any) -> Any:
        raise TunesmithError(
            f"method '{self.name}' cannot be merged into the base model: a bottleneck adapter puts a "
            f"non-linearity ({self.config.activation}) between its down- and up-projection, so it is not a "
            "linear update that folds into the base weights; load it with the adapter method instead "
            "(tunesmith eval, or load_adapters in tunesmith_plugins.methods.adapter)"
        )


# ------------------------------------------------------------------------------------------ layers


def _modules() -> Any:
    """The two nn.Module classes, built on first use so that importing this plugin needs no torch."""
    global _MODULES
    if _MODULES is not None:
        return _MODULES
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        """``x + up(dropout(act(down(x))))``, computed in the adapter's dtype (fp32 beside a bf16 base)."""

        def __init__(self, hidden: int, bottleneck: int, activation: str, dropout: float, like: Any):
            super().__init__()
            # Low-precision bases keep adapter weights in fp32, like PEFT does, so AdamW updates stick.
            dtype = torch.float32 if like.dtype in (torch.float16, torch.bfloat16) else like.dtype
            self.down = nn.Linear(hidden, bottleneck, device=like.device, dtype=dtype)
            self.up = nn.Linear(bottleneck, hidden, device=like.device, dtype=dtype)
            self.act = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}[activation]()
            self.dropout = nn.Dropout(dropout)
            nn.init.zeros_(self.up.weight)  # near-identity: the adapter adds exactly 0 at step 0
            nn.init.zeros_(self.up.bias)

        def forward(self, x: Any) -> Any:
            h = x.to(self.down.weight.dtype)
            return x + self.up(self.dropout(self.act(self.down(h)))).to(x.dtype)

    class AdaptedSite(nn.Module):
        """Wraps one sub-module (an MLP or an attention block); adapters run on its output in order.

        A tuple output (attention: hidden states, weights, ...) has only its first element adapted.
        Unknown attributes are looked up on the wrapped module, so code reading e.g. ``layer_idx``
        still works.
        """

        def __init__(self, base: Any):
            super().__init__()
            self.base = base
            self.adapters = nn.ModuleDict()

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            out = self.base(*args, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
            for adapter in self.adapters.values():
                hidden = adapter(hidden)
            return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                base = self._modules.get("base")
                if base is None:
                    raise
                return getattr(base, name)

    _MODULES = (Bottleneck, AdaptedSite)
    return _MODULES


_MODULES: Any = None


# ------------------------------------------------------------------------------------- the model


def find_layers(model: Any) -> Any:
    """The decoder layers: the first ``nn.ModuleList`` whose items all have an MLP and an attention."""
    from torch import nn

    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(_site(m, "mlp") for m in module):
            if all(_site(m, "attn") for m in module):
                return module
    raise TunesmithError(
        f"the adapter method cannot find the decoder layers of {type(model).__name__}: it looks for the "
        "first nn.ModuleList whose layers have an MLP ("
        + "/".join(SITE_NAMES["mlp"])
        + ") and an attention block ("
        + "/".join(SITE_NAMES["attn"])
        + ")",
        details=["use another method (e.g. lora) for this architecture"],
    )


def _site(layer: Any, site: str) -> str | None:
    """The attribute name of ``site`` ('mlp' or 'attn') in ``layer``, or None."""
    return next((n for n in SITE_NAMES[site] if n in layer._modules), None)


def _hidden_size(model: Any) -> int:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    size = getattr(config, "hidden_size", None)
    return int(size) if size else int(model.get_input_embeddings().embedding_dim)


def _stack(model: Any) -> list[dict[str, Any]]:
    """The adapter entries inserted in ``model`` (kept on the model object), in order."""
    stack = model.__dict__.get("_tunesmith_adapters")
    if stack is None:
        stack = []
        model.__dict__["_tunesmith_adapters"] = stack
    return stack


def resolve_spec(model: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Check options against the model; returns the stored form (layers and bottleneck made explicit)."""
    n_layers, hidden = len(find_layers(model)), _hidden_size(model)
    placement, activation = options.get("placement", "pfeiffer"), options.get("activation", "relu")
    if placement not in PLACEMENTS:
        raise TunesmithError(f"adapter placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if activation not in ACTIVATIONS:
        raise TunesmithError(
            f"adapter activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
        )
    reduction = options.get("reduction_factor")
    if reduction is not None:
        if reduction <= 0 or hidden // reduction < 1:
            raise TunesmithError(f"adapter reduction_factor={reduction} does not fit hidden size {hidden}")
        bottleneck = hidden // reduction
    else:
        bottleneck = int(options.get("bottleneck", 64))
    if bottleneck < 1:
        raise TunesmithError(f"adapter bottleneck must be at least 1, got {bottleneck}")
    dropout = float(options.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise TunesmithError(f"adapter dropout must be in [0, 1), got {dropout}")
    layers = options.get("layers")
    if layers is None:
        layers = list(range(n_layers))
    else:
        bad = [i for i in layers if not -n_layers <= i < n_layers]
        if bad or not layers:
            raise TunesmithError(
                f"adapter layers {layers} do not fit the model's {n_layers} decoder layers "
                f"(0..{n_layers - 1}, or negative from the end)"
            )
        layers = sorted({i % n_layers for i in layers})
    return {
        "bottleneck": bottleneck,
        "reduction_factor": reduction,
        "placement": placement,
        "activation": activation,
        "dropout": dropout,
        "layers": layers,
        "train_norms": bool(options.get("train_norms", False)),
        "source": options.get("source"),
    }


def insert_adapter(model: Any, spec: dict[str, Any], trainable: bool) -> str:
    """Insert one adapter (a stack entry) described by a resolved ``spec``; returns its stack key."""
    bottleneck_cls, site_cls = _modules()
    layers, hidden, stack = find_layers(model), _hidden_size(model), _stack(model)
    key = str(len(stack))
    for i in spec["layers"]:
        layer = layers[i]
        for site in PLACEMENTS[spec["placement"]]:
            attr = _site(layer, site)
            assert attr is not None  # find_layers returns only layers that have both sites
            wrapped = getattr(layer, attr)
            if not isinstance(wrapped, site_cls):
                wrapped = site_cls(getattr(layer, attr))
                wrapped.train(layer.training)
                setattr(layer, attr, wrapped)
            like = next(wrapped.base.parameters())
            adapter = bottleneck_cls(hidden, spec["bottleneck"], spec["activation"], spec["dropout"], like)
            adapter.train(layer.training)
            adapter.requires_grad_(trainable)
            wrapped.adapters[key] = adapter
    stack.append(dict(spec))
    return key


def adapter_parameters(model: Any, key: str | None = None) -> dict[str, Any]:
    """Adapter parameters by saved name ``{k}.layers.{i}.{site}.{down|up}.{weight|bias}``."""
    _, site_cls = _modules()
    out: dict[str, Any] = {}
    for i, layer in enumerate(find_layers(model)):
        for site in ("attn", "mlp"):
            attr = _site(layer, site)
            wrapped = getattr(layer, attr) if attr else None
            if not isinstance(wrapped, site_cls):
                continue
            for k, adapter in wrapped.adapters.items():
                if key is None or k == key:
                    for name, parameter in adapter.named_parameters():
                        out[f"{k}.layers.{i}.{site}.{name}"] = parameter
    return out


def norm_parameters(model: Any) -> dict[str, Any]:
    """Parameters of the model's normalisation layers (LayerNorm, RMSNorm, ...) by ``norms.<name>``."""
    from torch import nn

    _, site_cls = _modules()
    out: dict[str, Any] = {}
    for path, module in model.named_modules():
        if isinstance(module, site_cls) or not (
            isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith("Norm")
        ):
            continue
        for name, parameter in module.named_parameters(recurse=False):
            out[f"norms.{path}.{name}"] = parameter
    return out


# --------------------------------------------------------------------------------- save and load


def save_adapters(model: Any, path: str | Path) -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (adapter weights only)."""
    from safetensors.torch import save_file

    stack = _stack(model)
    if not stack:
        raise TunesmithError("the model has no bottleneck adapters to save")
    tensors = {name: p.detach().cpu().contiguous() for name, p in adapter_parameters(model).items()}
    if any(entry["train_norms"] for entry in stack):
        tensors.update({name: p.detach().cpu().contiguous() for name, p in norm_parameters(model).items()})
    config = getattr(model, "config", None)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model_name_or_path": getattr(config, "_name_or_path", None)
        or getattr(model, "name_or_path", ""),
        "model_type": getattr(config, "model_type", None),
        "hidden_size": _hidden_size(model),
        "num_layers": len(find_layers(model)),
        "adapters": stack,
    }
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})


def read_adapters(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and tensors of a saved adapter directory (no model needed)."""
    from safetensors.torch import load_file

    directory = Path(path)
    config_file, weights_file = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise TunesmithError(
            f"{directory} is not a saved bottleneck adapter: it needs {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TunesmithError(f"{config_file}: not valid JSON ({exc})") from None
    if config.get("format") != FORMAT:
        hint = " (it looks like a PEFT adapter: use method lora)" if "peft_type" in config else ""
        raise TunesmithError(f"{config_file} is not a tunesmith bottleneck adapter{hint}")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise TunesmithError(
            f"{config_file} has format version {config['format_version']}; this tunesmith reads up to "
            f"{FORMAT_VERSION} (upgrade tunesmith)"
        )
    return config, load_file(str(weights_file))


def _check_fits(model: Any, config: dict[str, Any], path: Any) -> None:
    hidden, n_layers = _hidden_size(model), len(find_layers(model))
    if (config["hidden_size"], config["num_layers"]) != (hidden, n_layers):
        raise TunesmithError(
            f"the adapter at {path} was trained for a model with hidden size {config['hidden_size']} and "
            f"{config['num_layers']} layers ({config.get('base_model_name_or_path')}); this base model has "
            f"hidden size {hidden} and {n_layers} layers"
        )


def _load_entries(
    model: Any, config: dict[str, Any], tensors: dict[str, Any], path: Any, scale: float
) -> None:
    """Insert every stack entry of one saved artifact and copy its weights in (strictly)."""
    import torch

    targets: dict[str, Any] = {}
    for old_key, entry in enumerate(config["adapters"]):
        spec = resolve_spec(model, entry)
        new_key = insert_adapter(model, spec, trainable=False)
        for name, parameter in adapter_parameters(model, new_key).items():
            targets[f"{old_key}." + name.split(".", 1)[1]] = parameter
    if any(entry.get("train_norms") for entry in config["adapters"]):
        targets.update(norm_parameters(model))
    missing = sorted(set(targets) - set(tensors))
    unexpected = sorted(set(tensors) - set(targets))
    wrong = [
        f"{name}: saved {tuple(tensors[name].shape)}, model {tuple(p.shape)}"
        for name, p in targets.items()
        if name in tensors and tensors[name].shape != p.shape
    ]
    if missing or unexpected or wrong:
        details = (
            [f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"] if missing else []
        )
        if unexpected:
            details.append(f"unexpected: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        details += wrong[:5]
        raise TunesmithError(f"the adapter weights at {path} do not match its config", details=details)
    with torch.no_grad():
        for name, parameter in targets.items():
            value = tensors[name]
            if scale != 1.0 and name.endswith((".up.weight", ".up.bias")):
                value = value * scale  # the up-projection is the last linear map: scales the adapter's output
            parameter.copy_(value.to(parameter.dtype))


def load_adapters(
    base_model: Any,
    paths: list[str],
    combine: Literal["stack", "average"] = "stack",
    weights: list[float] | None = None,
) -> Any:
    """Insert saved adapters into ``base_model`` (in place, frozen) and return it.

    ``combine="stack"``: each adapter is applied after the previous ones at the same sites, in the order
    of ``paths``; ``weights`` (optional) scales each adapter's output. Saved norms (``train_norms``) are
    copied in order, so the last adapter's norms win.

    ``combine="average"``: adapters with identical structure (bottleneck, placement, activation, layers,
    train_norms) are averaged parameter by parameter into one, with ``weights`` (default equal; they are
    normalised to sum to 1). Different structures → :class:`TunesmithError`.
    """
    import torch

    paths = [str(p) for p in paths]
    if not paths:
        raise TunesmithError("load_adapters needs at least one adapter path")
    if combine not in ("stack", "average"):
        raise TunesmithError(f"combine must be 'stack' or 'average', got {combine!r}")
    if weights is not None and len(weights) != len(paths):
        raise TunesmithError(f"{len(weights)} weight(s) given for {len(paths)} adapter(s)")
    artifacts = [read_adapters(path) for path in paths]
    for path, (config, _) in zip(paths, artifacts, strict=True):
        _check_fits(base_model, config, path)

    if combine == "stack":
        for path, (config, tensors), weight in zip(
            paths, artifacts, weights or [1.0] * len(paths), strict=True
        ):
            for entry in config["adapters"]:
                entry["source"] = entry.get("source") or path
            _load_entries(base_model, config, tensors, path, scale=float(weight))
    else:
        shapes = [[{k: e.get(k) for k in STRUCTURAL} for e in config["adapters"]] for config, _ in artifacts]
        for path, shape in zip(paths[1:], shapes[1:], strict=True):
            if shape != shapes[0]:
                raise TunesmithError(
                    "only adapters with the same structure can be averaged",
                    details=[f"{paths[0]}: {shapes[0]}", f"{path}: {shape}"],
                )
        keys = [set(tensors) for _, tensors in artifacts]
        if any(k != keys[0] for k in keys):
            raise TunesmithError("only adapters with the same parameters can be averaged", details=paths)
        w = [float(x) for x in (weights or [1.0] * len(paths))]
        if abs(sum(w)) < 1e-12:
            raise TunesmithError(f"the averaging weights {w} sum to zero")
        w = [x / sum(w) for x in w]
        averaged = {
            name: sum(
                wi * tensors[name].to(torch.float32) for wi, (_, tensors) in zip(w, artifacts, strict=True)
            )
            for name in keys[0]
        }
        config = dict(artifacts[0][0])
        config["adapters"] = [
            {**entry, "source": {"average": paths, "weights": w}} for entry in artifacts[0][0]["adapters"]
        ]
        _load_entries(base_model, config, averaged, " + ".join(paths), scale=1.0)
    for parameter in base_model.parameters():
        parameter.requires_grad_(False)
    return base_model


@hookimpl
def register_methods(register: Register[Method]) -> None:
    register(Adapter)
