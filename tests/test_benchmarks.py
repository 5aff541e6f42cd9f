"""The throughput benchmark runs end to end (a tiny configuration): a test that it works, not a timing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"(-?\d[\d.]*(?:e[+-]?\d+)?)"  # a ratio column may print "-" (A's figure was 0)


def ratio_rows(stdout: str) -> dict[str, tuple[float, float, float]]:
    """{figure: (A, B, B/A)} from a benchmark's side-by-side table (a row whose ratio is "-" is left out)."""
    return {m[0]: (float(m[1]), float(m[2]), float(m[3]))
            for m in re.findall(rf"^(\w+)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", stdout, re.MULTILINE)}


@pytest.mark.slow
def test_train_throughput_tiny_prints_both_sides_and_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/train_throughput.py"), "--tiny"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1200,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = ratio_rows(out.stdout)
    for key in ("tokens_per_s", "step_s_median", "peak_rss_mb", "eval_loss", "mfu_measured_peak"):
        assert key in rows, f"no {key} line in:\n{out.stdout}"
        a, b, ratio = rows[key]
        assert a > 0 and b > 0 and ratio == pytest.approx(b / a, rel=0.01)


def test_long_rows_fill_max_length_with_the_task_pairs(tmp_path, tokenizer):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks/train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    src = ROOT / "data/dates/train.jsonl"
    path = bench.long_conversations(str(src), tmp_path / "long.jsonl", max_length=512, rows=5)
    chats = [json.loads(line)["messages"] for line in Path(path).read_text().splitlines()]
    pairs = [json.loads(line)["messages"] for line in src.read_text().splitlines()]
    assert len(chats) == 5
    for messages in chats:
        n = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        assert 512 * 0.8 < n <= 512, n  # full, never over: no row is truncated
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    first = chats[0]
    assert [first[i:i + 2] for i in range(0, len(first), 2)] == pairs[:len(first) // 2]  # the task's pairs, in order


@pytest.mark.slow
def test_time_to_quality_tiny_prints_both_sides_checks_and_the_verdict():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/time_to_quality.py"), "--tiny"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1200,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    for side in "AB":  # --tiny: 4 steps, a check every 2 -> checks at steps 2 and 4 unless the first reached 90%
        trail = re.search(rf"^  {side} checks \(step: exact match\): (.*)$", out.stdout, re.MULTILINE)
        assert trail and re.fullmatch(r"2: \d+%(, 4: \d+%)?", trail[1]), out.stdout
    rows = ratio_rows(out.stdout)
    for key in ("train_s_to_target", "tokens_per_s", "fp32_peak_tflops", "bf16_peak_tflops", "mfu", "peak_rss_mb"):
        a, b, ratio = rows[key]
        assert a > 0 and b > 0 and ratio == pytest.approx(b / a, rel=0.01), (key, out.stdout)
    assert re.search(r"^machine: .*bf16 instructions: (AMX|AVX512-BF16|neither)", out.stdout, re.MULTILINE)
    assert re.search(r"^time to target, A / B: (>?[\d.]+x|not defined: B did not reach the target)$", out.stdout,
                     re.MULTILINE), out.stdout
