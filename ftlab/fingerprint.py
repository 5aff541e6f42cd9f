"""What identifies a run's surroundings: the library versions and the sha256 of a file.

One list of libraries and one hash function, shared by `ftlab doctor`, the recorded finetune_config.yaml,
the lineage record and the embedded model's provenance. Leaves out: git state and config hashes (report.py).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LIBRARIES = ("ftlab", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "gguf",
             "unsloth")


def library_versions(installed_only: bool = True) -> dict[str, str | None]:
    """{library: version} for LIBRARIES; installed_only=False keeps the missing ones as None."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            if not installed_only:
                found[name] = None
    return found


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (a 100 MB GGUF does not sit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
