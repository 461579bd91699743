"""The bottleneck adapter method: identity at init, what trains, the artifact's format, composing.

Training, save/load, generation against teacher forcing and "cannot merge" are the conformance
suite's (``tests/plugins/test_conformance.py`` runs the default placement; ``TestHoulsby`` below the other).
"""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith import TunesmithError
from tunesmith.testing import MethodConformance
from tunesmith.testing.models import build_random_model, build_tokenizer
from tunesmith_plugins.methods.adapter import Adapter, load_adapters

HIDDEN, LAYERS = 128, 4  # the tiny config's sizes


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(7, 262, (3, 16), generator=torch.Generator().manual_seed(0))


def base(tokenizer):
    return build_random_model(tokenizer, seed=0).eval()


def adapted(tokenizer, **options):
    method = Adapter(Adapter.Config(**options))
    return method, method.apply(base(tokenizer)).eval()


def randomize(model, seed):
    """Give every trainable adapter weight a random value (a stand-in for a trained adapter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and ".adapters." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def saved(tokenizer, path, seed, **options):
    method, model = adapted(tokenizer, **options)
    randomize(model, seed)
    method.save(model, str(path))
    return model


# ------------------------------------------------------------------------------------- the layers


@pytest.mark.parametrize("placement", ["pfeiffer", "houlsby"])
def test_adapted_model_equals_the_base_model_at_init(tokenizer, ids, placement):
    _, model = adapted(tokenizer, bottleneck=8, placement=placement)
    assert torch.equal(logits(model, ids), logits(base(tokenizer), ids))


@pytest.mark.parametrize(("placement", "sites"), [("pfeiffer", 1), ("houlsby", 2)])
def test_only_adapters_train_and_their_count_matches_the_formula(tokenizer, placement, sites):
    b = 8
    method, model = adapted(tokenizer, bottleneck=b, placement=placement)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert all(".adapters." in n for n in trainable)
    expected = LAYERS * sites * (HIDDEN * b + b + b * HIDDEN + HIDDEN)
    assert sum(trainable.values()) == expected == method.expected_trainable(base(tokenizer))


def test_options_layers_reduction_factor_and_norms(tokenizer):
    _, model = adapted(tokenizer, reduction_factor=16, layers=[0, -1], train_norms=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    adapters = [n for n in trainable if ".adapters." in n]
    assert {n.split(".")[2] for n in adapters} == {"0", "3"}
    assert model.model.layers[0].mlp.adapters["0"].down.out_features == HIDDEN // 16
    norms = [n for n in trainable if ".adapters." not in n]
    assert norms and all("norm" in n for n in norms)
    assert len(norms) == 2 * LAYERS + 1  # two per decoder layer and the final norm
    with pytest.raises(TunesmithError, match="do not fit"):
        adapted(tokenizer, layers=[4])


class TestHoulsby(MethodConformance):
    method = Adapter
    options = {"bottleneck": 8, "placement": "houlsby"}


def test_an_unknown_architecture_is_a_clear_error():
    with pytest.raises(TunesmithError, match="cannot find the decoder layers"):
        Adapter().apply(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_merge_is_refused_with_the_reason(tokenizer):
    method, model = adapted(tokenizer, bottleneck=8)
    with pytest.raises(TunesmithError, match="non-linearity"):
        method.merge(model)


# ------------------------------------------------------------------------------------ save, load


@pytest.mark.parametrize("options", [{"placement": "houlsby"}, {"train_norms": True, "layers": [1, 2]}])
def test_save_then_load_onto_a_fresh_base_gives_identical_logits(tokenizer, ids, tmp_path, options):
    model = saved(tokenizer, tmp_path, seed=1, bottleneck=8, **options)
    if options.get("train_norms"):
        with torch.no_grad():
            model.model.norm.weight.mul_(1.5)  # a "trained" norm must travel with the adapter
        Adapter().save(model, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    loaded = Adapter().load(base(tokenizer), str(tmp_path))
    assert torch.equal(logits(loaded, ids), logits(model, ids))
    assert not torch.equal(logits(loaded, ids), logits(base(tokenizer), ids))
    assert not any(p.requires_grad for p in loaded.parameters())

    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    base_names = {n for n, _ in base(tokenizer).named_parameters()}
    norm_keys = {k for k in tensors if k.startswith("norms.")}
    assert all(k.split(".")[-2] in ("down", "up") for k in set(tensors) - norm_keys)
    assert {k.removeprefix("norms.") for k in norm_keys} <= base_names
    assert all("norm" in k for k in norm_keys) and bool(norm_keys) == bool(options.get("train_norms"))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["format_version"] == 1 and "base_model_name_or_path" in config
    assert config["adapters"][0]["bottleneck"] == 8


def test_loading_is_strict(tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    saved(tokenizer, tmp_path, seed=1, bottleneck=8)
    weights = tmp_path / "adapter_model.safetensors"
    tensors = load_file(weights)
    first = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != first}, weights)
    with pytest.raises(TunesmithError, match="do not match") as missing:
        Adapter().load(base(tokenizer), str(tmp_path))
    assert first in str(missing.value)
    save_file({**tensors, "0.layers.9.mlp.up.bias": tensors[first].clone()}, weights)
    with pytest.raises(TunesmithError, match="unexpected"):
        Adapter().load(base(tokenizer), str(tmp_path))
    with pytest.raises(TunesmithError, match="hidden size"):
        Adapter().load(
            build_random_model(tokenizer, seed=0, hidden_size=64, intermediate_size=96), str(tmp_path)
        )
    with pytest.raises(TunesmithError, match="not a saved bottleneck adapter"):
        Adapter().load(base(tokenizer), str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------- composing


def manual_composition(tokenizer, paths, ids):
    """Apply saved pfeiffer adapters by hand (forward hooks on each MLP), one after the other."""
    from safetensors.torch import load_file

    model = base(tokenizer)
    stacks = [load_file(p / "adapter_model.safetensors") for p in paths]

    def hook(i):
        def apply(module, args, out):
            for t in stacks:
                down, up = f"0.layers.{i}.mlp.down.", f"0.layers.{i}.mlp.up."
                h = torch.relu(out @ t[down + "weight"].T + t[down + "bias"])
                out = out + h @ t[up + "weight"].T + t[up + "bias"]
            return out

        return apply

    for i, layer in enumerate(model.model.layers):
        layer.mlp.register_forward_hook(hook(i))
    return logits(model, ids)


def test_stacking_equals_applying_the_adapters_in_sequence(tokenizer, ids, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    alone_a = logits(saved(tokenizer, a, seed=1, bottleneck=8), ids)
    alone_b = logits(saved(tokenizer, b, seed=2, bottleneck=4), ids)
    stacked = logits(load_adapters(base(tokenizer), [str(a), str(b)], combine="stack"), ids)
    assert not torch.allclose(stacked, alone_a) and not torch.allclose(stacked, alone_b)
    assert torch.allclose(stacked, manual_composition(tokenizer, [a, b], ids), atol=1e-5)
    assert torch.allclose(manual_composition(tokenizer, [a], ids), alone_a, atol=1e-5)
    # weights scale each adapter's output: 0 switches an adapter off
    off = logits(load_adapters(base(tokenizer), [str(a), str(b)], weights=[1.0, 0.0]), ids)
    assert torch.allclose(off, alone_a, atol=1e-6)


def test_averaging_weights_adapters_and_refuses_different_structures(tokenizer, ids, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    alone_a = logits(saved(tokenizer, a, seed=1, bottleneck=8), ids)
    saved(tokenizer, b, seed=2, bottleneck=8)
    first = load_adapters(base(tokenizer), [str(a), str(b)], combine="average", weights=[1.0, 0.0])
    assert torch.equal(logits(first, ids), alone_a)
    mean = load_adapters(base(tokenizer), [str(a), str(b)], combine="average")
    assert not torch.allclose(logits(mean, ids), alone_a)
    down = mean.model.layers[2].mlp.adapters["0"].down.weight
    da, db = (
        Adapter().load(base(tokenizer), str(p)).model.layers[2].mlp.adapters["0"].down.weight for p in (a, b)
    )
    assert torch.allclose(down, (da + db) / 2)
    saved(tokenizer, c, seed=3, bottleneck=4)
    with pytest.raises(TunesmithError, match="same structure"):
        load_adapters(base(tokenizer), [str(a), str(c)], combine="average")


def test_compose_option_stacks_a_new_trainable_adapter_on_frozen_ones(tokenizer, ids, tmp_path):
    first, out = tmp_path / "first", tmp_path / "out"
    alone_first = logits(saved(tokenizer, first, seed=1, bottleneck=8), ids)
    method = Adapter(Adapter.Config(bottleneck=4, placement="houlsby", compose=[str(first)]))
    model = method.apply(base(tokenizer)).eval()
    assert torch.equal(logits(model, ids), alone_first)  # the new adapter starts as the identity
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapters.1." in n for n in trainable)
    randomize(model, seed=5)
    method.save(model, str(out))
    config = json.loads((out / "adapter_config.json").read_text())
    assert [e["bottleneck"] for e in config["adapters"]] == [8, 4]
    assert config["adapters"][0]["source"] == str(first)
    assert torch.equal(logits(Adapter().load(base(tokenizer), str(out)), ids), logits(model, ids))


# ------------------------------------------------------------------------------------ the pipeline


@pytest.mark.slow
def test_adapter_method_trains_through_the_cli_and_eval_reproduces_it(run_config):
    from click.testing import CliRunner

    from tunesmith.cli import cli
    from tunesmith.plugins import Plugins

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), obj=Plugins(), catch_exceptions=False)

    config = run_config(method={"name": "adapter", "bottleneck": 8})
    result = invoke("run", str(config))
    assert result.exit_code == 0, result.output
    run_dir = config.parent / "runs" / "t"
    assert (run_dir / "final" / "adapter_config.json").is_file()
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["parameters"]["trainable"] == LAYERS * (HIDDEN * 8 + 8 + 8 * HIDDEN + HIDDEN)
    from safetensors.torch import load_file

    tensors = load_file(run_dir / "final" / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith("up.weight"))  # it trained

    result = invoke("eval", str(run_dir))
    assert result.exit_code == 0, result.output
    rerun = json.loads(next((run_dir / "evals").iterdir()).read_text())
    assert rerun["tuned"]["test"] == pytest.approx(metrics["tuned"]["test"], rel=1e-4)
