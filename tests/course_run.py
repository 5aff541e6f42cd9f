"""The course run behind tests/test_course_from_wheel.py: the learner's set-up, and the notebooks executed
beside the rest of the test session.

Set-up (build_course): the wheel from a clean copy of the source, a fresh venv with the CPU torch and a
kernel (ipykernel, nbclient) but no ftlab, and only the notebooks in an empty folder.

CourseRun starts when the session starts (tests/conftest.py) and runs in a background thread: the set-up,
then the first notebook alone (its install cell pip-installs ftlab from the wheel; the others find it
installed), then the rest longest first (ftlab.course.SMALL_CPU_SECONDS). While other tests still run, one
notebook at a time, its kernel on one torch thread, and the test process on one thread too (conftest): the
two share the machine's two cores, and the notebooks' steady compute fills the time the other tests spend
in pip, process start-up and single-threaded Python. Once the other tests are done (the notebook tests run
last), jobs() notebooks at a time. Each notebook's test waits for its own result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER_LIMIT_MB = 2048
NOT_FOR_BINDER = re.compile(r"Binder \(2 GB\) (cannot|may not) run this notebook")  # what a first cell says
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "notebooks" / "solutions.ipynb"]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__",
                                    ".*_cache", ".ipynb_checkpoints")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def jobs() -> int:
    """Notebooks executed at a time once nothing else runs: FTLAB_COURSE_JOBS, else 2 (CI), else 1 when the
    executed copies are kept.

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


def build_course(new_venv, tmp_path_factory):
    """(venv without ftlab, folder holding only the notebooks, the wheel)."""
    source = tmp_path_factory.mktemp("source") / "ftlab"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)  # what a clone holds: no stale build/ in the wheel
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError("pip wheel failed:\n" + built.stdout[-3000:] + built.stderr[-3000:])
    (wheel,) = dist.glob("ftlab-*.whl")
    venv = new_venv("learner")
    venv.pip_install("torch==2.13.0", "ipykernel", "nbclient")  # the CPU wheel first; the cell adds ftlab
    folder = tmp_path_factory.mktemp("course")
    for nb in NOTEBOOKS:
        shutil.copy(nb, folder)
    venv.env |= {"FTLAB_INSTALL_SOURCE": str(wheel), "COLAB_RELEASE_TAG": "simulated-by-ftlab-tests",
                 "MPLBACKEND": "Agg"}
    return venv, folder, wheel


class CourseRun:
    """The set-up and the notebooks `names`, in a background thread: `.course` (a Future of build_course's
    tuple) and `.results` ({notebook: Future of (kernel peak RSS MB, seconds)}).

    setup() -> (venv, folder, wheel); execute(name, course, threads) -> (peak MB, seconds).
    beside_other_tests: one notebook at a time, one torch thread, until `widen()`; then (or from the start
    without other tests) jobs() at a time with cores // jobs() threads each."""

    def __init__(self, names: list[str], setup, execute, beside_other_tests: bool):
        from ftlab.course import SMALL_CPU_SECONDS

        self.names = names[:1] + sorted(names[1:], key=lambda n: -SMALL_CPU_SECONDS.get(Path(n).stem, 0))
        self.course, self.results = Future(), {name: Future() for name in names}
        self._setup, self._execute = setup, execute
        self._width = jobs()
        self._slots = threading.Semaphore(1 if beside_other_tests else self._width)
        self._widened = not beside_other_tests
        self._lock, self._cancelled = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._main, name="course", daemon=True)
        self._thread.start()

    def threads(self, alone: bool = False) -> int:
        """torch threads for a kernel: all cores when it has the machine to itself (the first notebook, or one
        at a time), else one share (beside the other tests, or beside another kernel)."""
        return cores() if self._widened and (alone or self._width == 1) else max(1, cores() // max(self._width, 2))

    def widen(self) -> None:
        """The other tests are done: from now on jobs() notebooks at a time."""
        with self._lock:
            if not self._widened:
                self._widened = True
                for _ in range(self._width - 1):
                    self._slots.release()

    @property
    def beside_other_tests(self) -> bool:
        """True until widen(): the notebooks share the machine with the other tests."""
        return not self._widened

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Start no more notebooks (a session that ends early, -x or Ctrl-C), wait for the running ones."""
        self._cancelled.set()
        self.widen()  # frees a waiting slot, so the scheduler sees the stop
        self._thread.join()

    def _run(self, name: str, course, alone: bool = False) -> None:
        try:
            self.results[name].set_result(self._execute(name, course, self.threads(alone)))
        except Exception as err:  # noqa: BLE001 - that notebook's test reports it; the others still run
            self.results[name].set_exception(err)
        finally:
            self._slots.release()

    def _main(self) -> None:
        try:
            course = self._setup()
        except Exception as err:  # noqa: BLE001 - every notebook's test reports the failed set-up
            self.course.set_exception(err)
            for future in self.results.values():
                future.set_exception(err)
            return
        self.course.set_result(course)
        if not self.names:
            return
        self._slots.acquire()
        self._run(self.names[0], course, alone=True)  # alone: its install cell installs ftlab for the others
        with ThreadPoolExecutor(max_workers=self._width) as pool:
            for name in self.names[1:]:
                self._slots.acquire()
                if self._cancelled.is_set():
                    self._slots.release()
                    self.results[name].set_exception(RuntimeError(f"{name} not run: the session ended first"))
                    continue
                pool.submit(self._run, name, course)
