"""Time to quality: (A) the usual recipe vs (B) ftlab's default path, trained until a held-out target.

Both sides are the ones `train_throughput.py` compares (same model, data, max_length, batch, LoRA settings,
learning rate and seed; each in its own process). Every `--check-every` optimizer steps a side stops its
clock, answers `--check-rows` validation prompts greedily and scores exact match; it stops at the first
check that reaches `--target`, or at `--steps`. Reported per side: training time to the target (the steps
only: check time is left out and reported apart), steps to the target, tokens/s, achieved TFLOP/s, the
measured fp32 and bf16 matrix-product peaks (warmed up, timed for a second or more), MFU against the peak
of the side's compute dtype, peak memory, and the processor (model, AMX / AVX512-BF16 / neither, cores).

  python benchmarks/time_to_quality.py                 # dates, target 90% on 50 validation rows
  python benchmarks/time_to_quality.py --tiny          # seconds: checks that it works (CI)
  python benchmarks/time_to_quality.py --b-set per_device_train_batch_size=16 --b-set learning_rate=7e-4
                                                       # a lever on B only (any TrainConfig setting)

A side that does not reach the target within --steps prints its best check and "not reached"; the ratio is
then a lower bound (">").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tt  # the sides, FLOP count and step clock are shared

ROOT = tt.ROOT


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tt.shared_arguments(p, train_file="train_varied.jsonl", max_length=256, lr=5e-4)  # the main job's data and lr
    p.add_argument("--target", type=float, default=0.9, help="exact match on the check rows that ends a side")
    p.add_argument("--check-every", type=int, default=10, help="optimizer steps between checks")
    p.add_argument("--check-rows", type=int, default=50, help="validation rows answered at each check")
    p.add_argument("--steps", type=int, default=100, help="the cap: a side stops here if it never reaches target")
    p.add_argument("--tiny", action="store_true", help="4 steps, a check every 2 on 4 rows: a smoke run")
    p.add_argument("--side", choices=["A", "B"], help=argparse.SUPPRESS)  # internal: one side, JSON out
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.check_every, args.check_rows, args.batch = 4, 2, 4, 2
    # what train_throughput's sides read
    args.qlora, args.warmup, args.long_rows = False, 0, False
    return args


class QualityClock(tt.StepClock):
    """StepClock plus a held-out check every `every` steps; stops training at the first check >= target."""

    def __init__(self, rows: list[dict], target: float, every: int):
        from ftlab.tasks import prompts_and_references

        super().__init__()
        self.prompts, self.references = prompts_and_references(rows)
        self.target, self.every = target, every
        self.checks: list[dict] = []

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
        super().on_step_end(args, state, control, **kw)
        if state.global_step % self.every:
            return
        from ftlab.generate import generate_batch
        from ftlab.tasks import exact_match

        start, training = time.perf_counter(), model.training
        model.eval()
        with torch.no_grad():
            answers = generate_batch(model, processing_class, self.prompts, max_new_tokens=24)
        model.train(training)
        share = statistics.mean(exact_match(a, r) for a, r in zip(answers, self.references))
        self.checks.append({"step": state.global_step, "train_s": sum(self.times), "tokens": self.tokens[-1],
                            "exact_match": share, "check_s": time.perf_counter() - start})
        if share >= self.target:
            control.should_training_stop = True


def matmul_peak_tflops(dtype: torch.dtype, largest: int = 2048, seconds: float = 1.0) -> tuple[float, int]:
    """(peak TFLOP/s, n) of n x n products in `dtype`, after 0.5 s of warm-up, timed over >= `seconds`.

    n grows from 256 to `largest` while one product takes under 0.2 s: where the CPU has no bf16 instructions
    a 2048 bf16 product takes about a minute (AVX2 EPYC, 2026-12-07), and its peak is as low at n=512."""
    n = 256
    while n < largest:
        a = torch.randn(n, n, dtype=dtype)
        start = time.perf_counter()
        a @ a
        if time.perf_counter() - start > 0.2:
            break
        n *= 2
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12, n


def processor() -> dict:
    from ftlab.hardware import cpu_bf16_instructions

    name = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"name": name, "bf16_instructions": cpu_bf16_instructions(), "cores": os.cpu_count()}


def run_side(args) -> dict:
    from ftlab.hardware import choose_precision

    workdir = Path(tempfile.gettempdir()) / "ftlab-bench"
    model_name = tt.materialize(args.model, workdir)
    clock = QualityClock(tt.eval_rows(args.eval_file, args.check_rows), args.target, args.check_every)
    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        model, _ = (tt.side_a if args.side == "A" else tt.side_b)(args, model_name, out_dir, clock)
        wall = time.perf_counter() - start
    if args.side == "A":
        dtype = torch.float32  # TRL's default on a CPU
    else:
        p = choose_precision()
        dtype = torch.bfloat16 if (p.bf16 or p.cpu_autocast_bf16) else torch.float32
    reached = next((c for c in clock.checks if c["exact_match"] >= args.target), None)
    best = max(clock.checks, key=lambda c: c["exact_match"]) if clock.checks else None
    steps = len(clock.times)
    tokens = clock.tokens[-1] if clock.tokens else 0
    tokens_per_s = tokens / sum(clock.times)
    seq = tokens / steps / getattr(args, "rows_per_step", args.batch * args.grad_accum)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    achieved = tokens_per_s * tt.flops_per_token(base, seq) / 1e12
    (fp32, fp32_n), (bf16, bf16_n) = matmul_peak_tflops(torch.float32), matmul_peak_tflops(torch.bfloat16)
    peaks = {"fp32": fp32, "bf16": bf16}
    own_peak = peaks["bf16" if dtype == torch.bfloat16 else "fp32"]
    return {"side": args.side, "reached": reached is not None,
            "train_s_to_target": (reached or clock.checks[-1])["train_s"] if clock.checks else sum(clock.times),
            "steps_to_target": (reached or clock.checks[-1])["step"] if clock.checks else steps,
            "best_exact_match": best["exact_match"] if best else float("nan"),
            "check_s_total": sum(c["check_s"] for c in clock.checks), "wall_s": wall, "steps_run": steps,
            "tokens_per_s": tokens_per_s, "achieved_tflops": achieved, "fp32_peak_tflops": peaks["fp32"],
            "bf16_peak_tflops": peaks["bf16"], "peak_sizes": [fp32_n, bf16_n], "mfu": achieved / own_peak,
            "mfu_of_bf16_peak": achieved / peaks["bf16"], "compute_dtype": str(dtype).replace("torch.", ""),
            "checks": clock.checks, **tt.peak_memory_mb()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side:
        print("RESULT " + json.dumps(run_side(args)))
        return 0
    raw = sys.argv[1:] if argv is None else list(argv)
    results = tt.run_both_sides(__file__, raw)
    if results is None:
        return 1
    a, b = results["A"], results["B"]
    cpu = processor()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (
        f"{cpu['name']}, {cpu['cores']} cores, bf16 instructions: {cpu['bf16_instructions']}")
    print(f"machine: {device}; {tt.machine()}")
    print(f"model {args.model}, LoRA r={args.r} all-linear, dropout {args.lora_dropout}, max_length "
          f"{args.max_length}, batch {args.batch} x accumulation {args.grad_accum}, lr {args.lr:g}, seed {args.seed}")
    print(f"data {Path(args.train_file).name}; target: exact match >= {args.target:.0%} on {args.check_rows} rows "
          f"of {Path(args.eval_file).name}, checked every {args.check_every} steps, cap {args.steps} steps")
    print(f"A = TRL SFTTrainer defaults (fp32 on a CPU, loss on every token); B = {tt.b_label(args)}")
    for side in (a, b):
        trail = ", ".join(f"{c['step']}: {c['exact_match']:.0%}" for c in side["checks"])
        print(f"  {side['side']} checks (step: exact match): {trail}")
    print(f"{'figure':<26}{'A':>12}{'B':>12}{'B/A':>10}")
    for key in ("train_s_to_target", "steps_to_target", "best_exact_match", "tokens_per_s", "achieved_tflops",
                "fp32_peak_tflops", "bf16_peak_tflops", "mfu", "mfu_of_bf16_peak", "peak_rss_mb",
                "peak_allocated_mb", "check_s_total", "wall_s"):
        if key in a and key in b:
            ratio = f"{b[key] / a[key]:>10.3f}" if a[key] else f"{'-':>10}"
            print(f"{key:<26}{a[key]:>12.4g}{b[key]:>12.4g}{ratio}")
    print(f"{'compute_dtype':<26}{a['compute_dtype']:>12}{b['compute_dtype']:>12}")
    print(f"{'peak product size n':<26}{'fp32 {}, bf16 {}'.format(*b['peak_sizes']):>24}")
    print(f"{'reached target':<26}{a['reached']!s:>12}{b['reached']!s:>12}")
    ratio = a["train_s_to_target"] / b["train_s_to_target"]
    bound = "" if a["reached"] else ">"  # A stopped at the cap: its real time to target is longer
    verdict = f"{bound}{ratio:.2f}x" if b["reached"] else "not defined: B did not reach the target"
    print(f"time to target, A / B: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
