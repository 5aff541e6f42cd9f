"""Side-by-side training throughput: (A) the usual recipe vs (B) ftlab's default path, each in its own process.

A is what most tutorials run: TRL's SFTTrainer with its defaults, LoRA through `peft_config`, and
`bf16=torch.cuda.is_bf16_supported()` (so fp32 on a CPU). B is `ftlab.training.train` with the same model, data,
max_length, effective batch, LoRA settings, seed and steps. After `--warmup` steps each side reports
tokens/s (non-padding tokens), median time per step, peak memory, final train loss, eval loss (the same
assistant-only loss, computed the same way for both), and model FLOPs utilisation; then the ratios B/A.

  python benchmarks/train_throughput.py                      # the full CPU comparison (~15 min here)
  python benchmarks/train_throughput.py --tiny               # seconds: checks that it works (CI)
  python benchmarks/train_throughput.py --model configs/shapes/llama-3.2-1b.json --max-length 2048 --qlora

--model takes a hub id / folder, or a config JSON (random weights, saved once to a temp folder), so sizes
whose weights are not available offline can still be timed. --tokenizer (default: the embedded model's) is the
tokenizer a config JSON gets and the one --long-rows counts tokens with: a folder keeps the run offline where
the embedded model is absent (benchmarks/gpu_smoke.sh passes the stand-in's). Leaves out: multi-GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded model (ftlab.embedded.DEFAULT_MODEL)
# Dense bf16 peak from spec sheets (TFLOP/s), for MFU against the advertised figure on known GPUs.
SPEC_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0, "A10": 125.0}


def shared_arguments(p: argparse.ArgumentParser, *, train_file: str, max_length: int, lr: float) -> None:
    """The settings A and B get alike (this benchmark's and time_to_quality.py's); data/dates/<train_file>."""
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--train-file", default=str(ROOT / "data/dates" / train_file))
    p.add_argument("--eval-file", default=str(ROOT / "data/dates/validation.jsonl"))
    p.add_argument("--batch", type=int, default=8, help="per-device batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=max_length)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--lr", type=float, default=lr, help="learning rate, both sides")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="both sides (PEFT's and ftlab's default: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--b-set", action="append", default=[], metavar="KEY=VALUE",
                   help="B only, repeatable: a TrainConfig setting over ftlab's default path, to measure a lever "
                        "(e.g. per_device_train_batch_size=16, learning_rate=7e-4, packing=true); A is unchanged")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared_arguments(p, train_file="train.jsonl", max_length=512, lr=2e-4)
    p.add_argument("--steps", type=int, default=30, help="optimizer steps, warm-up included")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--qlora", action="store_true", help="4-bit NF4 base for both sides")
    p.add_argument("--eval-rows", type=int, default=64)
    p.add_argument("--long-rows", action="store_true",
                   help="train and eval on multi-turn chats of the task's Q&As that fill max_length (the dates "
                        "rows alone are ~75 tokens: at max_length 2048 a step would time padding-free short rows)")
    p.add_argument("--tiny", action="store_true", help="3 steps, 16 eval rows: a smoke run")
    p.add_argument("--tokenizer", default=TOKENIZER,
                   help="hub id or folder: the tokenizer of a config-JSON --model and of --long-rows' token counts")
    p.add_argument("--side", choices=["A", "B"], help=argparse.SUPPRESS)  # internal: run one side, print JSON
    p.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.warmup, args.batch, args.eval_rows = 3, 1, 2, 8
    return args


# ------------------------------------------------------------------ shared by both sides


def materialize(model: str, workdir: Path, tokenizer: str = TOKENIZER) -> str:
    """A hub id/folder as is; a config JSON becomes a random-weight checkpoint with `tokenizer`'s files.

    On a GPU the checkpoint is written in the config's dtype (bf16 for every shipped shape), as the real
    checkpoints ship, so side A's `from_pretrained` keeps embedding and head in 16 bits; on a CPU in fp32, as
    the CPU tables in docs/benchmarks.md were measured."""
    if not model.endswith(".json"):
        return model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = workdir / Path(model).stem
    if not (out / "config.json").exists():
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(model)
        if torch.cuda.is_available():  # initialised on the GPU: seconds for a 1B model, not a minute of CPU
            dtype = getattr(torch, str(config.dtype).removeprefix("torch.")) if config.dtype else torch.bfloat16
            with torch.device("cuda"):
                random_model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        else:
            random_model = AutoModelForCausalLM.from_config(config)
        random_model.save_pretrained(out)
        del random_model
        AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    return str(out)


def matmul_peak_tflops(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured peak of a square matrix product in `dtype` on this device (TFLOP/s).

    A GPU gets cuda_matmul_peak_tflops (8192^3, warmed up, CUDA events); a CPU n^3 products after 3 warm-ups."""
    if torch.cuda.is_available():
        return cuda_matmul_peak_tflops(dtype)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def cuda_matmul_peak_tflops(dtype: torch.dtype, n: int = 8192, warmup_s: float = 0.5, timed_s: float = 0.5) -> float:
    """8192^3 products on GPU 0: warm-up for >= warmup_s (an idle GPU's clocks ramp up under load: a product timed
    cold reads low), then about timed_s of products between two CUDA events (GPU time, no launch gaps)."""
    a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < warmup_s or done < 3:
        a @ b
        torch.cuda.synchronize()
        done += 1
    reps = max(10, round(timed_s / ((time.perf_counter() - start) / done)))
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(reps):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * reps / (begin.elapsed_time(end) / 1e3) / 1e12  # elapsed_time: milliseconds


