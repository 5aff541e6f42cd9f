"""The throughput benchmark runs end to end (a tiny configuration): a test that it works, not a timing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_train_throughput_tiny_prints_both_sides_and_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/train_throughput.py"), "--tiny"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {m[0]: (float(m[1]), float(m[2]), float(m[3]))
            for m in re.findall(r"^(\w+)\s+([\d.e+-]+)\s+([\d.e+-]+)\s+([\d.e+-]+)$", out.stdout, re.M)}
    for key in ("tokens_per_s", "step_s_median", "peak_rss_mb", "eval_loss", "mfu_measured_peak"):
        assert key in rows, f"no {key} line in:\n{out.stdout}"
        a, b, ratio = rows[key]
        assert a > 0 and b > 0 and ratio == pytest.approx(b / a, rel=0.01)
