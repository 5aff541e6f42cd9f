"""The GPU path on a real CUDA GPU: 4-bit loading through Unsloth and through PEFT + bitsandbytes, LoRA and
QLoRA training, the adapter reloaded by plain PEFT, merging with the fidelity check, generation.

Skipped without CUDA (CI has none); `benchmarks/gpu_smoke.sh` runs this file on a GPU machine. The choice
logic (fp16 on a T4, bf16 on Ampere and newer) is covered on CPU by tests/test_hardware.py.

One backend per process: once imported, Unsloth patches transformers, PEFT and TRL for the whole process, so
a "plain PEFT" test after an Unsloth test would not be plain. Where Unsloth is installed this file tests it
(ftlab imports it first); `FTLAB_UNSLOTH=0 pytest tests/test_gpu.py` tests plain PEFT + bitsandbytes in a
process Unsloth never enters. gpu_smoke.sh runs both.
"""

import json
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

import ftlab  # noqa: F401  (before anything else loads transformers: on an Unsloth GPU it imports Unsloth first)
from ftlab.hardware import unsloth_importable

BACKENDS = ["unsloth"] if unsloth_importable() else ["transformers"]


def test_this_process_runs_one_backend():
    assert ("unsloth" in sys.modules) == (BACKENDS == ["unsloth"]), BACKENDS


def test_precision_matches_this_gpu():
    from ftlab.hardware import choose_precision

    p = choose_precision()
    bf16 = torch.cuda.get_device_capability(0)[0] >= 8
    assert (p.bf16, p.fp16, p.cpu_autocast_bf16) == (bf16, not bf16, False), p


@pytest.mark.parametrize("backend", BACKENDS)
def test_4bit_load(backend):
    from ftlab.models import load_model

    model, _ = load_model(load_in_4bit=True, backend=backend)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in kinds, kinds  # bitsandbytes' CUDA 4-bit layers under both backends
    assert next(model.parameters()).device.type == "cuda"
    fp16_mb = sum(p.numel() for p in model.parameters()) * 2 / 2**20
    assert torch.cuda.memory_allocated() / 2**20 < fp16_mb  # 4-bit weights: less than the 16-bit copy


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_train_reload_merge_generate(tmp_path, backend, method):
    from ftlab.config import load_config
    from ftlab.generate import chat
    from ftlab.merge import load_merged, merge_adapter
    from ftlab.training import train

    cfg = load_config(ROOT / "configs" / "dates_smoke.yaml", [
        f"train_file={DATES / 'train.jsonl'}", f"eval_file={DATES / 'validation.jsonl'}",
        f"test_file={DATES / 'test.jsonl'}", f"output_dir={tmp_path / 'run'}", f"method={method}",
        f"backend={backend}", "max_steps=12"])
    run = train(cfg)
    m = run.metrics
    assert m["steps"] == 12 and m["final_train_loss"] < m["final_eval_loss"] * 5
    assert m["tuned_exact_match"] >= m["base_exact_match"]
    optim = yaml_optim(run.run_dir)
    assert optim == "adamw_8bit"  # the 8-bit optimizer (not paged: no managed memory) is the GPU default

    # plain PEFT in a fresh process, without ftlab, on the GPU
    script = textwrap.dedent(f"""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct", dtype=torch.bfloat16,
                                                    device_map="cuda")
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
    answer = chat(load_merged(tmp_path / "merged").cuda(), run.tokenizer, "Rewrite as YYYY-MM-DD: 3 May 2001", max_new_tokens=16)
    assert answer.strip(), "empty generation from the merged model"


def yaml_optim(run_dir) -> str:
    import yaml

    return yaml.safe_load((Path(run_dir) / "finetune_config.yaml").read_text())["optim"]
