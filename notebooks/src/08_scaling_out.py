# %% [markdown]
# # 08 · Scaling out: the command line, configs, and several GPUs
# {badges}
#
# {runtime}
#
# **You will learn to**
# - run the notebooks' training job from a terminal with `ftlab train CONFIG.yaml key=value`;
# - load, override and save YAML configs, and rerun a job from the config its run folder recorded;
# - launch the same job on several processes with `accelerate launch` (DDP, FSDP, DeepSpeed);
# - work out the effective batch size on several GPUs and keep it fixed when the GPU count changes.
#
# **Binder (2 GB) may not run this notebook.** Its two-process (DDP) cell runs two training processes at
# once beside the kernel, and Binder counts all of them against its 2 GB; the CI run of 2026-12-02 found
# one process of this notebook over 2 GB on its own. Colab, Kaggle or a machine with 4 GB run all of it.
#
# **Where the code is**: `ftlab.cli` (the command line), `ftlab.config` (YAML, overrides, validation), `ftlab.shipped` (shipped configs). Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# - Data and configs ship inside ftlab: `load_config("dates_smoke")` names a shipped config, and the run
#   folders (`runs/...`) are written beside this notebook.
# - `!command` lines run in a shell. Putting this Python's folder first on PATH makes `ftlab` and
#   `accelerate` the ones installed beside it (a virtual environment need not be activated).
# - `pick(small=..., full=...)`: a couple of steps in CI (FTLAB_PROFILE=small).

# %%
import os
import shutil
import sys
from pathlib import Path

from ftlab.course import pick, profile
from ftlab.shipped import configs_dir, data_dir

DATA_DIR, CONFIGS = data_dir(), configs_dir()  # the course's data and configs, shipped inside the package
for old in ("runs/08_cli", "runs/08_ddp"):  # start empty, so the checks below see this run's files
    shutil.rmtree(old, ignore_errors=True)
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
steps = pick(small=2, full=20)  # a demonstration; notebook 02 trains for real
job = f"dates_smoke max_steps={steps} eval_file=null save_steps=1000"  # the shared settings
print("profile:", profile(), "| runs written to", os.getcwd(), "| job:", job)

# %% [markdown]
# **The same run from the command line**
# - `ftlab train` reads a YAML config, applies `key=value` overrides, and calls the very `train()` the
#   notebooks call. It is what you run on a rented GPU box, in a job scheduler, or in `tmux` overnight.
# - In a terminal: `ftlab train dates_smoke output_dir=runs/08_cli max_steps=2` (a shipped config by name, or a path to your own YAML).

# %%
# !ftlab train {job} output_dir=runs/08_cli test_limit=4

# %% [markdown]
# - The run folder: the adapter (`adapter_model.safetensors`, `adapter_config.json`), the tokenizer,
#   the resolved config with library versions (`finetune_config.yaml`), per-step metrics, the loss plot,
#   the data lineage and a markdown report.

# %%
run_dir = Path("runs/08_cli")
for path in sorted(run_dir.iterdir()):
    print(f"{path.name:32} {path.stat().st_size / 1024:10.1f} KB" if path.is_file() else f"{path.name}/")

# %% [markdown]
# **YAML configs: load, override, save**
# - A config is a `TrainConfig` dataclass; YAML only fills its fields. The names are TRL's
#   (`learning_rate`, `per_device_train_batch_size`, ...), so they carry over to `trl sft` and axolotl.
# - Overrides are the same `key=value` strings as on the command line, type-checked.

# %%
import dataclasses

from ftlab.config import TrainConfig, load_config, save_config

cfg = load_config("dates_lora", ["learning_rate=1e-4", "r=8", "output_dir=runs/08_mine"])
defaults = TrainConfig()
print("differs from the defaults:")
for key, value in dataclasses.asdict(cfg).items():
    if value != getattr(defaults, key):
        print(f"  {key} = {value!r}   (default {getattr(defaults, key)!r})")

# %% [markdown]
# - `save_config` writes every field, defaults included: the file alone says what ran.
# - The run folder's `finetune_config.yaml` is such a file (plus library versions, kept as a record):
#   loading it gives back the exact config of the command-line run, ready to rerun or to change.
# - A typo fails at once, with the fix, not ten minutes into training.

