"""torch.compile as a CPU lever: does compiling a LoRA model pay back within a course-sized run?

Two sides, each in its own process, on the same model, LoRA settings, batches and seed:
- eager: a PEFT LoRA model (r=16, all-linear, eager attention, as ftlab trains on a CPU), AdamW steps;
- compiled: the same model through `torch.compile` (inductor; `--mode`, dynamic shapes unless --static).
The batches are real data/dates chats, grouped by length as ftlab's sampler does, so their lengths vary from
step to step as in training. Printed side by side in one run: the first step (compilation included), the
median step after it, the loss of the first batch on both sides (a lever must not change it), and the
break-even: how many steps the compiled side needs before its total time drops below eager's.

  python benchmarks/compile_lever.py              # 12 steps of 8 chats, fp32 or bf16 autocast as ftlab picks
  python benchmarks/compile_lever.py --tiny       # 3 steps of 2 chats (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--mode", default="default", help="torch.compile mode: default, reduce-overhead, max-autotune")
    p.add_argument("--static", action="store_true", help="dynamic=False: one compilation per new batch shape")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--side", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.batch = 3, 2
    return args


def batches(tokenizer, n_batches: int, size: int) -> list[dict]:
    """n_batches of `size` chats from data/dates/train.jsonl, sorted by length in groups (ftlab's
    group_by_length), padded per batch; labels are the input ids with padding masked."""
    from ftlab.data import convert

    rows = convert(str(ROOT / "data/dates/train.jsonl")).rows[: n_batches * size]
    ids = [tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"] for r in rows]
    out = []
    for i in range(n_batches):
        group = sorted(ids[i * size:(i + 1) * size], key=len)
        width = max(map(len, group))
        input_ids = torch.full((size, width), tokenizer.pad_token_id)
        mask = torch.zeros((size, width), dtype=torch.long)
        for j, seq in enumerate(group):
            input_ids[j, :len(seq)], mask[j, :len(seq)] = torch.tensor(seq), 1
        out.append({"input_ids": input_ids, "attention_mask": mask,
                    "labels": input_ids.masked_fill(mask == 0, -100)})
    return out


def run_side(args) -> dict:
    from peft import LoraConfig, get_peft_model

    from ftlab import load_model
    from ftlab.hardware import choose_precision
    from ftlab.speed import autocast

    torch.manual_seed(0)
    model, tok = load_model(verbose=False)
    model.set_attn_implementation("eager")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    data = batches(tok, args.steps, args.batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    forward = model if args.side == "eager" else torch.compile(model, mode=args.mode, dynamic=not args.static)
    precision = choose_precision()
    times, losses = [], []
    for batch in data:
        start = time.perf_counter()
        with autocast(precision):
            loss = forward(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return {"side": args.side, "first_step_s": times[0], "median_step_s": statistics.median(times[1:]),
            "total_s": sum(times), "first_loss": losses[0], "last_loss": losses[-1], "times": times,
            "dtype": "bf16 autocast" if precision.cpu_autocast_bf16 else "fp32",
            "shapes": sorted({tuple(b["input_ids"].shape) for b in data})}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side:
        print("RESULT " + json.dumps(run_side(args)))
        return 0
    raw = sys.argv[1:] if argv is None else list(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from time_to_quality import processor
    from train_throughput import run_both_sides

    results = run_both_sides(__file__, raw, sides=("eager", "compiled"))
    if results is None:
        return 1
    a, b = results["eager"], results["compiled"]
    cpu = processor()
    print(f"machine: {cpu['name']}, {cpu['cores']} cores, bf16 instructions: {cpu['bf16_instructions']}; "
          f"torch {torch.__version__}; training dtype {a['dtype']}")
    print(f"LoRA r=16 all-linear, eager attention, {args.steps} steps of {args.batch} data/dates chats "
          f"({len(a['shapes'])} batch shapes), torch.compile mode={args.mode}, dynamic={not args.static}")
    print(f"{'figure':<18}{'eager':>12}{'compiled':>12}{'c/e':>10}")
    for key in ("first_step_s", "median_step_s", "total_s", "first_loss", "last_loss"):
        print(f"{key:<18}{a[key]:>12.4g}{b[key]:>12.4g}{b[key] / a[key]:>10.3f}")
    gain = a["median_step_s"] - b["median_step_s"]
    overhead = b["first_step_s"] - a["first_step_s"]
    verdict = (f"compiled pays back after ~{overhead / gain:.0f} steps" if gain > 0
               else "compiled steps are not faster: it never pays back")
    print(f"break-even: {verdict} (compilation {overhead:.1f} s, {gain:+.3f} s a step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
