"""Peak memory of every course notebook in the small profile: does each fit Binder's 2 GB?

Each notebook runs top to bottom in its own process (nbclient + a fresh ipykernel) under binder/start, so
with Binder's environment (small profile), and with FTLAB_MEMORY_LIMIT_MB=2048: ftlab plans for Binder's 2 GB
(its cgroup limit, which a machine without one lacks), e.g. fp32 rather than bf16 autocast on a CPU. That
process reports its children's peak RSS, i.e. the kernel's or a `!ftlab` command's. One line per notebook,
then the largest.

  python benchmarks/notebook_memory.py                 # every notebook (~15 min on 2 cores)
  python benchmarks/notebook_memory.py 02_lora 03      # the notebooks whose names start so
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048

EXECUTE = """
import json, resource, sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
if len(sys.argv) > 3:  # keep the executed copy, outputs and all
    nbformat.write(nb, sys.argv[3])
print("PEAK " + json.dumps(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024))
"""


def notebook_peak_mb(path: Path, workdir: Path, python: str = sys.executable, env: dict | None = None,
                     save_to: Path | None = None, as_binder: bool = True) -> tuple[float, float]:
    """(kernel peak RSS in MB, seconds) for one notebook, run by `python` in a fresh process and kernel.

    python: an interpreter with nbclient and ipykernel (tests/test_binder.py passes a fresh Binder venv's).
    save_to: write the executed notebook, with its outputs, there. as_binder: ftlab sees Binder's 2 GB limit
    (False: the machine's memory, as on Colab's CPU runtime)."""
    base = os.environ if env is None else env
    binder = {"FTLAB_MEMORY_LIMIT_MB": str(BINDER_LIMIT_MB)} if as_binder else {}
    env = {**binder, **base, "FTLAB_PROFILE": "small", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           # the notebooks' `!ftlab ...` cells need this interpreter's scripts, as in an activated venv
           "PATH": f"{Path(python).parent}{os.pathsep}{base.get('PATH', '')}"}
    start = time.perf_counter()
    out = subprocess.run(["bash", str(ROOT / "binder" / "start"), str(python), "-c", EXECUTE, str(path),
                          str(workdir), *([str(save_to)] if save_to else [])], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PEAK ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"{path.name} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[5:]), seconds


def main(argv: list[str]) -> int:
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if argv:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(a) for a in argv)]
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nb in notebooks:  # run in a temp dir: the run folders the notebooks write land there
            peaks[nb.stem], seconds = notebook_peak_mb(nb, Path(tmp))
            fits = "fits" if peaks[nb.stem] < BINDER_LIMIT_MB else "OVER"
            print(f"{nb.stem:<28}{peaks[nb.stem]:>8.0f} MB  {seconds:>6.0f} s  {fits} Binder's {BINDER_LIMIT_MB} MB",
                  flush=True)
    worst = max(peaks, key=peaks.get)
    print(f"largest: {worst} at {peaks[worst]:.0f} MB of {BINDER_LIMIT_MB} MB")
    return 0 if peaks[worst] < BINDER_LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
