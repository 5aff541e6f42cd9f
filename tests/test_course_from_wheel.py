"""The course as a learner gets it: ftlab's wheel, a fresh environment, the .ipynb files and nothing else.

Set up once per module: build the wheel from a clean copy of the source, make a fresh venv with the CPU
torch and a kernel (ipykernel, nbclient) but no ftlab, and copy only the notebooks into an empty folder.
Each notebook then runs there in the small profile with its install cell live: FTLAB_INSTALL_SOURCE points
the cell at the wheel and COLAB_RELEASE_TAG makes it act as on a Colab CPU runtime, so the first notebook's
kernel pip-installs ftlab from the wheel (not editable) and the ones after it find it installed. After the
first, two notebooks run at a time, one torch thread each (FTLAB_COURSE_JOBS; see jobs()).

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
from concurrent.futures import Future, ThreadPoolExecutor
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


def jobs() -> int:
    """Notebooks executed at a time: FTLAB_COURSE_JOBS, else 2 (CI), else 1 when the executed copies are kept.

    Two kernels with one thread each finish two notebooks in ~70% of the time that one kernel with two threads
    takes for one after the other (two 4-step LoRA runs of dates_smoke: 69 s against 98 s, AVX2 EPYC, 2 cores,
    2026-12-07): generation, tokenizing and Python overhead leave the second core idle much of the time. The
    kept copies (notebooks/refresh_executed.py) run one at a time, so the times they print are a learner's."""
    default = "1" if os.environ.get("FTLAB_EXECUTED_DIR") else "2"
    return max(1, int(os.environ.get("FTLAB_COURSE_JOBS", default)))


def for_binder(path: Path) -> bool:
    """Binder's 2 GB: every notebook whose first cell does not say it is too big for Binder must fit, and runs as
    there: under binder/start (small profile), ftlab seeing a 2 GB limit (Binder's cgroup; the variable here).
    The others run as on a bigger CPU machine. tests/test_binder.py checks Binder's install."""
    return not NOT_FOR_BINDER.search("".join(json.loads(path.read_text())["cells"][0]["source"]))


@pytest.fixture(scope="module")
def executions(course, notebook_peak_mb, request):
    """{notebook: Future of (kernel peak RSS MB, seconds)} for the notebooks this session selected.

    The first runs alone (its install cell pip-installs ftlab from the wheel; the others find it installed),
    then the rest jobs() at a time, longest first (ftlab.course.SMALL_CPU_SECONDS), each kernel with its share
    of the cores as torch threads."""
    from ftlab.course import SMALL_CPU_SECONDS

    venv, folder, _ = course
    executed = os.environ.get("FTLAB_EXECUTED_DIR")  # notebooks/refresh_executed.py: keep the outputs
    names = [item.callspec.params["name"] for item in request.session.items
             if item.path == Path(__file__) and item.originalname == "test_notebook_runs_as_a_learner_gets_it"]
    n_jobs = jobs()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = {"OMP_NUM_THREADS": str(max(1, cores // n_jobs))} if n_jobs > 1 else {}

    def run(name: str, env: dict):
        return notebook_peak_mb(folder / name, folder, python=venv.python, env=env,
                                save_to=Path(executed) / name if executed else None, as_binder=for_binder(folder / name))

    pool = ThreadPoolExecutor(max_workers=n_jobs)
    futures = {}
    if names:
        first = Future()
        try:
            first.set_result(run(names[0], venv.env))
        except Exception as err:  # noqa: BLE001 - its test reports it; the others still run
            first.set_exception(err)
        futures[names[0]] = first
    for name in sorted(names[1:], key=lambda n: -SMALL_CPU_SECONDS.get(Path(n).stem, 0)):
        futures[name] = pool.submit(run, name, venv.env | threads)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("name", [nb.name for nb in NOTEBOOKS], ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_as_a_learner_gets_it(course, executions, name):
    venv, folder, wheel = course
    peak, seconds = executions[name].result()
    print(f"{name} from the wheel: {seconds:.0f} s, kernel peak RSS {peak:.0f} MB ({jobs()} at a time)")
    # the install cell put ftlab into this venv from the wheel, not from the checkout
    installed = venv.run(venv.python, "-c", "import importlib.metadata as m; "
                         "print(m.distribution('ftlab').read_text('direct_url.json'))", cwd=folder)
    direct_url = json.loads(installed.stdout)
    assert direct_url["url"].endswith(wheel.name) and not direct_url.get("dir_info", {}).get("editable"), direct_url
    if for_binder(folder / name):
        assert peak < BINDER_LIMIT_MB, f"{name} peaked at {peak:.0f} MB: over Binder's 2 GB, and its first cell does not say so"
