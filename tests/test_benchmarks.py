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
            for m in re.findall(r"^(\w+)\s+([\d.e+-]+)\s+([\d.e+-]+)\s+([\d.e+-]+)$", out.stdout, re.MULTILINE)}
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
