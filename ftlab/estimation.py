"""Will it fit? Memory, time per step and disk for fine-tuning a model, from its config alone (no weights).

    est = estimate("llama-3.2-1b", method="qlora", gpu="T4", max_length=1024)
    print(est.table())

Parameters are counted analytically for Llama-style decoders (grouped-query attention, gated MLP, RMSNorm).
Memory adds the trainable parameters' gradients and optimizer states, the activations kept for backward,
the logits and a framework overhead. The activation multipliers were counted with torch's saved-tensor
hooks on SmolLM2-135M (PEFT 0.21, transformers 5.23, SDPA attention); tests/test_estimation.py checks the
CPU total against a measured peak RSS.
Leaves out: mixture-of-experts, multi-GPU sharding (ZeRO/FSDP), sequence packing, lora_dropout > 0,
eager attention (its batch x heads x seq x seq scores), and the memory allocator's fragmentation.
"""

from __future__ import annotations

import functools
import html
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import AutoConfig, PretrainedConfig

from ftlab.config import METHODS, default_optim
from ftlab.hardware import cpu_has_bf16, memory_bytes
from ftlab.shipped import configs_dir

SHAPES_DIR = configs_dir() / "shapes"  # shipped model-shape configs (ftlab.shipped)
LORA_FAMILY = ("lora", "rslora", "dora", "qlora")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
FEEDFORWARD = ("down_proj",)  # IA3 scales these on their input side (PEFT's default for Llama)
MiB, MB, GB = 2**20, 10**6, 10**9

# bitsandbytes NF4 with double quantization: 4 bits + one uint8 absmax per 64 weights
# + one fp32 scale per 256 absmax blocks (~4.13 bits per weight)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)

# Optimizer state bytes per trainable parameter, by TrainingArguments `optim` name
OPTIMIZER_BYTES = {
    "adamw_torch": 8, "adamw_torch_fused": 8, "paged_adamw_32bit": 8,  # AdamW: 2 fp32 states
    "adamw_8bit": 2, "adamw_bnb_8bit": 2, "paged_adamw_8bit": 2,  # bitsandbytes: 2 uint8 states
    "sgd": 0,  # no momentum
}

# GPUs: (memory in bytes as nvidia-smi reports it, dense 16-bit tensor-core TFLOP/s from the spec sheet, precision)
GPUS = {
    "T4": (15360 * MiB, 65.0, "fp16"),  # Turing: no bf16, so fp16 autocast
    "L4": (23034 * MiB, 121.0, "bf16"),
    "A100-40": (40960 * MiB, 312.0, "bf16"),
    "A100-80": (81920 * MiB, 312.0, "bf16"),
    "H100": (81559 * MiB, 989.0, "bf16"),  # SXM
}
CUDA_CONTEXT = 500 * MB  # CUDA context + cuBLAS workspace, outside torch's allocator
# Assumed fraction of the peak a training step reaches. CPU: LoRA steps on SmolLM2-135M (fp32 and 4-bit)
# reached 3-13% of a bf16 matmul peak measured beside them, on 2 cores shared with other jobs
UTILISATION = {"gpu": 0.35, "cpu": 0.10}


# ---------------------------------------------------------------------------- the model's shape


