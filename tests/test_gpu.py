"""The GPU path on a real CUDA GPU: 4-bit loading through Unsloth and through PEFT + bitsandbytes, LoRA and
QLoRA training, the fp16 path a T4 takes, the labels that carry the assistant-only loss, the adapter reloaded by
plain PEFT in a fresh process, merging with the fidelity check, generation.

Skipped without CUDA (CI has none); `benchmarks/gpu_smoke.sh` runs this file on a GPU machine. The choice
logic (fp16 on a T4, bf16 on Ampere and newer) is covered on CPU by tests/test_hardware.py.

One backend per process: once imported, Unsloth patches transformers, PEFT and TRL for the whole process, so
a "plain PEFT" test after an Unsloth test would not be plain. Where Unsloth is installed this file tests it
(ftlab imports it first); `FTLAB_UNSLOTH=0 pytest tests/test_gpu.py` tests plain PEFT + bitsandbytes in a
process Unsloth never enters. gpu_smoke.sh runs both.

FTLAB_SMOKE_MODEL: the model every test loads (default: the embedded model's hub id). The smoke points it at
a stand-in folder with random weights (benchmarks/standin_model.py, marked by ftlab_standin.json): then the
assertions about what training learned are left out, and the mechanics are checked all the same.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parent.parent
DATES = ROOT / "data" / "dates"

import ftlab  # noqa: F401  (before anything loads transformers: on an Unsloth GPU it imports Unsloth first)
from ftlab.embedded import DEFAULT_MODEL
from ftlab.hardware import unsloth_importable

BACKENDS = ["unsloth"] if unsloth_importable() else ["transformers"]
MODEL = os.environ.get("FTLAB_SMOKE_MODEL", DEFAULT_MODEL)  # hub id or folder
RANDOM_WEIGHTS = (Path(MODEL) / "ftlab_standin.json").exists()  # the stand-in: mechanics only, no quality


def smoke_config(tmp_path, *overrides):
    """configs/dates_smoke.yaml on MODEL, writing under tmp_path; overrides as on the command line."""
    from ftlab.config import load_config

    return load_config(ROOT / "configs" / "dates_smoke.yaml", [
        f"model={MODEL}", f"train_file={DATES / 'train.jsonl'}", f"eval_file={DATES / 'validation.jsonl'}",
        f"test_file={DATES / 'test.jsonl'}", f"output_dir={tmp_path / 'run'}", *overrides])


def weight_count(p: torch.Tensor) -> int:
    """Weights a parameter holds: a bitsandbytes Params4bit packs two 4-bit codes per uint8 element (numel() is
    half its weights); its quant_state keeps the unpacked shape."""
    state = getattr(p, "quant_state", None)
    return state.shape.numel() if state is not None else p.numel()


def test_this_process_runs_one_backend():
    assert ("unsloth" in sys.modules) == (BACKENDS == ["unsloth"]), BACKENDS


def test_precision_matches_this_gpu():
    from ftlab.hardware import choose_precision, cuda_bf16_supported

    p = choose_precision()
    bf16 = torch.cuda.get_device_capability(0)[0] >= 8
    assert (p.bf16, p.fp16, p.cpu_autocast_bf16) == (bf16, not bf16, False), p
    # torch's own answer, without the emulation that says yes on a T4
    assert cuda_bf16_supported() == torch.cuda.is_bf16_supported(including_emulation=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_4bit_load(backend):
    from ftlab.hardware import release_memory
    from ftlab.models import default_compute_dtype, load_model

    before = torch.cuda.memory_allocated()
    model, _ = load_model(MODEL, load_in_4bit=True, backend=backend)
    used = torch.cuda.memory_allocated() - before  # bytes this model holds on the GPU
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in kinds, kinds  # bitsandbytes' CUDA 4-bit layers under both backends
    params = list(model.parameters())  # a tied embedding / lm_head counted once
    assert params[0].device.type == "cuda"
    # the parts left unquantized (embedding, norms) follow the compute dtype, not the checkpoint's (M1: an fp32
    # embedding would add 108 MiB on SmolLM2)
    kept = {p.dtype for p in params if getattr(p, "quant_state", None) is None}
    assert kept == {default_compute_dtype()}, kept
    # SmolLM2-135M: 4-bit linears (~0.53 bytes/weight with scales) hold 79% of the weights, the 16-bit embedding
    # 21%: ~0.42 of the 16-bit copy; with an fp32 embedding it would be ~0.63
    sixteen_bit = sum(weight_count(p) for p in params) * 2
    print(f"{backend}: 4-bit model {used / 2**20:.0f} MiB on the GPU, 16-bit copy {sixteen_bit / 2**20:.0f} MiB")
    assert used < 0.5 * sixteen_bit, (used, sixteen_bit)
    del model, params
    release_memory()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_train_reload_merge_generate(tmp_path, backend, method):
    from ftlab.generate import chat
    from ftlab.merge import adapter_config, load_merged, merge_adapter
    from ftlab.training import train

    run = train(smoke_config(tmp_path, f"method={method}", f"backend={backend}", "max_steps=12", "test_limit=8"))
    m = run.metrics
    assert m["steps"] == 12 and m["final_train_loss"] < m["final_eval_loss"] * 5
    if not RANDOM_WEIGHTS:
        assert m["tuned_exact_match"] >= m["base_exact_match"]
    optim = yaml_optim(run.run_dir)
    assert optim == "adamw_8bit"  # the 8-bit optimizer (not paged: no managed memory) is the GPU default
    # the adapter names the base it was trained on: merge and reload both read it from there
    assert adapter_config(run.run_dir)["base_model_name_or_path"] == run.cfg.model == MODEL

    # plain PEFT in a fresh process, without ftlab, on the GPU, on the base the training used
    script = textwrap.dedent(f"""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
        base = AutoModelForCausalLM.from_pretrained({run.cfg.model!r}, dtype=dtype, device_map="cuda")
        model = PeftModel.from_pretrained(base, {str(run.run_dir)!r})
        assert "ftlab" not in __import__("sys").modules
        print("loaded", type(model).__name__)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    merged = merge_adapter(run.run_dir, tmp_path / "merged",
                           prompts=[json.loads(x) for x in (DATES / "validation.jsonl").read_text().splitlines()[:8]])
    fid = merged.fidelity["saved_model"]
    print(method, backend, "merge fidelity", fid)
    assert fid["mean_kl"] <= merged.fidelity["max_mean_kl"]
    model = load_merged(tmp_path / "merged").cuda()
    answer = chat(model, run.tokenizer, "Rewrite as YYYY-MM-DD: 3 May 2001", max_new_tokens=16)
    print("merged model answers:", repr(answer))
    if not RANDOM_WEIGHTS:  # random weights may well answer with special tokens only
        assert answer.strip(), "empty generation from the merged model"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["t4", "bf16_false"])
