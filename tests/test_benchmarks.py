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


def load_benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_RUNS = {  # the benchmarks' smoke runs; time_to_quality's with a lever on B only, named in its B line
    "train_throughput": ["--tiny"],
    "time_to_quality": ["--tiny", "--b-set", "learning_rate=1e-3"],
}


@pytest.fixture(scope="module")
def tiny_runs(request):
    """{benchmark: its finished process}: the --tiny runs this session selected, started together.

    Each is mostly imports and model loading in one thread: side by side, one torch thread each, both end
    sooner than one after the other (in CI's full run the two took 193 s and 231 s in a row)."""
    wanted = {name for name in TINY_RUNS for item in request.session.items
              if item.path == Path(__file__) and name in item.name}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"} | ({"OMP_NUM_THREADS": "1"} if len(wanted) > 1 else {})
    procs = {name: subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *TINY_RUNS[name]],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for name in sorted(wanted)}
    done = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=1800)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:  # a timeout leaves no benchmark running behind the tests
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return done


@pytest.mark.slow
def test_train_throughput_tiny_prints_both_sides_and_ratios(tiny_runs):
    out = tiny_runs["train_throughput"]
    assert out.returncode == 0, out.stderr[-3000:]
    rows = ratio_rows(out.stdout)
    for key in ("tokens_per_s", "step_s_median", "peak_rss_mb", "eval_loss", "mfu_measured_peak"):
        assert key in rows, f"no {key} line in:\n{out.stdout}"
        a, b, ratio = rows[key]
        assert a > 0 and b > 0 and ratio == pytest.approx(b / a, rel=0.01)


def test_long_rows_fill_max_length_with_the_task_pairs(tmp_path, tokenizer):
    import json

    bench = load_benchmark("train_throughput")
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


def test_compile_lever_batches_are_length_grouped_real_chats_with_padding_masked(tokenizer):
    bench = load_benchmark("compile_lever")
    batches = bench.batches(tokenizer, n_batches=3, size=4)
    assert len(batches) == 3
    for batch in batches:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        assert ids.shape == mask.shape == labels.shape and ids.shape[0] == 4
        lengths = mask.sum(1).tolist()
        assert lengths == sorted(lengths) and lengths[-1] == ids.shape[1]  # grouped: the longest sets the width
        assert (labels[mask == 0] == -100).all() and (labels[mask == 1] == ids[mask == 1]).all()
        first = tokenizer.decode(ids[0, :lengths[0]])
        assert "<|im_start|>assistant" in first  # a chat from data/dates, in the model's template
    assert len({b["input_ids"].shape[1] for b in batches}) > 1  # shapes vary as in training


@pytest.mark.slow
def test_time_to_quality_tiny_prints_both_sides_checks_and_the_verdict(tiny_runs):
    out = tiny_runs["time_to_quality"]
    assert out.returncode == 0, out.stderr[-3000:]
    for side in "AB":  # --tiny: 4 steps, a check every 2 -> checks at steps 2 and 4 unless the first reached 90%
        trail = re.search(rf"^  {side} checks \(step: exact match\): (.*)$", out.stdout, re.MULTILINE)
        assert trail and re.fullmatch(r"2: \d+%(, 4: \d+%)?", trail[1]), out.stdout
    rows = ratio_rows(out.stdout)
    for key in ("train_s_to_target", "tokens_per_s", "fp32_peak_tflops", "bf16_peak_tflops", "mfu", "peak_rss_mb"):
        a, b, ratio = rows[key]
        assert a > 0 and b > 0 and ratio == pytest.approx(b / a, rel=0.01), (key, out.stdout)
    assert re.search(r"^machine: .*bf16 instructions: (AMX|AVX512-BF16|neither)", out.stdout, re.MULTILINE)
    assert re.search(r"; B = ftlab default path with learning_rate=1e-3$", out.stdout, re.MULTILINE), out.stdout
    assert re.search(r"^time to target, A / B: (>?[\d.]+x|not defined: B did not reach the target)$", out.stdout,
                     re.MULTILINE), out.stdout
