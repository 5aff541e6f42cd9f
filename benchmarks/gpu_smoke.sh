#!/usr/bin/env bash
# The GPU path in one command on the lent GPU machine (DEVELOPERS.md, "GPU smoke"): no network, python 3.12 with
# torch 2.11+cu130, transformers 5.17, accelerate, peft and pytest; the rest comes as wheels in .whl/ (made here
# by `python benchmarks/gpu_wheels.py`, carried by the run call). At most ~8 minutes: every step is time-boxed,
# a failed step is recorded and the next one runs. Writes $OUT/summary.md (./gpu_smoke_out without $OUT): each
# step's status, seconds and key figures; beside it one log per step group (6 files: the run call returns 8).
#   bash benchmarks/gpu_smoke.sh
# Steps:
#   a  install the carried wheels (one --target per TRL version), ftlab from the checkout; GPU, driver,
#      versions; build the stand-in model (random weights, SmolLM2-135M's shape, benchmarks/standin_model.py);
#      import Unsloth once
#   b  plain PEFT + bitsandbytes, trl 1.16: FTLAB_UNSLOTH=0 pytest tests/test_gpu.py on the stand-in  } in
#   c  Unsloth, trl 1.15, another process and site dir: pytest tests/test_gpu.py                   } parallel:
#   d  notebook 03's cells (benchmarks/run_notebook_source.py; Unsloth's env where it imports)     } no timings
#   e  the QLoRA throughput benchmarks, alone on the GPU: the 135M and Llama-3.2-1B shapes at 2048 --long-rows
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT_DIR=${OUT:-$REPO/gpu_smoke_out}
WORK=${SMOKE_WORK:-/tmp/ftlab_smoke}  # sites, HF cache, stand-in, runs: outside the checkout
BUDGET=${SMOKE_BUDGET:-470}  # seconds for all steps; a step gets at most what is left
mkdir -p "$OUT_DIR" "$WORK"
SUMMARY=$OUT_DIR/summary.md
export HF_HOME=$WORK/hf HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 MPLBACKEND=Agg
STANDIN=$WORK/standin
COMMON=$WORK/site_common PLAIN=$WORK/site_trl116 FAST=$WORK/site_unsloth
ENV_PLAIN="PYTHONPATH=$PLAIN:$COMMON:$REPO FTLAB_UNSLOTH=0"
ENV_FAST="PYTHONPATH=$FAST:$COMMON:$REPO"
T0=$(date +%s)

# step ID LIMIT LOG COMMAND...: runs COMMAND under `timeout`, appends its output to LOG, and writes
# $WORK/status.ID ("| ID | ok/FAILED (exit N)/TIMEOUT | seconds |"); a step never stops the script
step() {
    local id=$1 limit=$2 log=$OUT_DIR/$3
    shift 3
    local left=$((BUDGET - ($(date +%s) - T0)))
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        echo "| $id | SKIPPED (out of time) | 0 |" >"$WORK/status.$id"
        return 0
    fi
    echo "=== step $id (limit ${limit}s): $*" >>"$log"
    local start rc status
    start=$(date +%s)
    timeout -k 10 "$limit" bash -c "$*" >>"$log" 2>&1
    rc=$?
    case $rc in 0) status=ok ;; 124 | 137) status="TIMEOUT (${limit} s)" ;; *) status="FAILED (exit $rc)" ;; esac
    echo "=== step $id: $status after $(($(date +%s) - start)) s" >>"$log"
    echo "| $id | $status | $(($(date +%s) - start)) |" >"$WORK/status.$id"
}

# ---- a: set-up (serial)
PIP="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade"
step a1-wheels 60 setup.log "set -e; $PIP --target $COMMON .whl/common/*.whl; $PIP --target $PLAIN .whl/trl116/*.whl; \
    $PIP --target $FAST .whl/unsloth/*.whl; du -sh $COMMON $PLAIN $FAST"
# ftlab from this checkout: an editable install maps ftlab.shipped.data/configs onto data/ and configs/
step a2-ftlab 45 setup.log "$PIP --no-build-isolation -e . || { echo 'editable install failed: linking the shipped \
    folders instead'; ln -sfn ../../data ftlab/shipped/data && ln -sfn ../../configs ftlab/shipped/configs; }"