@dataclass(frozen=True)
class Shape:
    """The numbers of a Llama-style config that size every tensor."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int  # fewer than heads: grouped-query attention
    head_dim: int
    intermediate: int  # MLP width: gate/up out, down in
    vocab: int
    tied: bool  # lm_head reuses the embedding matrix
    checkpoint_bytes: int = 2  # per parameter in the checkpoint (config dtype): 2 for bf16/fp16, 4 for fp32
    attention_bias: bool = False
    mlp_bias: bool = False


def read_model_config(model) -> PretrainedConfig:
    """A transformers config, without weights.

    model: a hub id or local folder (read with AutoConfig), a JSON config file, a shipped shape name
    ('smollm2-135m', see configs/shapes/), a config dict or a PretrainedConfig.
    """
    if isinstance(model, PretrainedConfig):
        return model
    if isinstance(model, dict):
        rest = {k: v for k, v in model.items() if k != "model_type"}
        return AutoConfig.for_model(model.get("model_type", "llama"), **rest)
    path, shipped = Path(model).expanduser(), SHAPES_DIR / f"{model}.json"
    if path.is_file() or shipped.is_file():
        return read_model_config(json.loads((path if path.is_file() else shipped).read_text()))
    try:
        return AutoConfig.from_pretrained(str(path) if path.is_dir() else model)
    except OSError as err:
        shipped_names = sorted(p.stem for p in SHAPES_DIR.glob("*.json"))
        why = str(err).splitlines()[0]
        raise OSError(f"could not read a config for {model!r} ({why}) Fix: pass a config JSON file, a dict, "
                      f"or a shipped shape name: {', '.join(shipped_names)}") from err


def shape_of(model) -> Shape:
    """The Shape of anything read_model_config accepts."""
    if isinstance(model, Shape):
        return model
    config = read_model_config(model).get_text_config()
    heads = config.num_attention_heads
    return Shape(
        name=getattr(config, "name_or_path", "") or (model if isinstance(model, str) else config.model_type),
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        checkpoint_bytes=4 if str(getattr(config, "dtype", None)) in ("float32", "torch.float32") else 2,
        attention_bias=bool(getattr(config, "attention_bias", False)),
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
    )


def linear_shapes(s: Shape) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each nn.Linear in one decoder layer, by the names PEFT targets."""
    q, kv, h, i = s.heads * s.head_dim, s.kv_heads * s.head_dim, s.hidden, s.intermediate
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def count_params(model) -> dict[str, int]:
    """Parameters by part (embedding, attention, mlp, norms, lm_head, total), counted from the config."""
    s = shape_of(model)
    lin = linear_shapes(s)
    attention = sum(i * o + (o if s.attention_bias else 0) for n, (i, o) in lin.items() if n in ATTENTION)
    mlp = sum(i * o + (o if s.mlp_bias else 0) for n, (i, o) in lin.items() if n in MLP)
    parts = {
        "embedding": s.vocab * s.hidden,
        "attention": s.layers * attention,
        "mlp": s.layers * mlp,
        "norms": (2 * s.layers + 1) * s.hidden,  # two RMSNorms per layer + the final one, weight only
        "lm_head": 0 if s.tied else s.vocab * s.hidden,
    }
    return {**parts, "total": sum(parts.values())}


def _targets(s: Shape, target_modules) -> dict[str, tuple[int, int]]:
    lin = linear_shapes(s)
    if target_modules == "all-linear":  # PEFT: every nn.Linear except lm_head
        return lin
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    unknown = [n for n in names if n not in lin]
    if unknown:
        raise ValueError(f"target_modules {unknown} not in a Llama layer: use 'all-linear' or some of {list(lin)}")
    return {n: lin[n] for n in names}


def adapter_params(model, method="lora", r=16, target_modules="all-linear", num_virtual_tokens=20) -> int:
    """Trainable parameters of `method` (all of them for 'full'), counted from the config as PEFT builds them."""
    s = shape_of(model)
    if method == "full":
        return count_params(s)["total"]
    if method == "prompt":  # one trainable embedding per virtual token
        return num_virtual_tokens * s.hidden
    if method == "prefix":  # a key and a value per layer per virtual token; PEFT sizes them by the KV width
        return num_virtual_tokens * s.layers * 2 * s.kv_heads * s.head_dim
    if method == "adapter":  # Houlsby bottlenecks: after attention and MLP, down (r x h + r) and up (h x r + h)
        return s.layers * 2 * (2 * s.hidden * r + r + s.hidden)
    targets = _targets(s, target_modules)
    if method == "ia3":  # one scaling vector per target: output side, input side for feedforward layers
        return s.layers * sum(i if n in FEEDFORWARD else o for n, (i, o) in targets.items())
    per_layer = sum(r * (i + o) for i, o in targets.values())  # A: r x in, B: out x r
    if method == "dora":  # plus one magnitude per output row
        per_layer += sum(o for _, o in targets.values())
    return s.layers * per_layer


# ---------------------------------------------------------------------------- the hardware


@dataclass(frozen=True)
class Hardware:
    name: str
    memory: int  # bytes: GPU memory, or this machine's RAM
    tflops: float  # dense 16-bit peak, TFLOP/s (spec sheet; measured on CPU)
    precision: str  # autocast dtype: 'bf16', 'fp16' (T4) or 'fp32' (CPU without bf16)
    overhead: int  # bytes used before any tensor: CUDA context, or the python + torch process on CPU

    @property
    def is_cpu(self) -> bool:
        return self.name == "cpu"