# %%
saved = save_config(cfg, "runs/08_mine.yaml")
assert load_config(saved) == cfg
recorded = load_config(run_dir / "finetune_config.yaml")
print(f"recorded: method={recorded.method} max_steps={recorded.max_steps} optim={recorded.optim}")
try:
    load_config("dates_lora", ["learnig_rate=1e-4"])
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# **Several processes: `accelerate launch`**
# - `accelerate launch --config_file X.yaml -m ftlab.cli train CONFIG.yaml` starts one training process
#   per GPU; the Trainer inside `train()` sees them and splits every batch across them.
# - The course ships one accelerate config per strategy. Read the comment at the top of each: what it
#   shards, and when to pick it.
#   - DDP: every GPU holds the whole model; fastest when it fits.
#   - FSDP / DeepSpeed ZeRO: parameters, gradients and optimizer states are split across GPUs, for
#     models that do not fit on one.

# %%
for path in sorted((CONFIGS / "accelerate").glob("*.yaml")):
    lines = path.read_text().splitlines()
    comments = [ln.lstrip("# ") for ln in lines if ln.startswith("#")]
    settings = {ln.split(":")[0]: ln.split(":", 1)[1].split("#")[0].strip() for ln in lines
                if ln.split(":")[0] in ("distributed_type", "num_processes", "mixed_precision", "zero_stage",
                                        "fsdp_reshard_after_forward")}
    print(f"{path}\n  {settings}\n  " + "\n  ".join(comments[:2]))

# %% [markdown]
# - The exact commands, for a machine with 2 GPUs (edit `num_processes` in the YAML or pass
#   `--num_processes N`):

# %%
for strategy in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"):
    print(f"accelerate launch --config_file {CONFIGS / 'accelerate' / f'{strategy}.yaml'} "
          "-m ftlab.cli train dates_lora")

# %% [markdown]
# - Without GPUs, DDP still runs: two CPU processes that average gradients over gloo. Here both share
#   the cores one process already uses, so it gains no speed (the cell after next prints both runs'
#   times), but it is the same code path as 2 GPUs: each process trains on its own slice of every batch.
# - The launcher: `torchrun`, PyTorch's own, which `accelerate launch` runs underneath for GPUs.
#   (accelerate starts several *CPU* processes only through MPI, `mpirun`, which this machine lacks.)

# %%
# !torchrun --nproc_per_node 2 -m ftlab.cli train {job} output_dir=runs/08_ddp test_file=null

# %% [markdown]
# **What changes on several GPUs: the effective batch**
# - One optimizer step sees `per_device_train_batch_size x gradient_accumulation_steps x processes`
#   examples. More GPUs with the same config = a bigger batch and fewer steps per epoch, and a learning
#   rate tuned for one GPU may now be off.
# - The runs above show it: after the same number of steps, the 2-process run has covered twice as
#   much of the data (the `epoch` in metrics.jsonl).

# %%
import json

import pandas as pd


def read_run(folder):
    rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    return {"epochs": max(r["epoch"] for r in rows if r["epoch"] is not None),
            "seconds": max(r["elapsed_s"] for r in rows if r.get("elapsed_s") is not None)}


runs = {name: read_run(f"runs/{name}") for name in ("08_cli", "08_ddp")}
print({name: f"{r['epochs']:.4f} epochs in {r['seconds']:.0f} s after {steps} steps" for name, r in runs.items()})

# %% [markdown]
# - To keep the effective batch of `configs/dates_lora.yaml` (8 per step, tuned on 1 device) on more
#   GPUs, shrink the per-device batch (or the accumulation, when there is some):

# %%
def effective_batch(per_device, accumulation, processes):
    return per_device * accumulation * processes


target = effective_batch(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, 1)
pd.DataFrame([{"GPUs": n,
               "effective batch, config unchanged": effective_batch(cfg.per_device_train_batch_size,
                                                                    cfg.gradient_accumulation_steps, n),
               "per_device_train_batch_size to keep it": target / n / cfg.gradient_accumulation_steps}
              for n in (1, 2, 4, 8)]).set_index("GPUs")

# %% [markdown]
# **Exercise** (pick a level)
# - *Easy*: rerun the command-line job with `learning_rate=5e-4 r=4` and open its `finetune_report.md`.
# - *Medium*: write a config file of your own for the numbers task (`data/numbers/`), save it with
#   `save_config`, and run it with `ftlab train`.
# - *Hard*: run the DDP job with `per_device_train_batch_size=2 gradient_accumulation_steps=2` and
#   check in metrics.jsonl that it covers the data at the same rate as the single-process run.

# %%
# Exercise default: the medium level's config, written and checked (not run).
numbers = dataclasses.replace(load_config("dates_smoke"), train_file=str(DATA_DIR / "numbers" / "train.jsonl"),
                              eval_file=str(DATA_DIR / "numbers" / "validation.jsonl"),
                              test_file=str(DATA_DIR / "numbers" / "test.jsonl"),
                              output_dir="runs/08_numbers")
