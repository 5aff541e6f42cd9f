"""Course settings: how big a notebook's runs are, chosen by the environment, not by editing cells.

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