@functools.cache
def cpu_peak_tflops(n: int = 1024) -> float:
    """This CPU's matmul peak, measured once per process: best of 5 n x n products, bf16 where supported."""
    dtype = torch.bfloat16 if cpu_has_bf16() else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: oneDNN picks its kernel on the first call
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


@functools.cache
def cpu_baseline_bytes() -> int:
    """Peak RSS of a fresh python that only imports torch, transformers and peft: a CPU run's floor (measured)."""
    code = "import torch, transformers, peft\nfrom ftlab.hardware import peak_rss\nprint(peak_rss())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def target_hardware(gpu: str = "cpu") -> Hardware:
    """The target: 'cpu' (this machine, measured) or a GPU from GPUS ('T4', 'L4', 'A100-40', 'A100-80', 'H100')."""
    if gpu.lower() == "cpu":
        return Hardware("cpu", memory_bytes(), cpu_peak_tflops(), "bf16" if cpu_has_bf16() else "fp32",
                        cpu_baseline_bytes())
    names = {k.lower(): k for k in GPUS}
    if gpu.lower() not in names:
        raise ValueError(f"gpu={gpu!r}: use 'cpu' or one of {list(GPUS)}")
    memory, tflops, precision = GPUS[names[gpu.lower()]]
    return Hardware(names[gpu.lower()], memory, tflops, precision, CUDA_CONTEXT)


# ---------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class Settings:
    """What is being estimated; the names are TRL/PEFT's."""

    method: str = "lora"
    max_length: int = 512  # tokens per sequence (padded/truncated)
    per_device_train_batch_size: int = 1  # TrainConfig / TRL name
    r: int = 16  # LoRA rank
    target_modules: str | tuple = "all-linear"
    gradient_checkpointing: bool = False  # ftlab turns it on for qlora only
    optim: str = "adamw_torch"  # TrainingArguments `optim`; config.default_optim picks it for a machine
    load_in_4bit: bool = False
    num_virtual_tokens: int = 20  # prefix / prompt tuning


@dataclass
class Estimate:
    """Bytes, FLOPs, seconds for one training step; `.table()` prints them."""

    model: str
    gpu: str
    settings: Settings
    params: int  # all parameters of the base model
    trainable: int
    weights: int  # bytes, each line below too
    adapters: int  # trainable parameters PEFT adds (fp32); 0 for full fine-tuning, whose weights are trainable
    gradients: int
    optimizer_states: int
    activations: int  # kept for backward by the decoder layers
    logits: int  # batch x seq x vocab: 16-bit output, fp32 log-probs and two fp32 gradients
    overhead: int  # CUDA context, or the python + torch process on CPU (measured)
    memory: int  # what the target has
    act_multiplier: float  # activation bytes per token per layer, as a multiple of hidden_size
    flops: float  # per optimizer step
    peak_tflops: float
    utilisation: float  # assumed fraction of the peak
    disk_adapter: int  # bytes as PEFT saves it (fp32); full fine-tuning: the fp32 checkpoint
    disk_merged: int  # base + adapter merged, 16-bit
    notes: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (self.weights + self.adapters + self.gradients + self.optimizer_states + self.activations
                + self.logits + self.overhead)

    @property
    def fits(self) -> bool:
        return self.total <= self.memory

    @property
    def seconds_per_step(self) -> float:
        return self.flops / (self.peak_tflops * 1e12 * self.utilisation)

    def table(self) -> str:
        st = self.settings
        what = st.method + (f" r={st.r}" if st.method in LORA_FAMILY else "") + (" 4-bit" if st.load_in_4bit else "")
        share = f"{100 * self.trainable / self.params:.2f}%"
        checkpointing = ", gradient checkpointing" if st.gradient_checkpointing else ""
        rows = [
            ("parameters", f"{self.params / 1e6:,.1f} M, trainable {self.trainable / 1e6:,.2f} M ({share})"),
            ("weights", fmt_bytes(self.weights)),
            ("adapters", fmt_bytes(self.adapters)),
            ("gradients", fmt_bytes(self.gradients)),
            ("optimizer states", f"{fmt_bytes(self.optimizer_states)} ({st.optim})"),
            ("activations", (f"{fmt_bytes(self.activations)} ({self.act_multiplier:.0f} x hidden bytes per token"
                             f" per layer{checkpointing})")),
            ("logits", fmt_bytes(self.logits)),
            ("overhead", fmt_bytes(self.overhead)),
            ("total", f"{fmt_bytes(self.total)} of {fmt_bytes(self.memory)}: {'fits' if self.fits else 'does NOT fit'}"),
            ("time per step", (f"{self.seconds_per_step:,.2f} s ({self.flops / 1e12:,.2f} TFLOP at "
                               f"{self.utilisation:.0%} of {self.peak_tflops:,.3g} TFLOP/s)")),
            ("adapter on disk", f"{fmt_bytes(self.disk_adapter)} (fp32; half that in 16-bit)"),
            ("merged, 16-bit", fmt_bytes(self.disk_merged)),
        ]
        lines = [f"{self.model}: {what}, batch {st.per_device_train_batch_size} x {st.max_length} tokens, "
                 f"on {self.gpu}"]
        lines += [f"{name:<18}{value}" for name, value in rows]
        lines += [f"note: {n}" for n in self.notes] + [f"to fit: {s}" for s in self.suggestions]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.table())}</pre>"


