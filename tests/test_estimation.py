"""ftlab.estimation: parameter counts against the real model and PEFT, and the CPU total against a measured peak.

The measured runs train in a fresh python (this file run as a script), so that the models earlier tests
loaded do not inflate the peak RSS; they read it as VmHWM (ftlab.hardware.peak_rss), because ru_maxrss
inherits the parent's peak across exec.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from ftlab.estimation import NF4_BYTES, adapter_params, count_params, estimate, read_model_config

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MEASURED = {"batch_size": 2, "max_length": 256, "r": 16, "steps": 3}  # the measured run's settings


def test_param_count_matches_the_real_model(model_and_tokenizer):
    model, _ = model_and_tokenizer
    assert count_params(model.config)["total"] == sum(p.numel() for p in model.parameters())


def test_shipped_135m_shape_matches_the_hub_config():
    assert count_params("smollm2-135m") == count_params(MODEL)


def test_shipped_shapes_are_llama_configs():
    from transformers import LlamaConfig

    for name, billions in [("smollm2-360m", 0.36), ("smollm2-1.7b", 1.71), ("llama-3.2-1b", 1.24)]:
        config = read_model_config(name)
        assert isinstance(config, LlamaConfig)
        assert count_params(config)["total"] / 1e9 == pytest.approx(billions, abs=0.01)
    # the 7B/8B shapes notebook 03 compares: the exact totals their model cards and safetensors index give
    assert count_params("llama-2-7b")["total"] == 6_738_415_616
    assert count_params("llama-3.1-8b")["total"] == 8_030_261_248


def _peft_trainable(peft_config) -> int:
    """PEFT's own count, on a meta-device model (no memory, no weights)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(read_model_config(MODEL))
    return get_peft_model(model, peft_config).get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("method, targets", [("lora", "all-linear"), ("lora", ["q_proj", "v_proj"]),
                                             ("dora", "all-linear"), ("ia3", "all-linear")])
def test_adapter_count_matches_peft(method, targets):
    from peft import IA3Config, LoraConfig

    if method == "ia3":
        config = IA3Config(target_modules=targets, task_type="CAUSAL_LM")
    else:
        config = LoraConfig(r=8, target_modules=targets, use_dora=method == "dora", task_type="CAUSAL_LM")
    assert adapter_params(MODEL, method, r=8, target_modules=targets) == _peft_trainable(config)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_virtual_token_count_matches_peft(method):
    from peft import PrefixTuningConfig, PromptTuningConfig

    config = (PrefixTuningConfig if method == "prefix" else PromptTuningConfig)(num_virtual_tokens=10,
                                                                                task_type="CAUSAL_LM")
    assert adapter_params(MODEL, method, num_virtual_tokens=10) == _peft_trainable(config)


def test_4bit_weights_smaller_than_fp32():
    fp32 = estimate("llama-3.2-1b", method="lora", gpu="A100-80")  # 16-bit weights on a GPU
    nf4 = estimate("llama-3.2-1b", method="qlora", gpu="A100-80")
    assert nf4.weights < fp32.weights / 2
    n = count_params("llama-3.2-1b")
    assert nf4.weights == pytest.approx((n["attention"] + n["mlp"]) * NF4_BYTES + n["embedding"] * 2, rel=1e-3)


def test_1b_full_fine_tune_does_not_fit_a_t4():
    est = estimate("llama-3.2-1b", method="full", gpu="T4", max_length=512)
    assert not est.fits
    assert est.total > 16e9  # fp32 weights + gradients + AdamW alone: 16 bytes x 1.24 B params
    assert any("qlora" in s or "load_in_4bit" in s for s in est.suggestions)
    qlora = estimate("llama-3.2-1b", method="qlora", gpu="T4", max_length=512)
    assert qlora.fits and qlora.total < 6e9


