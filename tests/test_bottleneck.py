"""ftlab.bottleneck: Houlsby adapters on the real SmolLM2, checked against a hand computation, PEFT-free."""

import pytest
import torch
import torch.nn.functional as F

from ftlab import load_model
from ftlab.bottleneck import (Adapted, add_bottlenecks, bottlenecks, disabled_bottlenecks, load_bottlenecks,
                              save_bottlenecks)
from ftlab.estimation import adapter_params


@pytest.fixture
def base():
    model, tok = load_model(verbose=False)
    return model.eval(), tok


def _randomize(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in bottlenecks(model).values():
            m.up.weight.normal_(std=0.02)  # up starts at zero; training would move it
            m.up.bias.normal_(std=0.02)


def test_forward_is_h_plus_up_gelu_down_h(base):
    model, _ = base
    add_bottlenecks(model, r=8)
    mlp = model.model.layers[0].mlp
    assert isinstance(mlp, Adapted) and isinstance(model.model.layers[0].self_attn, Adapted)
    _randomize(model)
    x = torch.randn(2, 5, model.config.hidden_size)  # (batch, length, hidden)
    a = mlp.adapter
    with torch.no_grad():
        h = mlp.sublayer(x)  # the base MLP's output
        by_hand = h + (F.gelu(h @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias)
        assert torch.allclose(mlp(x), by_hand, atol=1e-6)


def test_starts_as_the_base_model_and_only_adapters_train(base):
    model, tok = base
    ids = tok("Rewrite as YYYY-MM-DD: 3 March 2021", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(ids).logits
        add_bottlenecks(model, r=16)
        assert torch.equal(model(ids).logits, before)  # up = 0: every adapter is the identity
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == adapter_params(model.config, "adapter", r=16)  # the estimate's count, from the config
    assert trainable == 30 * 2 * (2 * 576 * 16 + 16 + 576)  # 30 layers x 2 places x (down + up), by hand


def test_pfeiffer_adapts_the_mlp_only(base):
    model, _ = base
    add_bottlenecks(model, r=16, placement="pfeiffer")
    assert not isinstance(model.model.layers[0].self_attn, Adapted) and isinstance(model.model.layers[0].mlp, Adapted)
    assert len(bottlenecks(model)) == 30
    with pytest.raises(ValueError, match="adapter_placement='parallel'"):
        add_bottlenecks(load_model(verbose=False)[0], placement="parallel")


def test_saved_adapters_reload_onto_a_fresh_base(base, tmp_path):
    model, tok = base
    add_bottlenecks(model, r=8)
    _randomize(model)
    path = save_bottlenecks(model, tmp_path / "run")
    assert path.stat().st_size < 5e6  # the adapters only (~1.3 MB of fp32), not the 540 MB model
    ids = tok("Date: 1 May 1990", return_tensors="pt")["input_ids"]
    fresh, _ = load_model(verbose=False)
    load_bottlenecks(fresh.eval(), tmp_path / "run")
    with torch.no_grad():
        tuned = model(ids).logits
        assert torch.equal(fresh(ids).logits, tuned)
        with disabled_bottlenecks(fresh):
            off = fresh(ids).logits
        assert not torch.allclose(off, tuned)  # switched off: the base model answers
        assert torch.allclose(off, load_model(verbose=False)[0].eval()(ids).logits, atol=1e-5)


def test_bottleneck_run_folders_are_not_merged(tmp_path, base):
    from ftlab.merge import adapter_config

    model, _ = base
    save_bottlenecks(add_bottlenecks(model, r=4), tmp_path)
    with pytest.raises(ValueError, match="cannot be merged.*nonlinearity"):
        adapter_config(tmp_path)


@pytest.mark.slow
def test_method_adapter_trains_and_writes_its_run_folder(tmp_path):
    from ftlab.config import load_config
    from ftlab.shipped import data_dir
    from ftlab.training import train

    rows = (data_dir() / "dates" / "train.jsonl").read_text().splitlines(keepends=True)[:16]
    (tmp_path / "train.jsonl").write_text("".join(rows))
    result = train(load_config(None, [f"train_file={tmp_path / 'train.jsonl'}", f"output_dir={tmp_path / 'run'}",
                                      "method=adapter", "r=16", "learning_rate=1e-3", "max_steps=3",
                                      "per_device_train_batch_size=2", "max_length=128", "logging_steps=1",
                                      "warmup_ratio=0", "save_steps=100"]))
    run = result.run_dir
    assert (run / "bottleneck_adapters.safetensors").is_file() and (run / "bottleneck_config.json").is_file()
    assert not (run / "model.safetensors").exists()  # the base is not copied into the run folder
    assert result.metrics["trainable_params"] == adapter_params(result.model.config, "adapter", r=16)
    assert any(m.up.weight.abs().sum() > 0 for m in bottlenecks(result.model).values())  # up left zero: trained
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == 3 and all(v > 0 for v in losses)
