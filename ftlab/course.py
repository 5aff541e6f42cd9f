"""Course settings: how big a notebook's runs are, chosen by the environment, not by editing cells, and what
a notebook's install cell announces (profile, device, dtype, expected time).

FTLAB_PROFILE=small (CI, Binder): fewer steps and rows, same code. Unset or `full`: the real lesson.
On a CUDA GPU the full profile can move to bigger settings (`pick(gpu=...)`).
"""

from __future__ import annotations

import os

import torch


def profile() -> str:
    value = os.environ.get("FTLAB_PROFILE", "full").lower()
    if value not in ("small", "full"):
        raise ValueError(f"FTLAB_PROFILE={value!r}: use 'small' (CI, Binder) or 'full'")
    return value


def pick(*, small, full, gpu=None):
    """The value for this run: `small` in the small profile, `gpu` on a CUDA GPU if given, else `full`."""
    if profile() == "small":
        return small
    if gpu is not None and torch.cuda.is_available():
        return gpu
    return full


# Seconds each notebook took in the small profile on a 2-core CPU, executed from the wheel as CI runs the course
# (tests/test_course_from_wheel.py through `python notebooks/refresh_executed.py -s`): kernel start and the
# first notebook's install included. The README's table "Expected time per notebook" shows the same figures.
MEASURED_ON = "an AMD EPYC with 2 cores and AVX2 only (fp32), 2026-12-07"
SMALL_CPU_SECONDS = {"00_setup_and_tour": 183, "01_formatting_data": 16, "02_lora": 281, "03_qlora_with_unsloth": 111,
                     "04_merging_adapters": 441, "05_evaluation": 209, "06_preference_tuning_dpo": 492,
                     "07_other_peft_methods": 380, "08_scaling_out": 102, "09_rl_with_verifiable_rewards": 237,
                     "solutions": 17}


def expected_time(notebook: str) -> str:
    """The measured time of `notebook` for this profile and device, or what is not measured."""
    seconds = SMALL_CPU_SECONDS.get(notebook)
    if seconds is None:
        return f"expected time: not measured for {notebook}"
    took = f"{seconds} s" if seconds < 90 else f"{seconds / 60:.0f} min"
    small = f"about {took} in the small profile on {MEASURED_ON}"
    if profile() == "small" and not torch.cuda.is_available():
        return f"expected time: {small}; a faster CPU takes less"
    device = "a GPU" if torch.cuda.is_available() else "a CPU"
    return f"expected time: the {profile()} profile on {device} is not measured yet ({small})"


def announce(notebook: str) -> str:
    """What `notebook` runs with here: profile, device and training dtype (with the reason), and its time."""
    from ftlab.hardware import choose_precision, gpu_summary

    precision = choose_precision()
    dtype = "bf16" if precision.bf16 or precision.cpu_autocast_bf16 else "fp16" if precision.fp16 else "fp32"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = gpu_summary() if torch.cuda.is_available() else f"CPU, {cores} cores"
    return (f"{notebook}: profile {profile()} | device {device} | training in {dtype} ({precision.reason})\n"
            f"{expected_time(notebook)}")