def fmt_bytes(n: float) -> str:
    """Decimal units: MB = 10^6 bytes, GB = 10^9 bytes."""
    return f"{n / GB:,.2f} GB" if n >= GB else f"{n / MB:,.1f} MB"


def estimate(model, method="lora", max_length=512, per_device_train_batch_size=1, gpu="cpu", r=16,
             target_modules="all-linear", gradient_checkpointing=None, optim=None, load_in_4bit=None,
             num_virtual_tokens=20) -> Estimate:
    """Memory, time per step and disk for fine-tuning `model` with `method` on `gpu`; print `.table()`.

    model: hub id, local folder, JSON config file, shipped shape name ('llama-3.2-1b'), dict or PretrainedConfig.
    gpu: 'cpu' (this machine: fp32 weights, bf16 autocast) or 'T4', 'L4', 'A100-40', 'A100-80', 'H100'.
    gradient_checkpointing: None follows ftlab's training default (config.resolve): on for qlora only.
    optim: a TrainingArguments `optim` name (see OPTIMIZER_BYTES); None follows ftlab's training default
        (config.default_optim: adamw_8bit on a GPU, adamw_torch on the CPU).
    load_in_4bit: None means True for 'qlora' and False otherwise.
    """
    settings = _settings(method, max_length, per_device_train_batch_size, r, target_modules,
                         gradient_checkpointing, optim, load_in_4bit, num_virtual_tokens)
    shape, hw = shape_of(model), target_hardware(gpu)
    if optim is None:  # the same choice ftlab.config.resolve makes for a training run
        settings = replace(settings, optim=default_optim(on_gpu=not hw.is_cpu))
    est = _estimate(shape, settings, hw)
    if not est.fits:
        est.suggestions = suggest(shape, settings, hw)
    return est


def _settings(method, max_length, per_device_train_batch_size, r, target_modules, gradient_checkpointing, optim,
              load_in_4bit, num_virtual_tokens) -> Settings:
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {METHODS}")
    if load_in_4bit is None:
        load_in_4bit = method == "qlora"
    if method == "qlora" and not load_in_4bit:
        raise ValueError("method='qlora' is LoRA on a 4-bit base: drop load_in_4bit=False, or use method='lora'")
    if method == "full" and load_in_4bit:
        raise ValueError("4-bit weights cannot be trained: use method='qlora' (LoRA on the 4-bit base)")
    optim = optim or default_optim(on_gpu=False)  # estimate() sets the GPU default once it knows the hardware
    if optim not in OPTIMIZER_BYTES:
        raise ValueError(f"optim={optim!r}: use one of {list(OPTIMIZER_BYTES)}")
    if gradient_checkpointing is None:  # as ftlab.config.resolve: 4-bit runs recompute activations
        gradient_checkpointing = method == "qlora"
    if not isinstance(target_modules, str):
        target_modules = tuple(target_modules)  # hashable, so Settings can be replaced and compared
    return Settings(method, max_length, per_device_train_batch_size, r, target_modules, gradient_checkpointing,
                    optim, load_in_4bit, num_virtual_tokens)


