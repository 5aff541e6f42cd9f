import json
import os
import platform

import pytest

from ftlab.hardware import choose_backend, choose_precision


def test_t4_gets_fp16():
    p = choose_precision(cuda=True, cuda_bf16=False)
    assert (p.bf16, p.fp16, p.cpu_autocast_bf16) == (False, True, False)
    assert "fp16" in p.reason


def test_ampere_gets_bf16():
    p = choose_precision(cuda=True, cuda_bf16=True)
    assert (p.bf16, p.fp16, p.cpu_autocast_bf16) == (True, False, False)


@pytest.mark.parametrize("capability, bf16", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_native_bf16_is_read_from_the_compute_capability(monkeypatch, capability, bf16):
    """A T4 (7.5) trains in fp16 although torch.cuda.is_bf16_supported() says True there (emulation);
    an A100 (8.0) or H100 (9.0) in bf16. The GPU is faked, so this runs on any machine."""
    import torch

    from ftlab import hardware
    from ftlab.models import default_compute_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 answers by default
    assert hardware.cuda_bf16_supported() is bf16
    p = choose_precision(memory=16 * 2**30)
    assert (p.bf16, p.fp16, p.cpu_autocast_bf16) == (bf16, not bf16, False), p.reason
    assert default_compute_dtype() == (torch.bfloat16 if bf16 else torch.float16)


def test_cpu_with_and_without_bf16():
    assert choose_precision(cuda=False, cpu_bf16=True, memory=24 * 2**30).cpu_autocast_bf16
    plain = choose_precision(cuda=False, cpu_bf16=False, memory=24 * 2**30)
    assert (plain.bf16, plain.fp16, plain.cpu_autocast_bf16) == (False, False, False)


def test_cpu_bf16_under_little_memory_trains_in_fp32_unless_asked():
    binder = 2 * 2**30
    p = choose_precision(cuda=False, cpu_bf16=True, memory=binder)
    assert not p.cpu_autocast_bf16 and "2.0 GB" in p.reason and "bf16=true" in p.reason, p.reason
    assert choose_precision(cuda=False, cpu_bf16=True, memory=binder, bf16=True).cpu_autocast_bf16  # asked for
    assert choose_precision(cuda=False, cpu_bf16=True, memory=4 * 2**30).cpu_autocast_bf16  # the threshold
    assert choose_precision(cuda=True, cuda_bf16=True, memory=binder).bf16  # a GPU's memory is its own


def test_memory_limit_variable_caps_the_machine(tmp_path, monkeypatch):
    from ftlab.hardware import memory_bytes

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684096 kB\n")
    monkeypatch.setenv("FTLAB_MEMORY_LIMIT_MB", "2048")
    assert memory_bytes(str(meminfo), limits=()) == 2 * 2**30
    monkeypatch.setenv("FTLAB_MEMORY_LIMIT_MB", "999999")  # above the machine's: the machine's
    assert memory_bytes(str(meminfo), limits=()) == 24684096 * 1024
    monkeypatch.setenv("FTLAB_MEMORY_LIMIT_MB", "2 GB")
    with pytest.raises(ValueError, match="FTLAB_MEMORY_LIMIT_MB='2 GB': give whole megabytes"):
        memory_bytes(str(meminfo), limits=())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU machine's choice")
def test_backend_choice_on_cpu():
    assert choose_backend("auto")[0] == "transformers"  # CI has no CUDA
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        choose_backend("unsloth")
    with pytest.raises(ValueError, match="backend="):
        choose_backend("vllm")


def test_memory_is_the_container_limit_when_there_is_one(tmp_path):
    from ftlab.hardware import memory_bytes

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684096 kB\nMemFree:  1 kB\n")
    host = 24684096 * 1024
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory_bytes(str(meminfo), limits=(str(v2), str(v1))) == host  # no cgroup files: the machine's
    v2.write_text("max\n")  # cgroup v2 without a limit
    v1.write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    assert memory_bytes(str(meminfo), limits=(str(v2), str(v1))) == host
    v2.write_text(f"{2 * 2**30}\n")  # Binder: 2 GB
    assert memory_bytes(str(meminfo), limits=(str(v2), str(v1))) == 2 * 2**30


def test_cgroup_limit_files_follow_this_process_cgroup(tmp_path):
    from ftlab.hardware import cgroup_memory_limit_files

    proc = tmp_path / "cgroup"
    proc.write_text("12:memory:/binder\n3:cpu,cpuacct:/x\n0::/user.slice/pod\n")
    files = cgroup_memory_limit_files(str(proc), root="/cg")
    assert files[:2] == ["/cg/memory/binder/memory.limit_in_bytes", "/cg/user.slice/pod/memory.max"], files
    assert files[2:] == ["/cg/memory.max", "/cg/memory/memory.limit_in_bytes"]  # a container's own, at the root


def rss_mb() -> float:
    with open("/proc/self/statm") as f:  # "size resident shared ...", in pages
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_memory_returns_freed_heap_to_the_system():
    from ftlab.hardware import release_memory

    chunks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MB in 64 KB blocks: glibc's heap, not mmap
    keep = bytearray(64 * 1024)  # above them on the heap: glibc cannot shrink the heap past it by itself
    del chunks
    before = rss_mb()
    assert release_memory()[-1] == "malloc_trim"
    assert before - rss_mb() > 150, (before, rss_mb())  # most of the 250 MB left the process
    del keep


def test_release_memory_without_glibc_or_gpu_only_collects(monkeypatch):
    from ftlab import hardware

    monkeypatch.setattr(hardware, "_malloc_trim", lambda: None)
    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: False)
    assert hardware.release_memory() == ["gc.collect"]


