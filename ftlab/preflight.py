"""Before a run loads anything: can this machine, with these libraries and files, run this config?

`config.validate` checks the config itself (pure: it runs on every panel change). `preflight(cfg)` checks
the world around it - the data files, bitsandbytes for 4-bit, TensorBoard, the optimizer and scheduler
names this transformers knows, the local lm-eval tasks, the reward functions GRPO names, the adapter a run
starts from, a TRL that can compute its loss here - and reports
every problem at once, so one run of `ftlab train` shows all there is to fix. `training.train` calls it.
Leaves out: choices made for this machine (config.resolve) and anything that needs the model.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

import torch

from ftlab.config import TrainConfig, explain
from ftlab.data import detect_format, read_rows
from ftlab.evaluation import LM_EVAL_DIR, lm_eval_tasks
from ftlab.hardware import bitsandbytes_usable, triton_gpu_problem
from ftlab.rewards import REWARDS


class PreflightError(ValueError):
    """A config this machine cannot run; the message lists every problem with its fix."""


def trl_problem() -> str | None:
    """Why the installed TRL cannot train here, or None.

    TRL 1.15 (the newest Unsloth allows) computes the SFT and DPO losses in a Triton kernel with no other
    path; PyTorch's CPU wheels have no Triton, and the kernel needs a GPU anyway. TRL 1.16 added a torch
    path. Without this check the first training step fails inside TRL ('NoneType' has no attribute 'apply').
    """
    import trl
    from packaging.version import Version

    if Version(trl.__version__) >= Version("1.16"):
        return None
    if torch.cuda.is_available():
        old_gpu = triton_gpu_problem()  # a P100 has CUDA but not Triton's minimum
        return f"TRL {trl.__version__} computes its loss in a Triton kernel, but {old_gpu}" if old_gpu else None
    return (f"TRL {trl.__version__} computes its training loss in a Triton kernel that runs only on a CUDA GPU, "
            "and this machine has none. Fix: pip install -U 'trl>=1.16' (it adds a CPU path; ftlab supports "
            "it). TRL 1.15 is for GPU machines with Unsloth, which pins trl<=1.15.")


def _did_you_mean(value: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def problems(cfg: TrainConfig, own_rewards: bool = False) -> list[str]:
    """Every reason this machine cannot run cfg, each naming the setting and the fix; [] when it can.

    own_rewards: train() was given reward functions, which replace cfg.reward_funcs' names."""
    from transformers import SchedulerType
    from transformers.training_args import OptimizerNames

    found = []
    if cfg.train_file is None:
        found.append(explain("train_file", None, "no training data", "train_file=<your JSONL>, or start from "
                             "a shipped config: ftlab train dates_smoke"))
    for key in ("train_file", "eval_file", "test_file", "unseen_test_file"):
        path = getattr(cfg, key)
        if path is not None and not Path(path).exists():
            found.append(explain(key, path, f"no such file (looked in {Path(path).resolve().parent})",
                                 f"check the path, or set {key}=null" if key != "train_file" else "check the path"))
    schedulers = [s.value for s in SchedulerType]
    if cfg.lr_scheduler_type not in schedulers:
        found.append(explain("lr_scheduler_type", cfg.lr_scheduler_type, "not a scheduler this transformers "
                             f"knows{_did_you_mean(cfg.lr_scheduler_type, schedulers)}",
                             f"use one of {', '.join(schedulers)}"))
    optimizers = [o.value for o in OptimizerNames]
    if cfg.optim is not None and cfg.optim not in optimizers:
        found.append(explain("optim", cfg.optim, "not an optimizer this transformers knows"
                             f"{_did_you_mean(cfg.optim, optimizers)}",
                             "use e.g. adamw_torch or adamw_8bit (all: transformers' OptimizerNames)"))
    if cfg.report_to == "tensorboard" and not (importlib.util.find_spec("tensorboard")
                                               or importlib.util.find_spec("tensorboardX")):
        found.append(explain("report_to", cfg.report_to, "TensorBoard is not installed",
                             "pip install tensorboard, or report_to=none"))
    if cfg.method == "qlora":
        ok, why = bitsandbytes_usable()
        if not ok:
            found.append(explain("method", cfg.method, f"QLoRA loads the base in 4-bit, but {why}",
                                 "install bitsandbytes>=0.46, or use method=lora"))
    if cfg.benchmark_tasks:
        known = sorted(t["task"] for t in lm_eval_tasks())  # the task names the harness will be given
        unknown = [t for t in cfg.benchmark_tasks if t not in known]
        if unknown:
            found.append(explain("benchmark_tasks", cfg.benchmark_tasks, f"no local lm-eval task {unknown}",
                                 f"use some of {known} (task files in {LM_EVAL_DIR})"))
    if cfg.task == "grpo" and not own_rewards:
        found += reward_problems(cfg.reward_funcs)
    if cfg.init_adapter and not (Path(cfg.init_adapter) / "adapter_config.json").is_file():
        found.append(explain("init_adapter", cfg.init_adapter, "not an adapter folder (no adapter_config.json)",
                             "give the run folder of an earlier LoRA run, or init_adapter=null"))
    trl = trl_problem()
    if trl:
        found.append(trl)
    if cfg.task == "cpt":
        found += _text_file_problems(cfg)
    if cfg.task == "orpo" and not has_orpo():
        import trl as trl_module

        found.append(explain("task", cfg.task, f"TRL {trl_module.__version__} has no ORPOTrainer (TRL 1.x keeps "
                             "it in trl.experimental.orpo)", "pip install -U 'trl>=1.16', or task=dpo"))
    if torch.cuda.device_count() > 1 and "LOCAL_RANK" not in os.environ:
        found.append(f"{torch.cuda.device_count()} GPUs are visible to one process: the Trainer would wrap the "
                     "model in DataParallel (slower for LoRA, and a 4-bit model's batch silently doubles). Fix: "
                     "CUDA_VISIBLE_DEVICES=0 before Python starts (the notebooks' install cell does it), or "
                     "torchrun --nproc_per_node 2 -m ftlab.cli train ... for both")
    return found