def _estimate(s: Shape, st: Settings, hw: Hardware) -> Estimate:
    params = count_params(s)
    trainable = adapter_params(s, st.method, st.r, st.target_modules, st.num_virtual_tokens)
    full = st.method == "full"
    mm = 4 if hw.precision == "fp32" else 2  # bytes of a matmul operand under autocast
    # Weights: full fine-tuning keeps fp32 master weights (mixed precision); PEFT loads fp32 on CPU,
    # 16-bit on a GPU. 4-bit quantizes the decoder's linears only; the rest (embedding, norms, lm_head)
    # stays in the checkpoint's dtype, as from_pretrained's dtype='auto' leaves it.
    other = s.checkpoint_bytes if st.load_in_4bit else 4 if full or hw.is_cpu else 2
    linear = NF4_BYTES if st.load_in_4bit else other
    n_linear = params["attention"] + params["mlp"]
    weights = round(n_linear * linear + (params["total"] - n_linear) * other)
    overhead = hw.overhead
    if hw.is_cpu and st.load_in_4bit:
        # On CPU the checkpoint stays memory-mapped (the unquantized embedding points into it), so the
        # pages read to quantize the linears stay resident: file-backed, counted in RSS
        overhead += n_linear * s.checkpoint_bytes

    virtual = st.num_virtual_tokens if st.method == "prompt" else 0
    tokens = st.per_device_train_batch_size * (st.max_length + virtual)
    activations, multiplier = _activations(s, st, tokens, mm, other, linear)
    # Logits: the 16-bit lm_head output, its fp32 log-probs (kept for backward), and two fp32 gradients
    # alive together in log_softmax's backward; autocast also keeps a 16-bit copy of an fp32 lm_head.
    logits = tokens * s.vocab * (mm + 12) + (s.vocab * s.hidden * mm if other == 4 and mm == 2 else 0)

    adapters = 0 if full else 4 * trainable  # PEFT keeps adapter weights in fp32 (autocast_adapter_dtype)
    flops = _flops(s, st, tokens, trainable)
    nf4 = " (4-bit NF4 linear layers)" if st.load_in_4bit else ""
    master = ", fp32 master weights for full fine-tuning" if full else ""
    notes = [f"{'fp32' if other == 4 else '16-bit'} weights{nf4}, {hw.precision} autocast{master}"]
    if hw.is_cpu:
        notes.append("overhead: peak RSS of `import torch, transformers, peft`, measured"
                     + (" + the checkpoint pages read to quantize (mapped file)" if st.load_in_4bit else ""))
        notes.append("this total is live tensor memory; glibc malloc keeps freed activation buffers, so peak RSS "
                     "ran 18-42% above it on three CPUs (within 10% with MALLOC_MMAP_THRESHOLD_=65536)")
    else:
        notes.append("overhead: CUDA context; activations assume a fused attention kernel (no seq x seq scores)")
    return Estimate(
        model=s.name, gpu=hw.name, settings=st, params=params["total"], trainable=trainable, weights=weights,
        adapters=adapters, gradients=4 * trainable, optimizer_states=OPTIMIZER_BYTES[st.optim] * trainable,
        activations=activations, logits=logits, overhead=overhead, memory=hw.memory, act_multiplier=multiplier,
        flops=flops, peak_tflops=hw.tflops, utilisation=UTILISATION["cpu" if hw.is_cpu else "gpu"],
        disk_adapter=4 * trainable, disk_merged=2 * params["total"], notes=notes)