def weight_count(p: torch.Tensor) -> int:
    """Weights a parameter holds: a bitsandbytes Params4bit packs two 4-bit codes per uint8 element, so its
    numel() is half its weights; its quant_state keeps the unpacked shape."""
    state = getattr(p, "quant_state", None)
    return state.shape.numel() if state is not None else p.numel()


def flops_per_token(model, seq_len: float) -> float:
    """LoRA: ~4N per trained token (forward 2N + input-gradients 2N; frozen weights get no weight-gradients),
    plus attention scores and values: 4*L*s*d forward, about 3x that with the backward. N counts the weights of
    a 4-bit (QLoRA) base unpacked: each still costs a multiply-add, in the compute dtype."""
    cfg = model.config
    n = sum(weight_count(p) for name, p in model.named_parameters() if "embed_tokens" not in name)
    if getattr(cfg, "tie_word_embeddings", False):
        n += cfg.vocab_size * cfg.hidden_size  # the tied lm_head still costs a matmul
    return 4 * n + 12 * cfg.num_hidden_layers * seq_len * cfg.hidden_size


class StepClock(TrainerCallback):
    """Times each optimizer step and reads the Trainer's count of non-padding tokens after it."""

    def __init__(self):
        self.times, self.tokens, self.losses, self._t = [], [], [], None

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)
        self.tokens.append(state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def peak_memory_mb() -> dict:
    if torch.cuda.is_available():
        return {"peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
                "peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20}
    from ftlab.hardware import peak_rss  # VmHWM: right in a subprocess too, unlike ru_maxrss

    return {"peak_rss_mb": peak_rss() / 2**20}


def long_conversations(src: str, out: Path, max_length: int, rows: int, tokenizer: str = TOKENIZER) -> str:
    """JSONL of `rows` multi-turn chats, each as many of src's Q&A pairs as fit in max_length tokens.

    The pairs are taken in order and reused cyclically; the chat template is `tokenizer`'s (the one
    materialize() gives the random-weight shapes), so the token counts hold for every --model here."""
    from transformers import AutoTokenizer

    from ftlab.data import convert

    tok = AutoTokenizer.from_pretrained(tokenizer)
    pairs = [r["messages"] for r in convert(src).rows]

    def length(messages):
        return len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    chats, i = [], 0
    while len(chats) < rows:
        messages = list(pairs[i % len(pairs)])
        i += 1
        while length(messages + pairs[i % len(pairs)]) <= max_length:
            messages += pairs[i % len(pairs)]
            i += 1
        chats.append({"messages": messages})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(c) + "\n" for c in chats))
    return str(out)


def eval_rows(path: str, n: int) -> list[dict]:
    from ftlab.data import convert

    return convert(path).rows[:n]


# ------------------------------------------------------------------ the two sides


def cuda_bf16() -> bool:
    """The recipe's `torch.cuda.is_bf16_supported()`, without emulation: True on a T4 otherwise (bf16 emulated)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def side_a(args, model_name: str, out_dir: str, clock) -> tuple:
    """The usual recipe: TRL defaults, fp32 on CPU, loss on every token of the chat."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from ftlab.data import convert

    tok = AutoTokenizer.from_pretrained(model_name)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16) if args.qlora else None
    model = AutoModelForCausalLM.from_pretrained(model_name, quantization_config=quant)
    cfg = SFTConfig(output_dir=out_dir, max_steps=args.steps, per_device_train_batch_size=args.batch,
                    gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, max_length=args.max_length,
                    bf16=cuda_bf16(),
                    use_cpu=not torch.cuda.is_available(), logging_steps=1, save_strategy="no", report_to="none",
                    seed=args.seed, include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    lora = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=args.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    data = Dataset.from_list(convert(args.train_file).rows)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, peft_config=lora,
                         callbacks=[clock])
    trainer.train()
    return trainer.model, tok


def side_b(args, model_name: str, out_dir: str, clock) -> tuple:
    """ftlab's default path for this hardware."""
    from ftlab.config import config_from_dict
    from ftlab.training import train

    settings = {"model": model_name, "train_file": args.train_file, "output_dir": out_dir,
                "method": "qlora" if args.qlora else "lora", "r": args.r, "lora_alpha": 2 * args.r,
                "lora_dropout": args.lora_dropout, "max_steps": args.steps, "per_device_train_batch_size": args.batch,
                "gradient_accumulation_steps": args.grad_accum, "learning_rate": args.lr,
                "max_length": args.max_length, "logging_steps": 1, "save_steps": 10**9, "seed": args.seed}
    cfg = config_from_dict(settings, args.b_set)
    args.rows_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps  # --b-set may change it
    result = train(cfg, callbacks=[clock])
    return result.model, result.tokenizer


