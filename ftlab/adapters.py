"""PEFT and Unsloth: the one module that touches either library's API.

Leaves out: training (see `train.py`) and merging.
"""

from __future__ import annotations

import torch


def unsloth_load(name: str, *, load_in_4bit: bool, dtype: torch.dtype | None, max_seq_length: int):
    """(model, tokenizer) through Unsloth's FastLanguageModel (CUDA only; chosen in hardware.choose_backend)."""
    from unsloth import FastLanguageModel

    return FastLanguageModel.from_pretrained(
        model_name=name, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=load_in_4bit
    )
