"""bitsandbytes 4-bit config: the one place ftlab builds a `BitsAndBytesConfig`.

NF4 ("normal float 4") spaces its 16 levels for normally distributed weights; double quantization
also quantizes the per-block scales (saves ~0.4 bits per weight). Works on CUDA and, with
bitsandbytes >= 0.46, on CPU. Leaves out: 8-bit loading and GPTQ/AWQ.
"""

from __future__ import annotations

import torch
from transformers import BitsAndBytesConfig


def nf4_config(compute_dtype: torch.dtype = torch.bfloat16, double_quant: bool = True) -> BitsAndBytesConfig:
    """4-bit NF4 weights; matmuls run in `compute_dtype` (bf16 where supported, fp16 on a T4)."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=torch.uint8,
    )


def nf4_roundtrip(w: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """`w` quantized to NF4 (one absmax per block of `blocksize`) and back: the values a 4-bit layer uses."""
    import bitsandbytes.functional as bnb_functional

    codes, state = bnb_functional.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
    return bnb_functional.dequantize_4bit(codes, state)