step a3-versions 40 setup.log "nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv; \
    $ENV_PLAIN python3 -c \"import sys, torch, transformers, peft, accelerate, trl, bitsandbytes, datasets; \
    print('python', sys.version.split()[0], '| torch', torch.__version__, 'cuda', torch.version.cuda, '|', \
    torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), '| transformers', transformers.__version__, \
    '| peft', peft.__version__, '| accelerate', accelerate.__version__, '| trl', trl.__version__, \
    '| bitsandbytes', bitsandbytes.__version__, '| datasets', datasets.__version__)\""
step a4-standin 60 setup.log "$ENV_PLAIN python3 benchmarks/standin_model.py --tokenizer .whl/tokenizer \
    --out $STANDIN --into-hf-cache"
step a5-unsloth-import 75 setup.log "cd $WORK && $ENV_FAST python3 -c \"import unsloth, trl, datasets; \
    print('unsloth', unsloth.__version__, '| trl', trl.__version__, '| datasets', datasets.__version__)\""
export FTLAB_SMOKE_MODEL=$STANDIN

# ---- b, c, d: correctness, in parallel (separate processes, site dirs and working folders)
PYTEST="python3 -m pytest -q -s -o addopts= -p no:cacheprovider -rfE --durations=15 $REPO/tests/test_gpu.py"
NB_ENV=$ENV_FAST
grep -q "| ok |" "$WORK/status.a5-unsloth-import" 2>/dev/null || NB_ENV=$ENV_PLAIN
echo "notebook 03 runs with: $NB_ENV" >>"$OUT_DIR/notebook03.log"
step b-peft-trl116 230 peft.log "cd $REPO && $ENV_PLAIN $PYTEST" &
step c-unsloth-trl115 230 unsloth.log "mkdir -p $WORK/c && cd $WORK/c && $ENV_FAST $PYTEST --rootdir $REPO" &
step d-notebook03 230 notebook03.log "$NB_ENV FTLAB_PROFILE=${NB_PROFILE:-small} python3 \
    benchmarks/run_notebook_source.py notebooks/src/03_qlora_with_unsloth.py --cwd $WORK/nb03" &
wait

# ---- e: throughput, alone on the GPU; B = ftlab's path without Unsloth (the plain site)
BENCH="$ENV_PLAIN python3 benchmarks/train_throughput.py --tokenizer $STANDIN --max-length 2048 --long-rows --qlora \
    --warmup 3 --eval-rows 8"
step e1-bench-135m 90 bench.log "$BENCH --model configs/shapes/smollm2-135m.json --steps 12"
step e2-bench-1b 120 bench.log "$BENCH --model configs/shapes/llama-3.2-1b.json --batch 4 --steps 10"

# ---- summary: statuses in order, then the figures each log holds
{
    echo "# GPU smoke, $(date -u +%Y-%m-%dT%H:%MZ), $(($(date +%s) - T0)) s"
    echo
    echo "| step | status | s |"
    echo "| --- | --- | --- |"
    for s in a1-wheels a2-ftlab a3-versions a4-standin a5-unsloth-import b-peft-trl116 c-unsloth-trl115 \
        d-notebook03 e1-bench-135m e2-bench-1b; do
        cat "$WORK/status.$s" 2>/dev/null || echo "| $s | not run | |"
    done
    echo
    echo '## Machine and versions'
    echo '```'
    grep -E "^(name,|NVIDIA|python |unsloth |stand-in)" "$OUT_DIR/setup.log" 2>/dev/null | head -8
    echo '```'
    for log in peft unsloth; do
        echo "## tests/test_gpu.py, $log"
        echo '```'
        grep -E "4-bit model|merge fidelity|^(t4|bf16_false) |^(FAILED|ERROR) |[0-9]+ (passed|failed|error|skipped)" \
            "$OUT_DIR/$log.log" 2>/dev/null | cut -c1-300 | tail -20
        echo '```'
    done
    echo "## notebook 03"
    echo '```'
    grep -E "^notebook 03 runs|^(fp32:|validation loss|relative error|ALL |FAILED at)|Error" \
        "$OUT_DIR/notebook03.log" 2>/dev/null | cut -c1-300 | tail -12
    echo '```'
    echo "## throughput (A = TRL defaults, B = ftlab without Unsloth)"
    echo '```'
    grep -E "^(machine|model |figure|tokens_per_s|step_s_median|peak_|final_train|eval_loss|achieved|measured|mfu|compute_dtype|side )" \
        "$OUT_DIR/bench.log" 2>/dev/null
    echo '```'
} >"$SUMMARY"
cat "$SUMMARY"
