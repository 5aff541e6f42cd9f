"""The course as a learner gets it: ftlab's wheel, a fresh environment, the .ipynb files and nothing else.

Set up once per session (tests/course_run.py): build the wheel from a clean copy of the source, make a fresh
venv with the CPU torch and a kernel (ipykernel, nbclient) but no ftlab, and copy only the notebooks into an
empty folder. Each notebook then runs there in the small profile with its install cell live:
FTLAB_INSTALL_SOURCE points the cell at the wheel and COLAB_RELEASE_TAG makes it act as on a Colab CPU
runtime, so the first notebook's kernel pip-installs ftlab from the wheel (not editable) and the ones after
it find it installed. The notebooks start with the session and run beside the other tests, one at a time on
one torch thread; these tests run last, and from then on two notebooks run at a time (FTLAB_COURSE_JOBS).

  python -m pytest -q tests/test_course_from_wheel.py             # all ten and solutions.ipynb; the first also
                                                                  # pip-installs ftlab
  python -m pytest -q tests/test_course_from_wheel.py -k "00 or 02" -s   # some, with times and peaks
"""

import json

import pytest
from course_run import BINDER_LIMIT_MB, NOTEBOOKS, for_binder, jobs


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("name", [nb.name for nb in NOTEBOOKS], ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_as_a_learner_gets_it(course_run, name):
    peak, seconds = course_run.results[name].result()
    venv, folder, wheel = course_run.course.result()
    print(f"{name} from the wheel: {seconds:.0f} s, kernel peak RSS {peak:.0f} MB ({jobs()} at a time)")
    # the install cell put ftlab into this venv from the wheel, not from the checkout
    installed = venv.run(venv.python, "-c", "import importlib.metadata as m; "
                         "print(m.distribution('ftlab').read_text('direct_url.json'))", cwd=folder)
    direct_url = json.loads(installed.stdout)
    assert direct_url["url"].endswith(wheel.name) and not direct_url.get("dir_info", {}).get("editable"), direct_url
    if for_binder(folder / name):
        assert peak < BINDER_LIMIT_MB, f"{name} peaked at {peak:.0f} MB: over Binder's 2 GB, and its first cell does not say so"
