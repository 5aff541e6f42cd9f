# Set up this runtime for ftlab. Standard library only: ftlab is not importable yet.
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# What to install: "ftlab" (PyPI), a git URL or a wheel's path. CI points it at the wheel it built.
SOURCE = os.environ.get("FTLAB_INSTALL_SOURCE", "INSTALL_SOURCE")
ONE_GPU = True  # this notebook trains in one process: on two GPUs (Kaggle T4 x2) it uses one
host = ("colab" if "COLAB_RELEASE_TAG" in os.environ else
        "kaggle" if "KAGGLE_KERNEL_RUN_TYPE" in os.environ else "local")

smi = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
out = subprocess.run(smi, capture_output=True, text=True, check=False) if shutil.which("nvidia-smi") else None
gpus = [line.rsplit(", ", 1) for line in out.stdout.splitlines()] if out and out.returncode == 0 else []
# gpus: [["Tesla T4", "7.5"], ...], one per GPU; [] on a CPU
if gpus and float(gpus[0][1]) < 7.0:
    raise RuntimeError(f"{gpus[0][0]} has compute capability {gpus[0][1]}; Unsloth's and TRL's Triton kernels "
                       "need 7.0 or newer. Fix: pick a T4 GPU (Kaggle: Settings > Accelerator > GPU T4 x2)")
if len(gpus) > 1 and ONE_GPU:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")  # must be set before torch is imported
    print(f"{len(gpus)} GPUs: this notebook runs in one process, so it uses one: "
          f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}")
elif len(gpus) > 1:
    print(f"{len(gpus)} GPUs, all visible: this notebook launches one process per GPU")
if gpus:
    print(f"GPU: {gpus[0][0]} (compute capability {gpus[0][1]})")
else:
    if host != "local":  # a hosted CPU: the short runs, unless FTLAB_PROFILE says otherwise
        os.environ.setdefault("FTLAB_PROFILE", "small")
    print(f"No CUDA GPU: training runs on the CPU, slowly. Profile {os.environ.get('FTLAB_PROFILE', 'full')} "
          "(FTLAB_PROFILE=small or full). For the full lessons at speed, pick a T4 GPU runtime.")

try:  # installed already (the README's set-up, or this cell run before): keep it
    print(f"ftlab {importlib.metadata.version('ftlab')} is installed: using it")
except importlib.metadata.PackageNotFoundError:
    if host == "local" and "FTLAB_INSTALL_SOURCE" not in os.environ:
        raise RuntimeError("ftlab is not installed in this Python: run the README's set-up, "
                           "or set FTLAB_INSTALL_SOURCE to install it from here") from None
    extras = "eval,unsloth" if gpus else "eval"  # eval: lm-eval, for notebook 05; Unsloth needs CUDA
    url = pathlib.Path(SOURCE).resolve().as_uri() if os.path.exists(SOURCE) else SOURCE
    spec = f"ftlab[{extras}]" if SOURCE == "ftlab" else f"ftlab[{extras}] @ {url}"
    if host == "kaggle":
        print("Kaggle: this install needs Internet switched on (Settings > Internet)")
    # Keep the runtime's own torch: Unsloth needs xformers, whose newest wheel pins another torch, and pip
    # would replace Colab's CUDA build under this kernel. A constraints file makes pip pick what fits it.
    keep = {}
    for name in ("torch", "torchvision", "torchaudio"):
        try:
            keep[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    constraints = pathlib.Path(tempfile.mkdtemp()) / "keep-runtime-torch.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in keep.items()))
    print(f"installing {spec} (a few minutes)"
          + (f", keeping this runtime's {', '.join(f'{n} {v}' for n, v in keep.items())}" if keep else ""))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", str(constraints), spec],
                         capture_output=True, text=True, check=False)
    print(pip.stdout + pip.stderr, end="")  # with -q: warnings and errors only
    if pip.returncode != 0:
        raise RuntimeError(f"pip could not install {spec}" + (f" without replacing this runtime's torch "
                           f"({constraints.read_text().strip()})" if keep else "") + ": its output is above")
    importlib.invalidate_caches()  # so the next cell imports what pip just installed
    names = ["ftlab", "torch", "transformers", "peft", "trl", "lm_eval"] + (["unsloth"] if gpus else [])
    print("installed:", ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names))
    if gpus:
        print("If pip's output above asks you to restart the runtime, do so and run this notebook again.")

NOTEBOOK = "NOTEBOOK"  # build.py writes this notebook's name here
try:  # what this notebook will run with, and how long it took where it was measured
    from ftlab.course import announce

    print(announce(NOTEBOOK))
except Exception as err:  # noqa: BLE001 - e.g. a torch that pip upgraded under this kernel
    print(f"ftlab does not import yet ({type(err).__name__}: {err}): restart the runtime and run this cell again")
