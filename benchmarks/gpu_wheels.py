"""Fetch, here (where PyPI answers), what benchmarks/gpu_smoke.sh needs on the lent GPU machine, into .whl/.

That machine has python 3.12, torch 2.11+cu130, transformers 5.17, accelerate and peft, and no network; it
lacks trl, bitsandbytes, datasets, unsloth and unsloth_zoo (/work/.library/device/KINDS.md lists what it has).
What travels with a `run` call is at most 64 MiB, the working tree included, so two wheels are slimmed:
bitsandbytes keeps only its CUDA 13.0 library (43 MB -> ~4 MB), unsloth drops `studio/` (28.6 MB -> ~2 MB).

  python benchmarks/gpu_wheels.py        # ~10 s; prints each folder's size, fails over MAX_MIB

.whl/ (git-ignored) afterwards:
  common/     bitsandbytes 0.50.2 (cuda130 only), datasets 4.x, dill, multiprocess: both processes install these
  trl116/     trl 1.16: the plain PEFT + bitsandbytes process
  unsloth/    trl 1.15, unsloth and unsloth_zoo 2026.10.9 (Unsloth pins trl <= 1.15), kernels, tomlkit
  tokenizer/  the embedded model's tokenizer files: benchmarks/standin_model.py builds the stand-in model there
One version of each package per folder: the smoke installs each folder into its own --target directory.
Leaves out: xformers, torchao, cut_cross_entropy, tyro, msgspec, diffusers (Unsloth imports each inside a
try, or only for features the smoke does not use) and everything the machine already has.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MIB = 55  # of the 64 MiB a run call carries: the rest is the working tree (~5 MiB today)
# pip matches each manylinux tag exactly; bitsandbytes 0.50.2 is tagged manylinux_2_24
PLATFORM = ["--python-version", "3.12", "--implementation", "cp"] + [
    arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
    for arg in ("--platform", tag)]
FOLDERS = {  # folder -> requirements, each pinned (--no-deps: every missing dependency is named here)
    # datasets: the newest 4.x (Unsloth pins datasets < 5; TRL needs >= 4.7); the machine lacks its dill and
    # multiprocess (its other needs, pyarrow, fsspec, xxhash, httpx, pandas, are there)
    "common": ["bitsandbytes==0.50.2", "datasets==4.8.5", "dill==0.4.1", "multiprocess==0.70.19"],
    "trl116": ["trl==1.16.0"],
    "unsloth": ["trl==1.15.0", "unsloth==2026.10.9", "unsloth_zoo==2026.10.9", "kernels==0.19.1", "tomlkit==0.15.3"],
}
KEEP_ONLY = {  # wheel name prefix -> (files to drop: a predicate on the path inside the wheel)
    "bitsandbytes-": lambda name: name.endswith(".so") and not name.endswith("libbitsandbytes_cuda130.so"),
    "unsloth-": lambda name: name.startswith("studio/"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def download(folder: Path, requirements: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *PLATFORM,
           "-d", str(folder), *requirements]
    subprocess.run(cmd, check=True)


def slim(wheel: Path, drop) -> None:
    """Rewrite `wheel` in place without the files `drop` picks, and without their RECORD lines."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not drop(line.split(",", 1)[0])).encode()
            dst.writestr(info, data)
    tmp.replace(wheel)


def copy_tokenizer(dest: Path) -> None:
    """The embedded model's tokenizer files (ftlab doctor --prepare puts the model into the HF cache)."""
    from ftlab.embedded import build

    snapshot = build()  # a no-op once the embedded model is in the HF cache
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (snapshot / name).exists():
            shutil.copy(snapshot / name, dest / name)


def mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", default=str(ROOT / ".whl"))
    args = p.parse_args(argv)
    dest = Path(args.dest)
    for folder, requirements in FOLDERS.items():
        shutil.rmtree(dest / folder, ignore_errors=True)  # one version of each: no leftovers from older pins
        download(dest / folder, requirements)
        for wheel in (dest / folder).glob("*.whl"):
            drop = next((d for prefix, d in KEEP_ONLY.items() if wheel.name.startswith(prefix)), None)
            if drop:
                slim(wheel, drop)
    copy_tokenizer(dest / "tokenizer")
    total = mib(dest)
    for sub in sorted(d for d in dest.iterdir() if d.is_dir()):
        print(f"{sub.name:>10}: {mib(sub):5.1f} MiB  " + " ".join(sorted(f.name.split("-")[0] + "-" +
              f.name.split("-")[1] for f in sub.glob("*.whl"))))
    print(f"{'total':>10}: {total:5.1f} MiB (limit {MAX_MIB} MiB; a run call carries 64 MiB with the working tree)")
    if total > MAX_MIB:
        print(f"too big: {total:.1f} MiB > {MAX_MIB} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