def run_side(args) -> dict:
    from ftlab.evaluation import eval_loss
    from ftlab.hardware import choose_precision

    workdir = Path(tempfile.gettempdir()) / "ftlab-bench"
    model_name = materialize(args.model, workdir, args.tokenizer)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        model, tok = (side_a if args.side == "A" else side_b)(args, model_name, out_dir, clock)
        wall = time.perf_counter() - start
    memory = peak_memory_mb()
    timed = clock.times[args.warmup:]
    tokens = clock.tokens[-1] - clock.tokens[args.warmup - 1] if args.warmup else clock.tokens[-1]
    seq = tokens / max(len(timed), 1) / getattr(args, "rows_per_step", args.batch * args.grad_accum)  # per row
    model.eval()
    ev = eval_loss(model, tok, eval_rows(args.eval_file, args.eval_rows), max_length=args.max_length)
    if args.side == "A":  # the recipe's own choice: bf16 only on a bf16 GPU
        dtype = torch.bfloat16 if cuda_bf16() else torch.float32
    else:
        p = choose_precision()
        dtype = torch.bfloat16 if (p.bf16 or p.cpu_autocast_bf16) else torch.float16 if p.fp16 else torch.float32
    tokens_per_s = tokens / sum(timed)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    achieved = tokens_per_s * flops_per_token(base, seq) / 1e12
    peak = matmul_peak_tflops(dtype)
    out = {"side": args.side, "tokens_per_s": tokens_per_s, "step_s_median": statistics.median(timed),
           "final_train_loss": statistics.mean(clock.losses[-3:]), "eval_loss": ev["loss"],
           "compute_dtype": str(dtype).replace("torch.", ""), "achieved_tflops": achieved,
           "measured_peak_tflops": peak, "mfu_measured_peak": achieved / peak, "wall_s": wall, **memory}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in name), None)
        if spec:
            out["mfu_spec_sheet"] = achieved / spec
    return out


# ------------------------------------------------------------------ driver


def machine() -> str:
    import platform

    import transformers
    import trl

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return (f"{dev}; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
            f"python {platform.python_version()}")


def b_label(args) -> str:
    return "ftlab default path" + (f" with {', '.join(args.b_set)}" if args.b_set else "")


def run_both_sides(script: str, raw: list[str], sides: tuple[str, str] = ("A", "B")) -> dict | None:
    """`script raw --side A`, then B, each in its own process (neither inherits the other's caches or allocator):
    {side: the JSON its RESULT line printed}, or None after printing the failing side's output."""
    results = {}
    for side in sides:
        proc = subprocess.run([sys.executable, script, *raw, "--side", side], capture_output=True, text=True,
                              check=False, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            print(f"side {side} failed (exit {proc.returncode})", file=sys.stderr)
            return None
        results[side] = json.loads(line[len("RESULT "):])
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side:
        print("RESULT " + json.dumps(run_side(args)))
        return 0
    raw = sys.argv[1:] if argv is None else list(argv)
    if args.long_rows:  # written once here; both sides read the same files (argparse keeps the last value)
        workdir = Path(tempfile.gettempdir()) / "ftlab-bench"
        n_train = args.steps * args.batch * args.grad_accum
        args.train_file = long_conversations(args.train_file, workdir / f"long{args.max_length}_train.jsonl",
                                             args.max_length, n_train, args.tokenizer)
        args.eval_file = long_conversations(args.eval_file, workdir / f"long{args.max_length}_eval.jsonl",
                                            args.max_length, args.eval_rows, args.tokenizer)
        raw += ["--train-file", args.train_file, "--eval-file", args.eval_file]
    results = run_both_sides(__file__, raw)
    if results is None:
        return 1
    a, b = results["A"], results["B"]
    print(f"machine: {machine()}")
    rows = "multi-turn rows filling max_length" if args.long_rows else "the task's rows"
    print(f"data: {rows} ({args.train_file})")
    print(f"model {args.model}, {'QLoRA' if args.qlora else 'LoRA'} r={args.r} all-linear, dropout "
          f"{args.lora_dropout}, max_length "
          f"{args.max_length}, batch {args.batch} x accumulation {args.grad_accum}, {args.steps} steps "
          f"({args.warmup} warm-up), seed {args.seed}")
    print(f"A = TRL SFTTrainer defaults (bf16 only on a bf16 GPU); B = {b_label(args)}")
    print(f"{'figure':<28}{'A':>14}{'B':>14}{'B/A':>10}")
    for key in ("tokens_per_s", "step_s_median", "peak_rss_mb", "peak_allocated_mb", "peak_reserved_mb",
                "final_train_loss", "eval_loss", "achieved_tflops", "measured_peak_tflops",
                "mfu_measured_peak", "mfu_spec_sheet"):
        if key in a and key in b:
            print(f"{key:<28}{a[key]:>14.4g}{b[key]:>14.4g}{b[key] / a[key]:>10.3f}")
    print(f"{'compute_dtype':<28}{a['compute_dtype']:>14}{b['compute_dtype']:>14}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
