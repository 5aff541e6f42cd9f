"""Shared fixtures: the real embedded model, loaded once per test session, offline; LoRA adapters on it;
fresh virtual environments."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_and_tokenizer():
    from ftlab import load_model

    return load_model(verbose=False)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from ftlab import DEFAULT_MODEL, embedded

    embedded.build()  # no-op once the embedded model is in the HF cache
    return AutoTokenizer.from_pretrained(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """configs/dates_smoke.yaml trained ONCE per session into a tmp dir: an ftlab.training.TrainResult.

    Shared by every test that needs a finished run (its folder is `.run_dir`); a few LoRA steps, ~1 min.
    """
    from ftlab.config import load_config
    from ftlab.preflight import trl_problem
    from ftlab.training import train

    if trl_problem():  # TRL 1.15 on a CPU (DEVELOPERS.md, lower ends): tests/test_training.py checks the error
        pytest.skip(trl_problem())
    data = ROOT / "data" / "dates"
    cfg = load_config(ROOT / "configs" / "dates_smoke.yaml", [
        f"output_dir={tmp_path_factory.mktemp('dates_smoke')}", f"train_file={data / 'train.jsonl'}",
        f"eval_file={data / 'validation.jsonl'}", f"test_file={data / 'test.jsonl'}"])
    return train(cfg)


def _make_adapter(path=None, *, target_modules, r=8, lora_alpha=None, random_init=True, seed=0,
                  load_in_4bit=False, names=("default",), batches=None, lr=2e-3):
    """A LoRA adapter on a fresh copy of the embedded model: saved to `path` (returned), or (peft_model, tokenizer).

    random_init: A and B random (init_lora_weights=False), so the adapter changes the outputs untrained;
    False: PEFT's default (B = 0, a no-op until trained). lora_alpha: default r (scale 1).
    names: one adapter per name, each with the same config, the first one active.
    batches: fn(tokenizer) -> iterable of model-input dicts with labels; one AdamW step (lr) on each.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from ftlab import load_model

    torch.manual_seed(seed)  # before loading: the LoRA weights are drawn right after, from this seed
    model, tok = load_model(load_in_4bit=load_in_4bit, verbose=False)

    def config():
        return LoraConfig(r=r, lora_alpha=lora_alpha or r, target_modules=target_modules,
                          init_lora_weights=not random_init, lora_dropout=0.0)

    peft_model = get_peft_model(model, config(), adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config())
    if batches is not None:
        opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
        peft_model.train()
        for batch in batches(tok):
            peft_model(**{k: v.to(peft_model.device) for k, v in batch.items()}).loss.backward()
            opt.step()
            opt.zero_grad()
    if path is None:
        return peft_model, tok
    peft_model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def make_adapter():
    """The factory `_make_adapter`: every test that needs a LoRA adapter builds it the same way.

    Session-scoped (it holds no state), so module-scoped fixtures can build adapters with it too.
    """
    return _make_adapter