def _activations(s: Shape, st: Settings, tokens: int, mm: int, other: float, linear: float) -> tuple[int, float]:
    """(bytes the decoder layers keep for backward, bytes per token per layer / hidden_size).

    Per token per layer, counted with saved-tensor hooks (SmolLM2-135M, SDPA, LoRA on all linears):
      fp32: each RMSNorm's input (2 x 4h); full fine-tuning also its output (4 x 4h in all)
      16-bit (mm bytes): q and the attention output (2q), k and v (2kv), the down_proj input (i), the
        linears' 16-bit inputs (6h with LoRA: one cast per lora_A; 5h for full), lora_A outputs (7r)
      gate, up and silu outputs (3i): 16-bit, or the residual dtype behind bitsandbytes 4-bit layers.
    With gradient checkpointing only each layer's input is kept, plus one layer recomputed in backward.
    """
    h, i = s.hidden, s.intermediate
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    mlp = other if st.load_in_4bit else mm  # bnb returns its input's dtype; autocast linears return 16-bit
    if st.method == "full":
        per_token = 4 * 4 * h + mm * (5 * h + 2 * q + 2 * kv + i) + mlp * 3 * i
    else:
        lora_out = 7 * st.r if st.method in LORA_FAMILY else 0
        per_token = 4 * 2 * h + mm * (6 * h + 2 * q + 2 * kv + i + lora_out) + mlp * 3 * i
    if st.method == "dora":  # DoRA also keeps each target's base output to rescale it by the magnitude
        per_token += mm * sum(o for _, o in _targets(s, st.target_modules).values())
    # Autocast keeps a 16-bit copy of each fp32 linear weight for the backward pass
    copies = sum(i_ * o for i_, o in linear_shapes(s).values()) * mm if linear == 4 and mm == 2 else 0
    layer = tokens * per_token + copies
    kept = s.layers * tokens * h * other + layer if st.gradient_checkpointing else s.layers * layer
    return round(kept), per_token / h


def _flops(s: Shape, st: Settings, tokens: int, trainable: int) -> float:
    """FLOPs of one step: 2N per token forward; backward 2N for input gradients (+2N weight gradients, full only)."""
    n_mm = sum(i * o for i, o in linear_shapes(s).values()) * s.layers + s.vocab * s.hidden  # lm_head even if tied
    attention = 4 * s.layers * s.heads * s.head_dim * st.max_length  # QK^T and AV per token, forward, no causal saving
    forward = 2 * n_mm + attention
    backward = 2 * n_mm * (2 if st.method == "full" else 1) + 2 * attention
    adapter = 0 if st.method == "full" else 6 * trainable
    return tokens * (forward * (2 if st.gradient_checkpointing else 1) + backward + adapter)


# ---------------------------------------------------------------------------- when it does not fit


def suggest(shape: Shape, st: Settings, hw: Hardware) -> list[str]:
    """Settings that shrink the total, each with the total it gives; all of them together when none fits alone."""
    changes = []
    if not st.load_in_4bit:
        changes.append(("method='qlora' (LoRA on a 4-bit base)", {"method": "qlora", "load_in_4bit": True})
                       if st.method == "full" else ("load_in_4bit=True", {"load_in_4bit": True}))
    if not st.gradient_checkpointing:
        changes.append(("gradient_checkpointing=True", {"gradient_checkpointing": True}))
    if st.per_device_train_batch_size > 1:
        changes.append((f"per_device_train_batch_size=1, gradient_accumulation_steps={st.per_device_train_batch_size} "
                        "(same effective batch)",
                        {"per_device_train_batch_size": 1}))
    if st.method in LORA_FAMILY and st.r > 4:
        changes.append((f"r={st.r // 2}", {"r": st.r // 2}))
    if st.method == "full" and OPTIMIZER_BYTES[st.optim] > 2:
        changes.append(("optim='adamw_8bit'", {"optim": "adamw_8bit"}))
    shorter = _shorter_max_length(shape, st, hw)
    if shorter:
        changes.append((f"max_length={shorter}", {"max_length": shorter}))

    lines, fits_any = [], False
    for label, change in changes:
        est = _estimate(shape, replace(st, **change), hw)
        fits_any |= est.fits
        lines.append(f"{label}: total {fmt_bytes(est.total)}" + ("" if est.fits else " (still too big)"))
    if changes and not fits_any:
        combined = {k: v for _, change in changes for k, v in change.items()}
        est = _estimate(shape, replace(st, **combined), hw)
        lines.append(f"all of the above: total {fmt_bytes(est.total)}" + ("" if est.fits else " (still too big)"))
    return lines


def _shorter_max_length(shape: Shape, st: Settings, hw: Hardware, shortest: int = 64) -> int | None:
    """The longest max_length/2, /4, ... (down to `shortest`) that fits; max_length/2 when none does."""
    length = st.max_length // 2
    while length >= shortest:
        if _estimate(shape, replace(st, max_length=length), hw).fits:
            return length
        length //= 2
    return st.max_length // 2 if st.max_length // 2 >= shortest else None