def test_fp16_path(tmp_path, monkeypatch, backend, how):
    """QLoRA in fp16 mixed precision, the path a T4 takes. t4: this GPU reports no bf16 (as a T4 does), so the
    4-bit layers compute in fp16 and the Trainer scales fp16 gradients; bf16_false: the config switches bf16 off
    on a GPU that has it: the base and the 4-bit matmuls follow it into fp16 (training.base_dtypes)."""
    from ftlab import hardware, models
    from ftlab.training import train

    if how == "t4":
        monkeypatch.setattr(hardware, "cuda_bf16_supported", lambda: False)
        monkeypatch.setattr(models, "cuda_bf16_supported", lambda: False)
    run = train(smoke_config(tmp_path, "method=qlora", f"backend={backend}", "max_steps=6", "eval_file=null",
                             "test_file=null", *(["bf16=false"] if how == "bf16_false" else [])))
    args = run.trainer.args
    assert (args.fp16, args.bf16) == (True, False), (args.fp16, args.bf16)
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert run.metrics["steps"] == 6 and losses and all(math.isfinite(x) for x in losses), losses
    trainable = {p.dtype for p in run.model.parameters() if p.requires_grad}
    layer4 = next(m for m in run.model.modules() if type(m).__name__ == "Linear4bit")
    print(how, backend, "trainable", trainable, "4-bit matmuls in", layer4.compute_dtype, "losses", losses)
    assert layer4.compute_dtype == torch.float16, layer4.compute_dtype  # fp16 matmuls under fp16 autocast
    if backend == "transformers":  # the GradScaler refuses fp16 gradients: PEFT keeps the adapter in fp32
        assert trainable == {torch.float32}, trainable


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_labels_mask_the_prompt(tmp_path, backend):
    """M5: ftlab's examples carry labels (-100 where the assistant mask is 0); under this process's backend the
    trainer's dataset keeps them and its batches still mask the prompt (not only the padding)."""
    from ftlab.training import train

    run = train(smoke_config(tmp_path, "method=lora", f"backend={backend}", "max_steps=2", "eval_file=null",
                             "test_file=null"))
    data = run.trainer.train_dataset
    assert "labels" in data.column_names, data.column_names
    first = data[0]["labels"]
    assert -100 in first and any(t != -100 for t in first), first
    batch = next(iter(run.trainer.get_train_dataloader()))
    labels = batch["labels"]
    real = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(labels, dtype=torch.bool)
    assert ((labels == -100) & real).any(), "no prompt token is masked: the loss would cover every token"
    assert (labels != -100).any(), "every label is -100: nothing to learn"


def yaml_optim(run_dir) -> str:
    import yaml

    return yaml.safe_load((Path(run_dir) / "finetune_config.yaml").read_text())["optim"]
