"""Rewrite notebooks/executed/: the ten notebooks with their outputs, for readers on GitHub and nbviewer.

The copies come from the CI run itself: tests/test_course_from_wheel.py builds the wheel, installs it in a
fresh venv and executes every notebook there in the small profile, on the CPU; with FTLAB_EXECUTED_DIR set
it keeps each executed notebook. tests/test_notebooks_in_sync.py fails when a copy's code differs from its
notebook, so rerun this after changing a notebook source (and `python notebooks/build.py`).

  python notebooks/refresh_executed.py            # all ten, ~35 min on 2 cores
  python notebooks/refresh_executed.py -k 02_     # some (pytest's -k)
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "notebooks" / "executed"

if __name__ == "__main__":
    EXECUTED.mkdir(exist_ok=True)
    env = {**os.environ, "FTLAB_EXECUTED_DIR": str(EXECUTED), "HF_HUB_OFFLINE": "1"}
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/test_course_from_wheel.py", *sys.argv[1:]], cwd=ROOT, env=env))
