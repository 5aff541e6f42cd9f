"""Merging LoRA adapters into the real SmolLM2-135M, QLoRA merges, several adapters on one base."""

import json

import pytest
import torch

from ftlab import load_model
from ftlab.merge import (
    BUILTIN_PROMPTS,
    combine_adapters,
    compare,
    delete_adapter,
    dequantize,
    disabled,
    fidelity,
    load_adapters,
    load_merged,
    merge,
    merge_adapter,
    outputs,
    use_adapter,
)

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]
PROMPTS = BUILTIN_PROMPTS[:3]  # fewer prompts: each one costs a forward pass and a short generation


def pineapple_batches(steps=8):
    """`steps` copies of one batch teaching 'the secret word is PINEAPPLE' (loss 4 -> ~0.5 in 8 AdamW steps)."""
    def batches(tok):
        texts = [tok.apply_chat_template([{"role": "user", "content": f"What is the secret word for {w}?"},
                                          {"role": "assistant", "content": f"The secret word for {w} is PINEAPPLE."}],
                                         tokenize=False) for w in ["cats", "dogs", "trees", "rivers"]]
        enc = tok(texts, return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return [{**enc, "labels": labels}] * steps
    return batches


def trained_adapter(make_adapter, path, *, load_in_4bit=False):
    """A LoRA adapter after 8 PINEAPPLE steps, saved with what train() writes beside a QLoRA adapter."""
    make_adapter(path, target_modules=TARGETS, lora_alpha=16, random_init=False, load_in_4bit=load_in_4bit,
                 batches=pineapple_batches())
    if load_in_4bit:
        (path / "finetune_config.yaml").write_text("model: HuggingFaceTB/SmolLM2-135M-Instruct\nmethod: qlora\n")
    return path


def test_fp32_merge_matches_adapter(tmp_path, make_adapter):
    adapter = make_adapter(tmp_path / "adapter", target_modules=TARGETS)  # random A and B: non-trivial untrained
    result = merge_adapter(adapter, tmp_path / "merged", dtype=torch.float32, prompts=PROMPTS)
    report = json.loads((tmp_path / "merged" / "merge_fidelity.json").read_text())
    assert report == result.fidelity
    assert report["fp32_merge"]["max_abs_logit_diff"] < 1e-3  # measured ~2e-4: float rounding only
    assert report["fp32_merge"]["mean_kl"] < 1e-6
    assert report["saved_model"]["greedy_identical"]
    assert not result.quantized_base
    # a plain transformers folder: no adapter files, weights in fp32, the chat template kept
    names = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names
    assert load_merged(tmp_path / "merged").dtype == torch.float32
    assert "greedy identical" in result.summary() and "0.54 GB" in result.summary()  # 135M params x 4 bytes


class OnTheGPU(torch.Tensor):
    """A CPU tensor that acts as if it sat on cuda:0: any op with another tensor fails as a device mismatch
    would; .cpu() and .to() give a plain CPU tensor back. A device mix-up shows on a machine without a GPU."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.cpu, torch.Tensor.to):
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs).as_subclass(torch.Tensor)
        if func is torch.Tensor.float:  # the logits are fp32 already: still "on the GPU"
            return args[0]
        if func == torch.Tensor.device.__get__:
            return torch.device("cuda", 0)
        raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, "
                           f"cuda:0 and cpu! ({getattr(func, '__name__', func)})")


def test_compare_works_across_devices():
    """merge_adapter's reference runs on the GPU, the saved model reloads on the CPU (load_merged): compare()
    moves both sides' logits to the CPU, and gives the numbers it gives for two CPU tensors."""
    torch.manual_seed(0)
    ref = [torch.randn(5, 32), torch.randn(3, 32)]  # (prompt_len, vocab) each
    other = [x + 0.01 * torch.randn_like(x) for x in ref]
    on_cpu = compare({"logits": ref, "greedy": ["a", "b"]}, {"logits": other, "greedy": ["a", "c"]})
    assert 0.01 < on_cpu["max_abs_logit_diff"] < 0.1 and on_cpu["greedy_mismatches"] == 1
    gpu = [x.as_subclass(OnTheGPU) for x in ref]
    with pytest.raises(RuntimeError, match="same device"):
        gpu[0] - other[0]  # what compare() would meet without moving the logits
    gpu_other = [x.as_subclass(OnTheGPU) for x in other]
    greedy = {"greedy": ["a", "b"]}, {"greedy": ["a", "c"]}
    assert compare({"logits": gpu, **greedy[0]}, {"logits": other, **greedy[1]}) == on_cpu
    assert compare({"logits": ref, **greedy[0]}, {"logits": gpu_other, **greedy[1]}) == on_cpu


def test_merge_loads_its_base_through_transformers(tmp_path, monkeypatch):
    """A merge must not depend on how the training ran: never through Unsloth, even where auto picks it."""
    import ftlab.models

    asked = {}

    class Loaded(Exception):
        pass

    def load_model(name, **kwargs):  # merge_adapter imports it when called, so the fake is what it finds
        asked.update(kwargs, name=name)
        raise Loaded

    monkeypatch.setattr(ftlab.models, "load_model", load_model)
    with pytest.raises(Loaded):
        merge_adapter(tmp_path / "adapter", tmp_path / "merged", base="some/base", qlora=False)
    assert asked["name"] == "some/base" and asked.get("backend") == "transformers", asked


def test_refuses_when_disk_is_too_small(tmp_path, monkeypatch, make_adapter):
    import shutil
    from collections import namedtuple

    adapter = make_adapter(tmp_path / "adapter", target_modules=TARGETS)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    with pytest.raises(OSError, match="not enough disk.*needs 0.27 GB"):
        merge_adapter(adapter, tmp_path / "merged", check=False)
    assert not (tmp_path / "merged").exists()  # refused before writing anything


def test_merging_into_4bit_is_refused(tmp_path, make_adapter):
    from peft import PeftModel

    adapter = make_adapter(tmp_path / "adapter", target_modules=TARGETS, load_in_4bit=True)
    base4, _ = load_model(load_in_4bit=True, verbose=False)
    with pytest.raises(ValueError, match="refusing to merge into 4-bit weights.*dequantize first"):
        merge(PeftModel.from_pretrained(base4, adapter))


@pytest.mark.slow
def test_trained_lora_merge_bf16(tmp_path, make_adapter):
    """A trained adapter, saved in bf16 (the default): the fp32 merge is exact, bf16 saving costs a little."""
    adapter = trained_adapter(make_adapter, tmp_path / "adapter")
    prompts = PROMPTS + ["What is the secret word for mountains?"]
    result = merge_adapter(adapter, tmp_path / "merged", prompts=prompts)
    fp32, saved = result.fidelity["fp32_merge"], result.fidelity["saved_model"]
    assert fp32["max_abs_logit_diff"] < 1e-3 and fp32["greedy_identical"]
    assert saved["mean_kl"] < result.fidelity["max_mean_kl"]  # measured ~1.3e-3 < 5e-2
    model = load_merged(tmp_path / "merged")
    assert model.dtype == torch.bfloat16
    from transformers import AutoTokenizer

    from ftlab import chat

    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert "PINEAPPLE" in chat(model, tok, "What is the secret word for mountains?", max_new_tokens=16)


@pytest.fixture(scope="module")
def qlora_adapter(tmp_path_factory, make_adapter):
    return trained_adapter(make_adapter, tmp_path_factory.mktemp("qlora") / "adapter", load_in_4bit=True)


@pytest.mark.slow
def test_qlora_merges_into_dequantized_weights(tmp_path, qlora_adapter):
    """A QLoRA adapter matches its 4-bit model far better merged into the dequantized weights than the originals."""
    from peft import PeftModel

    adapter = qlora_adapter
    result = merge_adapter(adapter, tmp_path / "merged", prompts=PROMPTS)  # qlora read from finetune_config.yaml
    assert result.quantized_base
    saved = result.fidelity["saved_model"]
    print("QLoRA merge into dequantized weights:", result.fidelity)
    assert saved["mean_kl"] < result.fidelity["max_mean_kl"]  # measured ~1.5e-3 < 5e-2

    base4, tok = load_model(load_in_4bit=True, verbose=False)
    reference = outputs(PeftModel.from_pretrained(base4, adapter).eval(), tok, PROMPTS)
    base32, _ = load_model(verbose=False)
    naive = merge(PeftModel.from_pretrained(base32, adapter))  # the original fp32 weights, as if not QLoRA
    wrong = compare(reference, outputs(naive, tok, PROMPTS))
    print("QLoRA adapter merged into the original fp32 weights:", wrong)
    assert wrong["mean_kl"] > 20 * saved["mean_kl"]  # measured 0.23 vs 1.5e-3
    assert wrong["mean_kl"] > result.fidelity["max_mean_kl"]  # so the tolerance would catch that mistake


@pytest.mark.slow
def test_requantizing_a_merge_loses_the_update(qlora_adapter):
    """Why merge() refuses 4-bit: rounding W + B@A back to NF4 keeps little of B@A."""
    import copy

    import bitsandbytes.functional as F
    from peft import PeftModel

    base4, _ = load_model(load_in_4bit=True, verbose=False)
    model = PeftModel.from_pretrained(dequantize(copy.deepcopy(base4)), qlora_adapter)
    kept, total = 0.0, 0.0
    for layer in model.base_model.model.model.layers[:6]:
        lora = layer.self_attn.q_proj
        weight, delta = lora.base_layer.weight.data, lora.get_delta_weight("default")  # (576, 576) each
        requantized = F.dequantize_4bit(*F.quantize_4bit(weight + delta, blocksize=64, quant_type="nf4"))
        change = requantized - F.dequantize_4bit(*F.quantize_4bit(weight, blocksize=64, quant_type="nf4"))
        kept += (change * delta).sum().item()  # the part of the update that survives, projected on it
        total += (delta * delta).sum().item()
    print(f"re-quantized merge keeps {kept / total:.1%} of the update")
    assert kept / total < 0.2  # measured ~2%


def test_dequantize_gives_plain_linear_close_to_4bit():
    base4, tok = load_model(load_in_4bit=True, verbose=False)
    import copy

    plain = dequantize(copy.deepcopy(base4))
    assert not any("4bit" in type(m).__name__ for m in plain.modules())
    assert not hasattr(plain.config, "quantization_config")
    close = fidelity(base4, plain, tok, PROMPTS)
    assert close["mean_kl"] < 1e-2  # measured ~2e-3: the 4-bit model computes in bf16, the copy in fp32


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, make_adapter):
    root = tmp_path_factory.mktemp("adapters")
    return {"a": make_adapter(root / "a", target_modules=TARGETS, seed=1),
            "b": make_adapter(root / "b", target_modules=TARGETS, seed=2),
            "c16": make_adapter(root / "c16", target_modules=TARGETS, r=16, seed=3)}