class Venv:
    """A fresh virtual environment, and the environment variables that act as if it were activated.

    The variables are the test process's minus its own venv and PYTHONPATH, offline, without pip's version
    check; `run` runs a command with them (from the repository root unless told).

    Every pip in the venv (pip_install's, and a notebook's install cell) skips compiling what it installs to
    .pyc (PIP_COMPILE=0), and Python writes the .pyc of what a process imports (PYTHONDONTWRITEBYTECODE is
    dropped): only the imported modules get compiled, once. On the AVX2 EPYC (2026-12-07) `pip install
    torch==2.13.0` took 14 s instead of 45, and ftlab's dependencies 55 s instead of 104; a first import of
    torch, transformers, TRL, PEFT and datasets then takes 35 s instead of 13, the next one 12."""

    def __init__(self, path: Path):
        self.path = path
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        self.bin = path / "bin"
        self.python = str(self.bin / "python")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"))}
        self.env = env | {"PATH": f"{self.bin}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(path),
                          "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                          "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_COMPILE": "0"}

    def run(self, *cmd, cwd=ROOT, check=True):
        return subprocess.run(cmd, cwd=cwd, env=self.env, check=check, capture_output=True, text=True)

    def pip_install(self, *args):
        """`python -m pip install -q ARGS` in this venv; a failure shows pip's own output."""
        out = self.run(self.python, "-m", "pip", "install", "-q", *args, check=False)
        assert out.returncode == 0, f"pip install {' '.join(args)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        return out


@pytest.fixture(scope="session")
def new_venv(tmp_path_factory):
    """new_venv(name) -> Venv: a fresh virtual environment in its own temporary folder (any test scope)."""
    return lambda name="venv": Venv(tmp_path_factory.mktemp(name) / "venv")


@pytest.fixture(scope="session")
def notebook_peak_mb():
    """benchmarks/notebook_memory.notebook_peak_mb: runs one notebook with nbclient in a given python (under
    binder/start, small profile) and returns (kernel peak RSS in MB, seconds)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebook_memory", ROOT / "benchmarks" / "notebook_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.notebook_peak_mb


# --- the course notebooks, beside the other tests (tests/course_run.py) ------------------------------------

_COURSE = pytest.StashKey()  # config.stash: {"run": CourseRun, "threads": (torch threads, OMP_NUM_THREADS)}


def _is_notebook_test(item) -> bool:
    return item.get_closest_marker("notebook") is not None


def pytest_collection_modifyitems(config, items):
    """The notebook tests last (each waits for its notebook, which runs in the background from the start)."""
    items.sort(key=_is_notebook_test)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def course_run(request, new_venv, tmp_path_factory, notebook_peak_mb):
    """The CourseRun of this session's notebook tests (started by _course_beside_the_rest)."""
    from course_run import CourseRun, build_course, for_binder

    from ftlab import embedded

    if not embedded.is_ready():
        pytest.skip("the embedded model is not in the HF cache: run `ftlab doctor --prepare` (README set-up)")
    executed = os.environ.get("FTLAB_EXECUTED_DIR")  # notebooks/refresh_executed.py: keep the outputs

    def execute(name, course, threads):
        venv, folder, _ = course
        return notebook_peak_mb(folder / name, folder, python=venv.python,
                                env=venv.env | {"OMP_NUM_THREADS": str(threads)},
                                save_to=Path(executed) / name if executed else None,
                                as_binder=for_binder(folder / name))

    items = request.session.items
    names = [item.callspec.params["name"] for item in items if _is_notebook_test(item)]
    return CourseRun(names, lambda: build_course(new_venv, tmp_path_factory), execute,
                     beside_other_tests=not all(_is_notebook_test(item) for item in items))


@pytest.fixture(scope="session", autouse=True)
def _course_beside_the_rest(request):
    """With notebook tests selected, the course starts with the session; while other tests run beside it, this
    process (and what it starts) computes on one thread, so the two share the cores without oversubscribing."""
    if not any(_is_notebook_test(item) for item in request.session.items):
        yield
        return
    try:
        run = request.getfixturevalue("course_run")
    except pytest.skip.Exception:  # the notebook tests skip with the reason; the others run as usual
        yield
        return
    import torch

    if run.beside_other_tests:
        request.config.stash[_COURSE] = {"run": run, "threads": (torch.get_num_threads(),
                                                                 os.environ.get("OMP_NUM_THREADS"))}
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
    yield
    _restore_threads(request.config)
    run.stop()  # after a full session every notebook has run; after -x or Ctrl-C, only the running one finishes


def _restore_threads(config) -> None:
    state = config.stash.get(_COURSE, None)
    if state is None or state.get("restored"):
        return
    import torch

    threads, omp = state["threads"]
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp
    state["restored"] = True


def pytest_runtest_setup(item):
    """The first notebook test means the others are done: the course widens to jobs() notebooks at a time. A
    course that finished first gives this process its threads back."""
    state = item.config.stash.get(_COURSE, None)
    if state is None:
        return
    if _is_notebook_test(item) or state["run"].done():
        _restore_threads(item.config)
    if _is_notebook_test(item):
        state["run"].widen()
