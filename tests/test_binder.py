"""Binder: a fresh virtual environment built from binder/ alone runs notebook 02 in under 2 GB.

What repo2docker does, minus Docker: install binder/requirements.txt, run binder/postBuild from the repo
root, then execute a notebook with binder/start's environment. nbclient and ipykernel stand in for the
Jupyter server Binder's base image brings. The kernel's peak RSS (Binder's limit is 2 GB) is measured by
the executing process as the peak of its children.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048
NOTEBOOK = "notebooks/02_lora.ipynb"  # the course's first training run: its peak is the one that matters


def notebook_memory():
    """benchmarks/notebook_memory.py, which runs a notebook under binder/start and reports the kernel's peak."""
    spec = importlib.util.spec_from_file_location("notebook_memory", ROOT / "benchmarks" / "notebook_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    work = tmp_path / "work"  # the run folders the notebook writes land here
    work.mkdir()
    peak, _ = notebook_memory().notebook_peak_mb(ROOT / NOTEBOOK, work, python=str(bindir / "python"), env=env)
    print(f"{NOTEBOOK} in a fresh Binder environment: kernel peak RSS {peak:.0f} MB")
    assert 200 < peak < BINDER_LIMIT_MB