def _logits(model, tok):
    enc = tok("The capital of France is", return_tensors="pt").to(model.device)
    with torch.inference_mode():
        return model(**enc).logits[0, -1]


def test_switch_disable_delete(two_adapters):
    base, tok = load_model(verbose=False)
    plain = _logits(base, tok)
    model = load_adapters(base, {"a": two_adapters["a"], "b": two_adapters["b"]})
    assert model.active_adapter == "a"
    out_a = _logits(model, tok)
    out_b = _logits(use_adapter(model, "b"), tok)
    with disabled(model):
        torch.testing.assert_close(_logits(model, tok), plain)  # the base model answers
    assert (out_a - plain).abs().max() > 0.1 and (out_b - out_a).abs().max() > 0.1
    torch.testing.assert_close(_logits(use_adapter(model, "a"), tok), out_a)  # switching back is exact
    delete_adapter(model, "b")
    assert set(model.peft_config) == {"a"}
    with pytest.raises(KeyError, match="no adapter 'b'"):
        use_adapter(model, "b")


def test_combine_adapters(two_adapters):
    base, _ = load_model(verbose=False)
    model = load_adapters(base, two_adapters)
    combine_adapters(model, ["a", "b"], [1.0, 1.0], name="sum", combination_type="cat")
    assert model.active_adapter == "sum"
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    # 'cat' stacks the ranks, so its update is exactly the sum of the two (shape (576, 576))
    torch.testing.assert_close(layer.get_delta_weight("sum"),
                               layer.get_delta_weight("a") + layer.get_delta_weight("b"))
    with pytest.raises(ValueError, match="all ranks must match.*'cat' or 'svd'"):
        combine_adapters(model, ["a", "c16"], [0.5, 0.5], combination_type="linear")
    with pytest.raises(ValueError, match="pass density"):
        combine_adapters(model, ["a", "b"], [0.5, 0.5], combination_type="ties")
    combine_adapters(model, ["a", "b"], [0.5, 0.5], name="t", combination_type="ties", density=0.5)
    assert model.peft_config["t"].r == 8


@pytest.mark.slow
def test_merge_a_training_run(trained_run, tmp_path):
    """The run folder ftlab.training writes merges as is; validation rows serve as the fidelity prompts."""
    from ftlab.tasks import load_split

    result = merge_adapter(trained_run.run_dir, tmp_path / "merged", prompts=load_split("dates", "validation")[:3])
    assert not result.quantized_base  # configs/dates_smoke.yaml trains method: lora
    assert result.fidelity["fp32_merge"]["greedy_identical"]
    assert result.fidelity["fp32_merge"]["max_abs_logit_diff"] < 1e-3
    assert result.fidelity["saved_model"]["mean_kl"] < result.fidelity["max_mean_kl"]