print(f"wrote {save_config(numbers, 'runs/08_numbers.yaml')}; run it with: ftlab train runs/08_numbers.yaml")

# %% [markdown] tags=["exercise"]
# **Checked exercise**: how many optimizer steps make one epoch? Each of `processes` gets an equal share
# of the rows (the sampler repeats a few rows to make the shares equal) and cuts it into batches of
# `per_device` (the last one may be short). It steps once every `accumulation` batches, and a short last
# group still makes a step. Write `steps_per_epoch(n_rows, per_device, accumulation, processes)`. The check
# compares it with counting the batches of torch's `DistributedSampler` and `DataLoader`. The cell after
# it turns your count into the epochs the two runs above logged.

# %% tags=["exercise"]
def steps_per_epoch(n_rows, per_device, accumulation, processes):
    """Optimizer steps in one pass over n_rows."""
    return None  # your code here


# %% tags=["solution"]
import math


def steps_per_epoch(n_rows, per_device, accumulation, processes):
    """Optimizer steps in one pass over n_rows."""
    batches = math.ceil(math.ceil(n_rows / processes) / per_device)  # per process
    return math.ceil(batches / accumulation)


# %% tags=["check"]
from ftlab.exercises import check_steps_per_epoch

check_steps_per_epoch(steps_per_epoch)

# %%
# Your count against the epochs the Trainer logged for the two runs above (dates_smoke's batch, 1 and 2 processes)
from ftlab.data import read_rows

smoke = load_config("dates_smoke")
n_rows = len(read_rows(smoke.train_file))
if check_steps_per_epoch(steps_per_epoch):
    for name, processes in (("08_cli", 1), ("08_ddp", 2)):
        per_epoch = steps_per_epoch(n_rows, smoke.per_device_train_batch_size, smoke.gradient_accumulation_steps,
                                    processes)
        print(f"{name}: {steps} steps / {per_epoch} per epoch = {steps / per_epoch:.4f} epochs; logged "
              f"{runs[name]['epochs']:.4f}")
else:
    print("steps_per_epoch does not pass its check yet: the comparison with the runs waits for it")

# %% [markdown]
# **Questions**
# 1. Why is `finetune_config.yaml` saved with every field, defaults included, rather than only the
#    overrides you typed?
# 2. You move a job from 1 GPU to 4 and keep the config. What changes, and what would you adjust?
# 3. LoRA on a 7B model fits on one 24 GB GPU. Which accelerate config would you pick for 4 such GPUs,
#    and why not FSDP?
# 4. Full fine-tuning of a 7B model with AdamW needs ~112 GB for weights, gradients and optimizer state.
#    Which config makes it fit on 4 x 40 GB GPUs?
#
# <details><summary>Answers</summary>
#
# 1. Defaults change between ftlab, TRL and transformers versions. The full file records what actually ran,
#    so the run can be repeated and compared later on another version, and `ftlab train` on that file
#    reproduces it.
# 2. The effective batch grows 4x, so an epoch takes 4x fewer steps and `max_steps` now covers 4x more data.
#    A learning rate tuned for the smaller batch may be off. To keep the run the same, divide the per-device
#    batch (or the accumulation) by 4; or keep the bigger batch and retune the rate and the steps.
# 3. DDP (`configs/accelerate/ddp.yaml`): the model fits on each GPU, so a full replica per GPU is fastest.
#    Only the small adapter's gradients are averaged. FSDP shards the parameters and gathers them for every
#    layer's forward and backward: communication that pays off only when a replica does not fit.
# 4. Shard everything: `deepspeed_zero3.yaml` or `fsdp.yaml` (full shard). Weights, gradients and optimizer
#    states are split 4 ways: 112 / 4 = 28 GB per GPU, plus activations (with gradient checkpointing). ZeRO-2
#    keeps a full bf16 copy of the weights on each GPU: 14 + 98 / 4 = 38.5 GB, too tight for 40 GB.
#
# </details>

# %%
# The lesson's own check: the command-line run wrote its adapter and its config, and the config reloads.
assert (run_dir / "adapter_model.safetensors").stat().st_size > 0
assert (run_dir / "finetune_config.yaml").exists() and recorded.max_steps == steps
assert runs["08_ddp"]["epochs"] > 1.5 * runs["08_cli"]["epochs"], runs  # 2 processes: twice the data per step
print("notebook check passed")
