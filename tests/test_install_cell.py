"""The notebooks' install cell (notebooks/install_cell.py, placed by notebooks/build.py) on each host.

The host is simulated: Colab and Kaggle by the variables they set, the GPU by a fake `nvidia-smi` that
prints what the real one prints for `--query-gpu=name,compute_cap`. ftlab is installed in this Python, so
the cell never reaches pip here (tests/test_course_from_wheel.py runs the install itself, from the wheel).
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
T4 = "Tesla T4, 7.5"
P100 = "Tesla P100-PCIE-16GB, 6.0"


def builder():
    spec = importlib.util.spec_from_file_location("build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cell(tmp_path, gpus=(), host_vars=None, notebook="02_lora.ipynb", python_args=()):
    """Run the install cell of `notebook` in a fresh Python; returns (exit code, output, CUDA_VISIBLE_DEVICES)."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    smi = fake / "nvidia-smi"  # no GPU: nvidia-smi fails, as it does on a machine without a driver
    smi.write_text("#!/bin/sh\n" + ("".join(f"echo '{g}'\n" for g in gpus) if gpus else "exit 9\n"))
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE", "FTLAB_PROFILE", "FTLAB_INSTALL_SOURCE",
                        "CUDA_VISIBLE_DEVICES")}
    env |= {"PATH": f"{fake}{os.pathsep}{env['PATH']}", **(host_vars or {})}
    code = builder().install_cell(notebook) + "\nprint('CUDA_VISIBLE_DEVICES', os.environ.get('CUDA_VISIBLE_DEVICES'))"
    out = subprocess.run([sys.executable, *python_args, "-c", code], env=env, capture_output=True, text=True,
                         check=False, cwd=tmp_path)
    return out.returncode, out.stdout + out.stderr, out.stdout.splitlines()[-1].split()[-1] if out.stdout else None


def test_every_notebook_gets_the_same_install_cell_with_the_one_install_source():
    build = builder()
    cells = {}
    for src in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")):
        nb = build.parse(src.read_text(), src.stem + ".ipynb")
        installs = [c.source for c in nb.cells if c.cell_type == "code" and "FTLAB_INSTALL_SOURCE" in c.source]
        assert len(installs) == 1 and nb.cells[2].source == installs[0], f"{src.name}: the install cell is not cell 2"
        cells[src.stem] = installs[0]
        assert "git clone" not in "".join(c.source for c in nb.cells), f"{src.name} clones the course"
        assert "chdir" not in "".join(c.source for c in nb.cells) and "%cd" not in "".join(c.source for c in nb.cells)
        assert nb.metadata["colab"]["gpuType"] == "T4" and nb.metadata["accelerator"] == "GPU"
        assert "T4 GPU" in nb.cells[0].source and "Kaggle" in nb.cells[0].source
    assert f'"FTLAB_INSTALL_SOURCE", "{build.INSTALL_SOURCE}"' in cells["00_setup_and_tour"]
    # the same install everywhere; only the notebooks that launch one process per GPU keep both GPUs
    assert len({re.sub(r"^(ONE_GPU|NOTEBOOK) = .*$", "", c, flags=re.MULTILINE) for c in cells.values()}) == 1
    # and each announces itself by its own name (ftlab.course.announce: profile, device, dtype, expected time)
    assert all(f'NOTEBOOK = "{stem}"' in cell for stem, cell in cells.items())
    assert {stem for stem, c in cells.items() if "ONE_GPU = False" in c} == build.MULTI_PROCESS


def test_local_cpu_uses_the_installed_ftlab_and_the_full_profile(tmp_path):
    code, out, _ = run_cell(tmp_path)
    assert code == 0, out
    assert "ftlab 0.1.0 is installed: using it" in out and "installing" not in out
    assert "No CUDA GPU: training runs on the CPU, slowly. Profile full" in out
    # then it announces what the notebook runs with (ftlab.course.announce), by the notebook's own name
    assert "02_lora: profile full | device CPU, " in out and "\nexpected time: " in out, out


def test_local_without_ftlab_says_how_to_install_instead_of_installing(tmp_path):
    code, out, _ = run_cell(tmp_path, python_args=["-S"])  # -S: no site-packages, so no ftlab
    assert code != 0 and "ftlab is not installed in this Python: run the README's set-up" in out, out


def test_colab_cpu_picks_the_small_profile_unless_one_is_set(tmp_path):
    code, out, _ = run_cell(tmp_path, host_vars={"COLAB_RELEASE_TAG": "test"})
    assert code == 0 and "slowly. Profile small" in out, out
    code, out, _ = run_cell(tmp_path, host_vars={"COLAB_RELEASE_TAG": "test", "FTLAB_PROFILE": "full"})
    assert code == 0 and "slowly. Profile full" in out, out


def test_kaggle_t4x2_uses_one_gpu_in_single_process_notebooks_and_both_in_08(tmp_path):
    kaggle = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}
    code, out, cuda = run_cell(tmp_path, gpus=[T4, T4], host_vars=kaggle)
    assert code == 0 and cuda == "0" and "2 GPUs: this notebook runs in one process, so it uses one" in out, out
    assert "GPU: Tesla T4 (compute capability 7.5)" in out and "No CUDA GPU" not in out
    code, out, cuda = run_cell(tmp_path, gpus=[T4, T4], host_vars=kaggle, notebook="08_scaling_out.ipynb")
    assert code == 0 and cuda == "None" and "2 GPUs, all visible" in out, out


@pytest.mark.parametrize("host", [{"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, {}])
def test_a_p100_is_refused_before_anything_loads_naming_the_t4(tmp_path, host):
    code, out, _ = run_cell(tmp_path, gpus=[P100], host_vars=host)
    assert code != 0 and "Tesla P100-PCIE-16GB has compute capability 6.0" in out and "T4" in out, out
    assert "is installed" not in out and "installing" not in out


def test_the_install_keeps_the_runtimes_torch(tmp_path):
    """Unsloth needs xformers, whose newest wheel pins another torch: pip must not swap Colab's CUDA torch
    under the kernel. A stand-in pip (first on the path) records what the cell asks of it."""
    site = tmp_path / "site"
    meta = site / "torch-2.99.0+cu999.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.99.0+cu999\n")
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").write_text("")
    (site / "pip" / "__main__.py").write_text(
        "import sys\nargs = sys.argv[1:]\nprint('pip args', args)\n"
        "print('constraints', repr(open(args[args.index('-c') + 1]).read()) if '-c' in args else None)\n"
        "sys.exit(3)\n")
    host = {"COLAB_RELEASE_TAG": "test", "FTLAB_INSTALL_SOURCE": str(tmp_path / "ftlab-0.1.0-py3-none-any.whl"),
            "PYTHONPATH": str(site)}
    code, out, _ = run_cell(tmp_path, gpus=[T4], host_vars=host, python_args=["-S"])  # -S: no ftlab
    assert "constraints 'torch==2.99.0+cu999\\n'" in out, out
    assert "installing ftlab[eval,unsloth] @ " in out and "keeping this runtime's torch 2.99.0+cu999" in out, out
    assert code != 0 and "pip could not install" in out and "without replacing this runtime's torch" in out, out
