"""Binder: a fresh virtual environment built from binder/ alone runs a course notebook in under 2 GB.

What repo2docker does, minus Docker: install binder/requirements.txt, run binder/postBuild from the repo
root, then execute a notebook with binder/start's environment. nbclient and ipykernel stand in for the
Jupyter server Binder's base image brings. The kernel's peak RSS (Binder's limit is 2 GB) is measured by
the executing process as the peak of its children.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048
NOTEBOOK = "notebooks/01_formatting_data.ipynb"  # ftlab imported from Binder's install, in seconds.
# What this test adds is Binder's install path (requirements.txt, postBuild, start). Every notebook's run and
# peak against the 2 GB is checked by tests/test_course_from_wheel.py (same kernel set-up, binder/start's
# small profile), so this test need not load or train the model a second time (with notebook 00 it took
# 179 s of CI's time on an AMX Xeon).


@pytest.mark.slow
def test_fresh_binder_environment_runs_a_notebook_under_2gb(new_venv, notebook_peak_mb, tmp_path):
    venv = new_venv("binder")
    venv.env |= {"PIP_RETRIES": "0", "PIP_TIMEOUT": "5"}
    venv.pip_install("-r", "binder/requirements.txt")
    venv.run("bash", "binder/postBuild")
    venv.pip_install("nbclient", "ipykernel")  # Binder's image brings Jupyter itself
    work = tmp_path / "work"  # the run folders the notebook writes land here
    work.mkdir()
    peak, _ = notebook_peak_mb(ROOT / NOTEBOOK, work, python=venv.python, env=venv.env)
    print(f"{NOTEBOOK} in a fresh Binder environment: kernel peak RSS {peak:.0f} MB")
    assert 100 < peak < BINDER_LIMIT_MB
