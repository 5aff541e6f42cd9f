"""Every method builds a real PEFT model on the real SmolLM2-135M, with the parameter counts PEFT reports."""

import copy

import pytest
import torch

from ftlab.adapters import add_adapter, linear_module_names, peft_config, trainable_parameters
from ftlab.config import load_config, resolve

# SmolLM2-135M: 30 layers, hidden 576, k/v 192 (3 KV heads of 64), MLP 1536
LAYERS, HIDDEN, KV, MLP = 30, 576, 192, 1536
ALL_LINEAR = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, KV), "v_proj": (HIDDEN, KV), "o_proj": (HIDDEN, HIDDEN),
              "gate_proj": (HIDDEN, MLP), "up_proj": (HIDDEN, MLP), "down_proj": (MLP, HIDDEN)}


def build(base, *overrides):
    cfg = resolve(load_config(None, list(overrides)))
    return add_adapter(copy.deepcopy(base), cfg)


def lora_count(r, names):
    return LAYERS * sum(r * (ALL_LINEAR[n][0] + ALL_LINEAR[n][1]) for n in names)  # A: r x in, B: out x r


@pytest.mark.parametrize("method", ["lora", "rslora", "dora", "ia3", "prefix", "prompt"])
def test_every_method_counts_what_peft_reports(model_and_tokenizer, method):
    base, _ = model_and_tokenizer
    model = build(base, f"method={method}", "r=8", "num_virtual_tokens=10")
    assert type(model).__name__ == "PeftModelForCausalLM"
    assert trainable_parameters(model) == model.get_nb_trainable_parameters()
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < 0.05 * total


def test_lora_counts_and_scaling(model_and_tokenizer):
    base, _ = model_and_tokenizer
    lora = build(base, "r=8", "lora_alpha=16")
    assert trainable_parameters(lora)[0] == lora_count(8, ALL_LINEAR)  # all-linear: every projection, no lm_head
    assert lora.peft_config["default"].target_modules == set(ALL_LINEAR)
    layer = lora.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == 16 / 8
    rs = build(base, "method=rslora", "r=16", "lora_alpha=16").base_model.model.model.layers[0].self_attn.q_proj
    assert rs.scaling["default"] == pytest.approx(16 / 16 ** 0.5)  # rsLoRA: alpha / sqrt(r)
    picked = build(base, "r=4", "target_modules=q_proj,v_proj")
    assert trainable_parameters(picked)[0] == lora_count(4, ["q_proj", "v_proj"])


def test_dora_adds_one_magnitude_per_output(model_and_tokenizer):
    base, _ = model_and_tokenizer
    dora = build(base, "method=dora", "r=8")
    magnitudes = LAYERS * sum(out for _, out in ALL_LINEAR.values())
    assert trainable_parameters(dora)[0] == lora_count(8, ALL_LINEAR) + magnitudes


def test_ia3_scales_ffn_input_and_attention_outputs(model_and_tokenizer):
    base, _ = model_and_tokenizer
    ia3 = build(base, "method=ia3")
    conf = ia3.peft_config["default"]
    assert conf.feedforward_modules == {"down_proj"}
    # one scale per output feature, except the feed-forward down projection: one per input feature
    expected = LAYERS * sum(i if n == "down_proj" else o for n, (i, o) in ALL_LINEAR.items())
    assert trainable_parameters(ia3)[0] == expected


def test_prompt_and_prefix_sizes(model_and_tokenizer):
    base, _ = model_and_tokenizer
    assert trainable_parameters(build(base, "method=prompt", "num_virtual_tokens=10"))[0] == 10 * HIDDEN
    # prefix tuning: a key and a value vector per virtual token per layer (k/v width = 3 heads x 64)
    assert trainable_parameters(build(base, "method=prefix", "num_virtual_tokens=10"))[0] == 10 * LAYERS * 2 * KV


def test_full_trains_everything_and_returns_the_model_itself(model_and_tokenizer):
    base, _ = model_and_tokenizer
    model = build(base, "method=full")
    assert type(model).__name__ == "LlamaForCausalLM"
    trainable, total = trainable_parameters(model)
    assert trainable == total == sum(p.numel() for p in base.parameters())


def test_unknown_target_module_lists_the_real_names(model_and_tokenizer):
    base, _ = model_and_tokenizer
    assert linear_module_names(base) == sorted(ALL_LINEAR)
    with pytest.raises(ValueError) as err:
        build(base, "target_modules=q_proj,qkv_proj")
    msg = str(err.value)
    assert "['qkv_proj']" in msg and all(n in msg for n in ALL_LINEAR) and "lm_head" not in msg


def test_4bit_mismatches_are_refused(model_and_tokenizer):
    base, _ = model_and_tokenizer
    with pytest.raises(ValueError, match="load_in_4bit=True"):
        build(base, "method=qlora")


def test_peft_config_is_the_real_object(model_and_tokenizer):
    from peft import LoraConfig

    base, _ = model_and_tokenizer
    conf = peft_config(resolve(load_config(None, ["method=dora", "r=4"])), base)
    assert isinstance(conf, LoraConfig) and conf.use_dora and conf.r == 4 and not conf.use_rslora
    assert peft_config(resolve(load_config(None, ["method=full"])), base) is None


@pytest.mark.slow
def test_qlora_on_a_4bit_base():
    from ftlab import load_model

    base, _ = load_model(load_in_4bit=True, verbose=False)
    model = add_adapter(base, resolve(load_config(None, ["method=qlora", "r=8"])))
    trainable, total = trainable_parameters(model)
    assert (trainable, total) == model.get_nb_trainable_parameters()
    assert trainable == lora_count(8, ALL_LINEAR)
    assert model.is_gradient_checkpointing or model.base_model.model.is_gradient_checkpointing
    # gradients reach the LoRA matrices through the frozen 4-bit layers
    ids = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
