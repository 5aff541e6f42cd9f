"""CPU speed levers: what ftlab's default training path changes on a CPU, each with its measurement.

On a GPU none of these apply (the functions return early or do nothing). On a CPU, measured on the
2-core AMD EPYC with AVX512-BF16 (bf16 matmul peak ~0.38 TFLOP/s) by `python benchmarks/train_throughput.py`
(docs/benchmarks.md has the table; 3.6x the usual recipe's tokens/s together):
  bf16_base       the frozen base in bf16 on a CPU with bf16 instructions: half the memory, no weight casts
  autocast        bf16 autocast around the steps (fp32 master weights): LoRA step 5.07 s -> 3.51 s
  eager_attention plain attention for short rows: SDPA's CPU backward costs ~10 ms a layer (2.7 s -> 2.3 s)
  loss_positions_only  TRL's fused LM head scores only the tokens that carry loss (most are prompt/padding)
Levers depend on the processor: on a CPU without bf16 instructions training stays fp32 (bf16 would be
emulated) and only eager attention and loss-position scoring apply; train() prints which levers a run takes
and why in one line (levers_line). Leaves out: choosing the precision
(hardware.choose_precision) and anything about the model's quality (a test checks each lever keeps the loss).
Not a lever here: torch.compile (benchmarks/compile_lever.py, AVX2 EPYC: 16 min to compile, steps no faster).
"""

from __future__ import annotations

import contextlib

import torch

from ftlab.config import TrainConfig
from ftlab.hardware import Precision, cpu_bf16_instructions

EAGER_ATTENTION_MAX_MB = 256  # attention probabilities kept for the backward pass, all layers, one batch


def bf16_base(cfg: TrainConfig, precision: Precision) -> torch.dtype | None:
    """Weights of the base model: fp32 master weights for full fine-tuning; bf16 for the frozen base of the
    adapter methods on a CPU with bf16 (half the memory, no per-step weight casts; the adapter stays fp32);
    otherwise None: load_model's default (bf16/fp16 on a GPU, fp32 on other CPUs)."""
    if cfg.method == "full":
        return torch.float32
    return torch.bfloat16 if precision.cpu_autocast_bf16 else None


def autocast(precision: Precision):
    """bf16 autocast on a CPU with bf16 instructions (faster LoRA steps); nothing elsewhere.

    Trainer's bf16=True does not speed up CPU training (measured), so ftlab wraps the steps itself.
    Weights and optimizer state stay fp32; only matmuls run in bf16. cache_enabled=False matters: autocast
    keeps one bf16 copy of every trainable weight until the context exits, so around a whole training run
    the forward would keep using the step-1 weights while the optimizer updates the fp32 ones.
    """
    if precision.cpu_autocast_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def eager_attention(model, train_ds, cfg: TrainConfig) -> bool:
    """On a CPU, plain ("eager") attention for short sequences; True when switched.

    PyTorch's SDPA backward costs ~10 ms per layer even on 80-token batches (measured: a LoRA step 2.7 s ->
    2.3 s). Eager keeps the attention probabilities (batch x heads x length^2, fp32) for the backward pass,
    so it is chosen only while those stay under EAGER_ATTENTION_MAX_MB for the longest training example;
    long sequences keep SDPA.
    """
    if torch.cuda.is_available() or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    if "input_ids" in train_ds.column_names and not (cfg.packing or cfg.task == "cpt"):
        longest = max(len(ids) for ids in train_ds["input_ids"])  # packed rows are max_length long instead
    else:  # DPO rows are tokenized by TRL later: assume the longest allowed
        longest = cfg.max_length
    longest = min(longest, cfg.max_length)
    heads, layers = model.config.num_attention_heads, model.config.num_hidden_layers
    mb = cfg.per_device_train_batch_size * heads * longest**2 * 4 * layers / 2**20
    if mb > EAGER_ATTENTION_MAX_MB:
        return False
    model.set_attn_implementation("eager")
    print(f"ftlab: eager attention on CPU (faster than SDPA for sequences up to {longest} tokens; "
          f"{mb:.0f} MB of attention kept for the backward pass)")
    return True


@contextlib.contextmanager
def loss_positions_only():
    """Within the block, TRL's fused LM head scores only the positions that carry loss on a CPU too.

    TRL projects hidden states through the LM head (vocabulary 49k for SmolLM2) in tiles without keeping the
    full logits. On CUDA/XPU it keeps only the positions whose label is not -100; elsewhere it scores every
    position, so that compilers (Neuron) see fixed shapes. Eager CPU training compiles nothing, and with
    loss on the answers only most positions are prompt or padding: scoring only the answers skips most of
    the LM-head matmul and softmax, forward and backward. Same loss, same gradients (a test checks).
    The switch is TRL's private `_use_triton` as imported into trl.trainer.utils, read only for that
    choice there; it is restored when the block ends. If TRL renames it, ftlab says so once and trains the
    slower way. Yields True when the switch is on.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None or torch.cuda.is_available():
        if original is None:
            print("ftlab: this TRL has no trl.trainer.utils._use_triton; its LM head scores every position on "
                  "CPU (slower, same results)")
        yield False
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield True
    finally:
        trl_utils._use_triton = original


def levers_line(cfg: TrainConfig, precision: Precision, *, eager: bool, loss_positions: bool,
                instructions: str | None = None) -> str:
    """One line: which CPU levers this run takes, which it leaves off, and why (by the processor's bf16
    instructions, as choose_precision says for the dtype). instructions: cpu_bf16_instructions() by default."""
    instructions = instructions or cpu_bf16_instructions()
    on, off = [], []
    bf16 = ["bf16 frozen base", "bf16 autocast"] if cfg.method != "full" else ["bf16 autocast"]
    if precision.cpu_autocast_bf16:
        on += bf16
    else:
        off.append(f"{' and '.join(bf16)} ("
                   + ("no bf16 instructions: emulated bf16 is slower than fp32" if instructions == "neither"
                      else "fp32 chosen: see the precision line") + ")")
    (on if eager else off).append("eager attention" + ("" if eager else " (long rows or no SDPA: SDPA kept)"))
    if cfg.group_by_length and not cfg.packing:
        on.append("length-grouped batches")
    else:
        off.append("length-grouped batches (" + ("packing" if cfg.packing else "group_by_length=false") + ")")
    (on if loss_positions else off).append("LM head on loss positions only"
                                           + ("" if loss_positions else " (this TRL has no switch)"))
    cpu = "AVX2 or older, no bf16 instructions" if instructions == "neither" else instructions
    return f"CPU levers for this processor ({cpu}): on: {', '.join(on) or 'none'}" + (
        f"; off: {', '.join(off)}" if off else "")

