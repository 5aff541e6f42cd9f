import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def ftlab(*args):
    return subprocess.run([sys.executable, "-m", "ftlab.cli", *args], env=ENV, capture_output=True, text=True, check=False)


def test_doctor_reports_the_machine():
    from ftlab import hardware

    out = ftlab("doctor")
    assert out.returncode == 0, out.stderr
    rows = [line.split(None, 1) for line in out.stdout.splitlines()]  # "name   finding"
    lines = {row[0]: row[1] for row in rows if row[0] in ("gpu", "backend")}
    assert lines["gpu"].strip() == hardware.gpu_summary()  # "CPU only", or the GPU's name and memory
    assert lines["backend"].strip() == hardware.choose_backend("auto")[1]
    assert "embedded model" in out.stdout and "ready" in out.stdout
    assert "transformers" in out.stdout and "bf16 (CPU)" in out.stdout and "bf16 (CUDA)" in out.stdout
    if not hardware.torch.cuda.is_available():
        assert "CPU only" in out.stdout and "no GPU" in out.stdout


def test_errors_are_one_line_and_nonzero(tmp_path):
    out = ftlab("generate", "--model", str(tmp_path / "missing"), "hi")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("ftlab: error: could not load model")
    assert len([ln for ln in out.stderr.splitlines() if ln.startswith("ftlab: error")]) == 1


@pytest.mark.parametrize("command", ["check", "convert"])
def test_data_on_an_empty_file_fails_naming_it(tmp_path, command):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    extra = ["--out", str(tmp_path / "out.jsonl")] if command == "convert" else []
    out = ftlab("data", command, str(empty), *extra)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"ftlab: error: {empty} is empty (0 bytes): nothing to check or convert. Add rows")
    assert "format: unknown" not in out.stdout + out.stderr and not (tmp_path / "out.jsonl").exists()


def test_data_check_rejects_an_identical_preference_pair(tmp_path):
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a", "rejected": "a"}\n')
    out = ftlab("data", "check", str(data))
    assert out.returncode == 0, out.stderr
    assert "2 read, 1 valid, 1 rejected" in out.stdout
    assert "row 1 [identical_pair] chosen and rejected are identical (prompt 'q', both answer 'a')" in out.stdout


def test_bad_arguments_exit_2():
    assert ftlab("nosuchcommand").returncode == 2


@pytest.mark.slow
def test_generate_offline_answers_with_embedded_model():
    out = ftlab("generate", "What is the capital of France?", "--max-new-tokens", "20")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