def test_a_gpu_below_compute_capability_7_is_not_given_unsloth(monkeypatch):
    """Kaggle's P100 (6.0): Triton kernels (Unsloth's, TRL 1.15's loss) need 7.0, so auto picks PEFT and says why."""
    from ftlab.hardware import triton_gpu_problem

    monkeypatch.setattr("ftlab.hardware.unsloth_importable", lambda: True)
    assert choose_backend("auto", capability=(7, 5))[0] == "unsloth"  # a T4
    backend, why = choose_backend("auto", capability=(6, 0))
    assert backend == "transformers" and "6.0" in why and "T4" in why
    with pytest.raises(RuntimeError, match="6.0.*T4"):
        choose_backend("unsloth", capability=(6, 0))
    assert triton_gpu_problem((6, 0)) and triton_gpu_problem((7, 0)) is None


def test_models_go_to_this_process_gpu(monkeypatch):
    """Under torchrun every rank loads onto its own GPU (LOCAL_RANK), not all onto GPU 0; on a CPU: no map."""
    import torch

    from ftlab.models import default_device_map

    assert default_device_map() is None or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert default_device_map() == {"": 0}
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device_map() == {"": 1}


UNSLOTH_STAND_IN = """import json, os, sys
with open(os.environ["PROBE"], "w") as f:  # what was loaded before Unsloth: it patches these on import
    json.dump({name: name in sys.modules for name in ("transformers", "peft", "trl")}, f)
"""


@pytest.mark.parametrize("capability, switch, imported_first", [
    ((8, 0), None, True),    # an A100-class GPU with Unsloth: auto picks it, so it comes first
    ((8, 0), "0", False),    # FTLAB_UNSLOTH=0: a plain PEFT process on the same machine
    ((6, 0), None, False),   # a P100: auto takes transformers + PEFT, Unsloth stays out of the process
])
def test_unsloth_is_imported_before_transformers_where_auto_picks_it(tmp_path, capability, switch, imported_first):
    import subprocess
    import sys

    (tmp_path / "unsloth").mkdir()
    (tmp_path / "unsloth" / "__init__.py").write_text(UNSLOTH_STAND_IN)
    probe = tmp_path / "probe.json"
    env = {k: v for k, v in os.environ.items() if k != "FTLAB_UNSLOTH"}
    env |= {"PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}", "PROBE": str(probe)}
    if switch is not None:
        env["FTLAB_UNSLOTH"] = switch
    fake_gpu = ("import torch; torch.cuda.is_available = lambda: True; "
                f"torch.cuda.get_device_capability = lambda device=None: {capability}; "
                "import ftlab.models")  # a notebook's first ftlab import, which loads transformers
    done = subprocess.run([sys.executable, "-c", fake_gpu], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    if imported_first:
        assert json.loads(probe.read_text()) == {"transformers": False, "peft": False, "trl": False}
    else:
        assert not probe.exists(), probe.read_text()