def test_gradient_checkpointing_and_shorter_sequences_shrink_activations():
    base = estimate("smollm2-1.7b", gpu="L4", max_length=2048, per_device_train_batch_size=4, gradient_checkpointing=False)
    checkpointed = estimate("smollm2-1.7b", gpu="L4", max_length=2048, per_device_train_batch_size=4, gradient_checkpointing=True)
    shorter = estimate("smollm2-1.7b", gpu="L4", max_length=1024, per_device_train_batch_size=4, gradient_checkpointing=False)
    assert checkpointed.activations < base.activations / 5
    assert shorter.activations == pytest.approx(base.activations / 2, rel=0.01)
    assert checkpointed.flops > base.flops  # the forward runs twice


def test_table_and_bad_arguments():
    text = estimate("smollm2-360m", gpu="T4").table()
    assert "total" in text and ("GB" in text or "MB" in text)
    with pytest.raises(ValueError, match="qlora"):
        estimate("smollm2-360m", method="full", gpu="T4", load_in_4bit=True)
    with pytest.raises(ValueError, match="gpu"):
        estimate("smollm2-360m", gpu="V100")


def _measure(load_in_4bit: bool) -> dict:
    """Train LoRA for a few steps on the real 135M model in a fresh python; its peak RSS and step time."""
    # The estimate counts live tensor bytes. glibc's default malloc keeps freed activation buffers (peak RSS
    # 18-42% above live bytes, varying with the processor), so the measured run hands large blocks back
    # to the kernel as they are freed: its peak RSS is then the live peak, what the estimate models.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "4bit" if load_in_4bit else "fp32"], env=env,
                         capture_output=True, text=True, timeout=1500, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("load_in_4bit", [False, True], ids=["fp32", "4bit"])
def test_cpu_estimate_matches_measured_peak(load_in_4bit):
    measured = _measure(load_in_4bit)
    est = estimate(MODEL, method="qlora" if load_in_4bit else "lora", gpu="cpu", r=MEASURED["r"],
                   per_device_train_batch_size=MEASURED["batch_size"], max_length=MEASURED["max_length"],
                   gradient_checkpointing=False, optim="adamw_torch")
    ratio = est.total / measured["peak_rss"]
    utilisation = est.flops / (measured["peak_tflops"] * 1e12 * measured["seconds_per_step"])
    print(f"\n{'4-bit' if load_in_4bit else 'fp32'}: estimated {est.total / 1e6:,.0f} MB, measured peak RSS "
          f"{measured['peak_rss'] / 1e6:,.0f} MB (ru_maxrss {measured['ru_maxrss'] / 1e6:,.0f} MB), ratio {ratio:.2f}; "
          f"step {measured['seconds_per_step']:.1f} s, {utilisation:.0%} of the {measured['peak_tflops']:.3f} TFLOP/s "
          f"{measured['dtype']} matmul peak measured beside it")
    assert 0.8 <= ratio <= 1.25


def _train_and_report(load_in_4bit: bool, gradient_checkpointing: bool = False) -> None:
    """The measured run: LoRA steps (forward, backward, AdamW) under bf16 autocast, as ftlab trains on CPU."""
    import resource
    import time

    from peft import LoraConfig, get_peft_model

    from ftlab import load_model
    from ftlab.estimation import cpu_peak_tflops
    from ftlab.hardware import cpu_has_bf16, peak_rss

    model, _ = load_model(load_in_4bit=load_in_4bit, verbose=False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=MEASURED["r"], target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (MEASURED["batch_size"], MEASURED["max_length"]))
    seconds = []
    for _ in range(MEASURED["steps"]):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_bf16()):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux; for the record
    print(json.dumps({"peak_rss": peak_rss(), "ru_maxrss": ru_maxrss, "seconds_per_step": min(seconds),
                      "peak_tflops": cpu_peak_tflops(), "dtype": "bf16" if cpu_has_bf16() else "fp32"}))


if __name__ == "__main__":
    _train_and_report(load_in_4bit=sys.argv[1] == "4bit", gradient_checkpointing="gc" in sys.argv[2:])
