"""Methods on mixture-of-experts models (3-D expert parameters) and the conformance suite on the Qwen3
and Mixtral stand-ins of ``families.py``: every method conforms there or refuses with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from families import FAMILIES, build_model, build_tokenizer, save_family
from test_conformance import BUILTINS, OPTIONS, _known_options

from tunesmith import TunesmithError
from tunesmith.testing import Settings, check_method
from tunesmith_plugins.methods.dora import Dora
from tunesmith_plugins.methods.ia3 import IA3
from tunesmith_plugins.methods.lora import Lora

MOE = ["mixtral", "qwen3-moe"]
EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def fresh(name: str) -> Any:
    family = FAMILIES[name]
    return build_model(family, build_tokenizer(family))


def trainable(model: Any) -> set[str]:
    """Which part of layer 0 holds trainable parameters: attention leaf names, 'experts', 'gate'."""
    parts = set()
    for name, p in model.named_parameters():
        if p.requires_grad and ".layers.0." in name:
            inner = name.split(".layers.0.")[1]
            parts.add("experts" if ".experts." in inner else inner.split(".")[1])
    return parts


@pytest.mark.parametrize("name", MOE)
def test_lora_adapts_attention_and_experts_but_not_the_router(name: str) -> None:
    method = Lora(Lora.Config(r=4))
    model = method.apply(fresh(name))
    assert trainable(model) == {"q_proj", "k_proj", "v_proj", "o_proj", "experts"}
    notes, warnings = method.report(model)
    assert "experts x2" in notes[0] and any("dropout 0.05 -> 0" in w for w in warnings)

    with_router = Lora(Lora.Config(r=4, dropout=0.0, router=True))
    assert "gate" in trainable(with_router.apply(fresh(name)))


@pytest.mark.parametrize("name", MOE)
def test_target_parameters_train_only_the_experts(name: str) -> None:
    import torch

    method = Lora(Lora.Config(r=4, dropout=0.0, target_modules=[], target_parameters=EXPERTS))
    model = method.apply(fresh(name))
    assert trainable(model) == {"experts"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    ids = torch.randint(10, 200, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".experts." in n and "lora_" in n for n in changed)
    assert method.report(model)[1] == []  # named targets: no coverage warning


@pytest.mark.parametrize("name", MOE)
def test_dora_leaves_the_experts_frozen_and_says_so(name: str) -> None:
    method = Dora(Dora.Config(r=4, dropout=0.0))
    model = method.apply(fresh(name))
    assert "experts" not in trainable(model) and "q_proj" in trainable(model)
    assert any("stay frozen" in w for w in method.report(model)[1])
    with pytest.raises(TunesmithError, match="cannot adapt expert parameters"):
        Dora(Dora.Config(r=4, dropout=0.0, target_parameters=EXPERTS)).apply(fresh(name))


@pytest.mark.parametrize(("name", "missing"), [("mixtral", "experts"), ("phi-3.5", "attention")])
def test_ia3_warns_when_its_targets_miss_part_of_the_network(name: str, missing: str) -> None:
    method = IA3()
    model = method.apply(fresh(name))
    _, warnings = method.report(model)
    assert len(warnings) == 1 and missing in warnings[0]
    assert IA3().report(IA3().apply(fresh("llama-3.1")))[1] == []


def test_target_parameters_on_a_dense_model_is_a_clear_error() -> None:
    with pytest.raises(TunesmithError, match="method 'lora'"):
        Lora(Lora.Config(target_modules=[], target_parameters=EXPERTS)).apply(fresh("llama-3.1"))


def test_qlora_says_how_much_it_left_unquantised(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tunesmith_plugins.methods.qlora import QLora

    shares = {}
    for name in ("mixtral", "llama-3.1"):
        method = QLora(QLora.Config(r=4, dropout=0.0))
        path = save_family(FAMILIES[name], tmp_path / name)
        model = method.apply(AutoModelForCausalLM.from_pretrained(path, **method.model_load_kwargs("cpu")))
        notes, warnings = method.report(model)
        line = next(x for x in [*notes, *warnings] if "quantised" in x)
        shares[name] = (float(line.split("quantised ")[1].split("%")[0]), line in warnings)
    assert shares["mixtral"][0] < shares["llama-3.1"][0]
    assert shares["mixtral"][1] and not shares["llama-3.1"][1]  # a warning only when most stays unquantised


# ------------------------------------------------------------------------- conformance on families

#: Methods that cannot run on an architecture, with the reason they give.
REFUSALS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: Any) -> dict[str, Path]:
    return {name: save_family(FAMILIES[name], tmp_path_factory.mktemp(name)) for name in ("qwen3", "mixtral")}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3", "mixtral"])
@pytest.mark.parametrize("method", sorted(BUILTINS))
def test_every_method_conforms_on_qwen3_and_mixtral(method: str, family: str, family_dirs: Any) -> None:
    cls = BUILTINS[method]
    options = _known_options(cls, OPTIONS.get(method, {}))
    results = check_method(cls, options, settings=Settings(model_dir=family_dirs[family]))
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, f"{method} on {family}: {failed}"
