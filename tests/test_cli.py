import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def ftlab(*args):
    return subprocess.run([sys.executable, "-m", "ftlab.cli", *args], env=ENV, capture_output=True, text=True)


def test_doctor_reports_the_machine():
    out = ftlab("doctor")
    assert out.returncode == 0, out.stderr
    assert "CPU only" in out.stdout and "embedded model" in out.stdout and "ready" in out.stdout
    assert "transformers" in out.stdout and "bf16 (CPU)" in out.stdout


def test_errors_are_one_line_and_nonzero(tmp_path):
    out = ftlab("generate", "--model", str(tmp_path / "missing"), "hi")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("ftlab: error: could not load model")
    assert len([ln for ln in out.stderr.splitlines() if ln.startswith("ftlab: error")]) == 1


def test_bad_arguments_exit_2():
    assert ftlab("nosuchcommand").returncode == 2


@pytest.mark.slow
def test_generate_offline_answers_with_embedded_model():
    out = ftlab("generate", "What is the capital of France?", "--max-new-tokens", "20")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