def _text_file_problems(cfg: TrainConfig) -> list[str]:
    """task=cpt reads raw text from every data file: say which file holds something else."""
    found = []
    for key in ("train_file", "eval_file", "test_file", "unseen_test_file"):
        path = getattr(cfg, key)
        if path is None or not Path(path).exists():
            continue  # a missing file is reported above
        try:
            rows = read_rows(path)
            fmt = detect_format(rows[:200]) if rows else None
        except ValueError as err:  # not UTF-8, no known format: the reader's own message names the fix
            found.append(explain(key, path, str(err).split(". Fix")[0], "see ftlab data check"))
            continue
        if fmt is None:
            found.append(explain(key, path, "holds no text at all", "add paragraphs, or check the path"))
        elif fmt != "text":
            found.append(explain(key, path, f"holds {fmt} rows, but task=cpt trains on raw text",
                                 "give a .txt file (paragraphs between blank lines) or {\"text\": ...} rows, or set task=sft"))
    return found


def has_orpo() -> bool:
    """Whether the installed TRL has ORPO: trl.experimental.orpo (TRL PR #4480 moved it), or the top level."""
    import trl

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ftlab says itself that ORPO is experimental
    return importlib.util.find_spec("trl.experimental.orpo") is not None or hasattr(trl, "ORPOTrainer")


def reward_problems(names) -> list[str]:
    """GRPO's reward functions: some given, each a shipped name (ftlab.rewards.REWARDS)."""
    shipped = ", ".join(REWARDS)
    if not names:
        return [explain("reward_funcs", names, "task=grpo scores sampled answers, but no reward function is "
                        "named", f"reward_funcs=[exact_date, date_fields] (shipped: {shipped}), or your own: "
                        "train(cfg, reward_funcs=[my_reward])")]
    return [explain("reward_funcs", names, f"no reward function {n!r}{_did_you_mean(n, list(REWARDS))}; the "
                    f"shipped ones are {shipped}", "use those names, or pass your own function: "
                    "train(cfg, reward_funcs=[my_reward])") for n in names if n not in REWARDS]


def preflight(cfg: TrainConfig, own_rewards: bool = False) -> None:
    """Raise one PreflightError listing every problem (numbered, on one line) when cfg cannot run here."""
    found = problems(cfg, own_rewards)
    if len(found) == 1:
        raise PreflightError(found[0])
    if found:
        raise PreflightError(f"{len(found)} problems before training: "
                             + " ".join(f"({i}) {p}" for i, p in enumerate(found, 1)))
