"""Binder: a fresh virtual environment built from binder/ alone runs notebook 02 in under 2 GB.

What repo2docker does, minus Docker: install binder/requirements.txt, run binder/postBuild from the repo
root, then execute a notebook with binder/start's environment. nbclient and ipykernel stand in for the
Jupyter server Binder's base image brings. The kernel's peak RSS (Binder's limit is 2 GB) is measured by
the executing process as the peak of its children.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048
NOTEBOOK = "notebooks/02_lora.ipynb"  # the course's first training run: its peak is the one that matters

EXECUTE = """
import json, resource, sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
print("PEAK " + json.dumps({"kernel_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


@pytest.mark.slow
def test_fresh_binder_environment_runs_a_notebook_under_2gb(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bindir = venv / "bin"
    env |= {"PATH": f"{bindir}:{env['PATH']}", "VIRTUAL_ENV": str(venv), "PIP_RETRIES": "0", "PIP_TIMEOUT": "5"}

    def run(*cmd, cwd=ROOT):
        return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)

    run(str(bindir / "pip"), "install", "-q", "-r", "binder/requirements.txt")
    run("bash", "binder/postBuild")
    run(str(bindir / "pip"), "install", "-q", "nbclient", "ipykernel")  # Binder's image brings Jupyter itself
    (tmp_path / "execute.py").write_text(EXECUTE)
    out = run("bash", "binder/start", str(bindir / "python"), str(tmp_path / "execute.py"), NOTEBOOK, "notebooks")
    peak = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("PEAK "))[5:])
    print(f"{NOTEBOOK} in a fresh Binder environment: kernel peak RSS {peak['kernel_mb']:.0f} MB")
    assert 200 < peak["kernel_mb"] < BINDER_LIMIT_MB
