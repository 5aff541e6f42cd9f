"""What machine are we on, which precision and backend suit it, and how to give memory back.

Every hardware-dependent default in ftlab is decided here, once, so a notebook,
the command line and the tests all make the same choice and can print why.
Leaves out: anything that loads a model (see `models.py`).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import os
import resource
import shutil
import sys
from dataclasses import dataclass

import torch


def cpu_bf16_instructions() -> str:
    """The CPU's native bf16 matrix instructions: 'AMX', 'AVX512-BF16' or 'neither' (read from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:  # not Linux: no way to tell cheaply, assume none
        return "neither"
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "neither"


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    return cpu_bf16_instructions() != "neither"


def cuda_bf16_supported() -> bool:
    # Ampere (compute capability 8.0) and newer run bf16 natively; a T4 (7.5) does not.
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0)[0] >= 8


def unsloth_importable() -> bool:
    """Unsloth is installed and not switched off with FTLAB_UNSLOTH=0 (a plain PEFT process on a GPU that has it:
    Unsloth patches transformers, PEFT and TRL for the whole process once imported)."""
    if os.environ.get("FTLAB_UNSLOTH", "1").lower() in ("0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("unsloth") is not None


def import_unsloth_first() -> bool:
    """Import Unsloth now when backend='auto' resolves to it (a CUDA GPU of compute capability 7.0 or newer, Unsloth
    installed), before ftlab loads transformers, PEFT or TRL: Unsloth patches them on import and warns when they came
    first. Elsewhere (a CPU, no Unsloth, FTLAB_UNSLOTH=0) nothing is imported. True when Unsloth is loaded."""
    if "unsloth" in sys.modules:
        return True
    if not unsloth_importable() or choose_backend("auto")[0] != "unsloth":
        return False
    import unsloth  # noqa: F401  (its import is the point: it patches transformers, PEFT and TRL)

    return True


def bitsandbytes_usable() -> tuple[bool, str]:
    """(usable, why): bitsandbytes 4-bit works on CUDA and, from 0.46, on CPU."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed: pip install bitsandbytes"
    try:
        import bitsandbytes
    except Exception as err:  # a broken CUDA setup raises here, not at find_spec
        return False, f"bitsandbytes fails to import: {err}"
    return True, f"bitsandbytes {bitsandbytes.__version__} on {'CUDA' if torch.cuda.is_available() else 'CPU'}"


def notebook_host() -> str:
    """'colab', 'kaggle' or 'local'."""
    if "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    return "local"


@dataclass
class Precision:
    """How training runs on this machine: the TrainingArguments flags plus ftlab's CPU autocast."""

    bf16: bool  # TrainingArguments(bf16=...) on GPU
    fp16: bool  # TrainingArguments(fp16=...) on GPU without bf16 (T4, V100)
    cpu_autocast_bf16: bool  # ftlab wraps the CPU step in torch.autocast('cpu', bfloat16)
    reason: str


# bf16 autocast on a CPU peaks higher than fp32: notebook 02 (small profile) peaked at 2,444 MB in bf16 on an
# AMX Xeon (CI, 2026-12-02) and at 1,500 MB in fp32 on an AVX2 EPYC (the same day). Under this much memory
# (Binder gives 2 GB) a CPU with bf16 trains in fp32 unless the config asks for bf16.
CPU_BF16_MIN_MEMORY = 4 * 2**30


def choose_precision(
    cuda: bool | None = None, cuda_bf16: bool | None = None, cpu_bf16: bool | None = None,
    bf16: bool | None = None, memory: int | None = None,
) -> Precision:
    """Pick the training precision. bf16: the config's setting (None: where the hardware has it and, on a CPU,
    at least CPU_BF16_MIN_MEMORY of memory; False: no bf16 anywhere; True: bf16 or an error).
    cuda, cuda_bf16, cpu_bf16, memory (bytes) exist so tests can fake a machine."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        cuda_bf16 = cuda_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if bf16 and not cuda_bf16:
            raise ValueError("config bf16=True, but this GPU has no native bf16 (e.g. a T4). "
                             "Fix: bf16=null (fp16 mixed precision here) or bf16=false")
        if cuda_bf16 and bf16 is not False:
            return Precision(True, False, False, "GPU supports bf16: training in bf16 mixed precision")
        why = "bf16=false" if cuda_bf16 else "GPU has no bf16 (e.g. T4)"
        return Precision(False, True, False, f"{why}: training in fp16 mixed precision")
    cpu_bf16 = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    if bf16 and not cpu_bf16:
        raise ValueError("config bf16=True, but this CPU has no bf16 instructions (AVX512-BF16 or AMX): "
                         "bf16 would be emulated, slower than fp32. Fix: bf16=null or bf16=false")
    if bf16 is False:
        return Precision(False, False, False, "bf16=false: training in fp32 on CPU (exact, slower)")
    memory = memory_bytes() if memory is None else memory
    if cpu_bf16 and bf16 is None and memory < CPU_BF16_MIN_MEMORY:
        return Precision(False, False, False, f"CPU has bf16 instructions, but this process may use "
                         f"{memory / 2**30:.1f} GB: training in fp32, whose peak memory is lower (bf16 autocast "
                         f"needs {CPU_BF16_MIN_MEMORY / 2**30:.0f} GB; bf16=true forces it)")
    if cpu_bf16:
        return Precision(False, False, True, "CPU has bf16 instructions: bf16 autocast on CPU (fp32 master weights)")
    return Precision(False, False, False, "CPU without bf16 instructions: training in fp32")


TRITON_MIN_CAPABILITY = (7, 0)  # Unsloth's and TRL 1.15's Triton kernels: Volta and newer (not a P100)


def gpu_capability() -> tuple[int, int] | None:
    """The CUDA compute capability of GPU 0, e.g. (7, 5) for a T4; None without CUDA."""
    return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None


def triton_gpu_problem(capability: tuple[int, int] | None = None) -> str | None:
    """Why this GPU cannot run Triton kernels (compute capability below 7.0, e.g. Kaggle's P100), or None."""
    capability = gpu_capability() if capability is None else capability
    if capability is None or tuple(capability) >= TRITON_MIN_CAPABILITY:
        return None
    return (f"this GPU has compute capability {capability[0]}.{capability[1]}; Triton kernels (Unsloth's, TRL "
            "1.15's loss) need 7.0 or newer. Fix: pick a T4 GPU (Kaggle: Accelerator 'GPU T4 x2'; Colab: T4)")


def choose_backend(backend: str = "auto", capability: tuple[int, int] | None = None) -> tuple[str, str]:
    """('unsloth' | 'transformers', why). 'auto' takes Unsloth only on CUDA with Unsloth importable and a GPU
    of compute capability 7.0 or newer. capability: fakes the GPU's (tests)."""
    if backend not in ("auto", "unsloth", "transformers"):
        raise ValueError(f"backend={backend!r}: use 'auto', 'unsloth' or 'transformers'")
    if backend == "transformers":
        return "transformers", "transformers + PEFT (asked for)"
    has_cuda, has_unsloth = torch.cuda.is_available() or capability is not None, unsloth_importable()
    old_gpu = triton_gpu_problem(capability) if has_cuda and has_unsloth else None  # matters for Unsloth only
    if backend == "unsloth":
        if not has_cuda:
            raise RuntimeError("backend='unsloth' needs a CUDA GPU and none was found: use backend='transformers'")
        if not has_unsloth:
            raise RuntimeError("backend='unsloth' but Unsloth is not installed (or FTLAB_UNSLOTH=0 switches it off): "
                               "pip install 'ftlab[unsloth]'")
        if old_gpu:
            raise RuntimeError(f"backend='unsloth': {old_gpu}, or use backend='transformers'")
        return "unsloth", "Unsloth (asked for)"
    if has_cuda and has_unsloth and old_gpu:
        return "transformers", f"not Unsloth: {old_gpu}; using transformers + PEFT on this GPU"
    if has_cuda and has_unsloth:
        return "unsloth", "CUDA GPU and Unsloth found: using Unsloth's FastLanguageModel"
    if has_cuda:
        return "transformers", "Unsloth not installed: using transformers + PEFT on the GPU (pip install 'ftlab[unsloth]')"
    return "transformers", "no CUDA GPU: using transformers + PEFT on CPU (Unsloth needs CUDA)"


def cgroup_memory_limit_files(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> list[str]:
    """The files that hold this process's cgroup memory limit, v2 and v1 (any may be missing)."""
    files = []
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:  # "0::/some/path" (v2) or "7:memory:/some/path" (v1)
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            files.append(f"{root}{path.rstrip('/')}/memory.max")
        elif "memory" in controllers.split(","):
            files.append(f"{root}/memory{path.rstrip('/')}/memory.limit_in_bytes")
    # inside a container its own cgroup is mounted at the root
    return files + [f"{root}/memory.max", f"{root}/memory/memory.limit_in_bytes"]


MEMORY_LIMIT_VAR = "FTLAB_MEMORY_LIMIT_MB"


def memory_bytes(meminfo: str = "/proc/meminfo", limits: list[str] | None = None) -> int:
    """RAM this process may use: the machine's, or less where a container limits it (Binder: 2 GB), or less
    where FTLAB_MEMORY_LIMIT_MB says (the notebook tests act as Binder with it; a learner can cap ftlab's plans).

    /proc/meminfo shows the host's memory inside a container, so the cgroup limits are read too."""
    with open(meminfo) as f:  # first line: "MemTotal:  24684096 kB"
        total = int(f.readline().split()[1]) * 1024
    for path in cgroup_memory_limit_files() if limits is None else limits:
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit():  # "max" (v2) means no limit; v1 says "no limit" with a huge number
            total = min(total, int(value))
    cap = os.environ.get(MEMORY_LIMIT_VAR, "").strip()
    if cap:
        if not cap.isdigit():
            raise ValueError(f"{MEMORY_LIMIT_VAR}={cap!r}: give whole megabytes (e.g. 2048), or unset it")
        total = min(total, int(cap) * 2**20)
    return total


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process already runs on
    except (OSError, TypeError, AttributeError):
        return None


def release_memory() -> list[str]:
    """Hand the memory of objects just dropped (`del model`) back to the system; returns the steps taken.

    gc.collect() frees what reference cycles hold (a model's modules point at each other); on a GPU,
    PyTorch's cached blocks go back to the driver; with glibc, malloc_trim(0) returns the freed heap pages
    glibc would otherwise keep for the next allocation, so a freed model leaves the process's RSS.
    """
    done = ["gc.collect"]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        done.append("torch.cuda.empty_cache")
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # 0: keep no spare heap at the top
        done.append("malloc_trim")
    return done


def free_disk_bytes(path: str = ".") -> int:
    while not os.path.exists(path):
        path = os.path.dirname(os.path.abspath(path))
    return shutil.disk_usage(path).free


def gpu_summary() -> str:
    if not torch.cuda.is_available():
        return "CPU only"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"


def peak_rss() -> int:
    """This process's peak resident memory, in bytes.

    Linux: VmHWM. ru_maxrss also carries the peak of the parent that started the process (kept across
    exec), so in a subprocess of a big notebook or test run it reports the parent's peak instead.
    """
    try:
        with open("/proc/self/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("VmHWM:"))) * 1024  # kB
    except OSError:  # not Linux; macOS reports ru_maxrss in bytes
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_memory_mb() -> float:
    """The one peak-memory figure ftlab reports: the GPU's peak allocation on CUDA, else peak_rss() in MB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss() / 2**20


def reset_peak_memory() -> None:
    """Start peak_memory_mb() afresh: the CUDA allocator's peak, or the kernel's high-water mark (Linux)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    elif os.path.exists("/proc/self/clear_refs"):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM of this process to its current RSS
