"""The course as a learner gets it: ftlab's wheel, a fresh environment, the .ipynb files and nothing else.

Set up once per module: build the wheel from a clean copy of the source, make a fresh venv with the CPU
torch and a kernel (ipykernel, nbclient) but no ftlab, and copy only the notebooks into an empty folder.
Each notebook then runs there in the small profile with its install cell live: FTLAB_INSTALL_SOURCE points
the cell at the wheel and COLAB_RELEASE_TAG makes it act as on a Colab CPU runtime, so the first notebook's
kernel pip-installs ftlab from the wheel (not editable) and the ones after it find it installed.

  python -m pytest -q tests/test_course_from_wheel.py             # all ten and solutions.ipynb; the first also
                                                                  # pip-installs ftlab
  python -m pytest -q tests/test_course_from_wheel.py -k "00 or 02" -s   # some, with times and peaks
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048
NOT_FOR_BINDER = re.compile(r"Binder \(2 GB\) (cannot|may not) run this notebook")  # what a first cell says
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "notebooks" / "solutions.ipynb"]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__",
                                    ".*_cache", ".ipynb_checkpoints")


@pytest.fixture(scope="module")
def course(new_venv, tmp_path_factory):
    """(venv without ftlab, folder holding only the notebooks, the wheel)."""
    from ftlab import embedded

    if not embedded.is_ready():
        pytest.skip("the embedded model is not in the HF cache: run `ftlab doctor --prepare` (README set-up)")
    source = tmp_path_factory.mktemp("source") / "ftlab"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)  # what a clone holds: no stale build/ in the wheel
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("ftlab-*.whl")
    venv = new_venv("learner")
    venv.pip_install("torch==2.13.0", "ipykernel", "nbclient")  # the CPU wheel first; the cell adds ftlab
    folder = tmp_path_factory.mktemp("course")
    for nb in NOTEBOOKS:
        shutil.copy(nb, folder)
    venv.env |= {"FTLAB_INSTALL_SOURCE": str(wheel), "COLAB_RELEASE_TAG": "simulated-by-ftlab-tests",
                 "MPLBACKEND": "Agg"}
    return venv, folder, wheel


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("name", [nb.name for nb in NOTEBOOKS], ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_as_a_learner_gets_it(course, notebook_peak_mb, name):
    venv, folder, wheel = course
    executed = os.environ.get("FTLAB_EXECUTED_DIR")  # notebooks/refresh_executed.py: keep the outputs
    # Binder's 2 GB: every notebook whose first cell does not say it is too big for Binder must fit, and runs as
    # there: under binder/start (small profile), ftlab seeing a 2 GB limit (Binder's cgroup; the variable here).
    # The others run as on a bigger CPU machine. tests/test_binder.py checks Binder's install.
    first_cell = json.loads((folder / name).read_text())["cells"][0]["source"]
    for_binder = not NOT_FOR_BINDER.search("".join(first_cell))
    peak, seconds = notebook_peak_mb(folder / name, folder, python=venv.python, env=venv.env,
                                     save_to=Path(executed) / name if executed else None, as_binder=for_binder)
    print(f"{name} from the wheel: {seconds:.0f} s, kernel peak RSS {peak:.0f} MB")
    # the install cell put ftlab into this venv from the wheel, not from the checkout
    installed = venv.run(venv.python, "-c", "import importlib.metadata as m; "
                         "print(m.distribution('ftlab').read_text('direct_url.json'))", cwd=folder)
    direct_url = json.loads(installed.stdout)
    assert direct_url["url"].endswith(wheel.name) and not direct_url.get("dir_info", {}).get("editable"), direct_url
    if for_binder:
        assert peak < BINDER_LIMIT_MB, f"{name} peaked at {peak:.0f} MB: over Binder's 2 GB, and its first cell does not say so"
