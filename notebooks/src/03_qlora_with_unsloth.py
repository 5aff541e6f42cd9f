# %% [markdown]
# # 03 · QLoRA: fine-tuning on a 4-bit base (and Unsloth on a GPU)
# {badges}
#
# {runtime}
#
# **You will learn to**
# - load a model in 4-bit NF4 and measure how much memory it saves over fp32, and why not 8x;
# - look inside a 4-bit layer: packed codes, per-block scales, the 16 NF4 levels, double quantization;
# - measure the rounding error NF4 leaves in one weight matrix;
# - fine-tune the dates task with QLoRA: full-precision LoRA matrices on a frozen 4-bit base;
# - on a GPU with Unsloth, run the same job through Unsloth and compare speed and memory with plain PEFT.
#
# **Binder (2 GB) cannot run this notebook.** Measured in the small profile: the kernel peaked at
# 2,072 MB on 2026-12-01 (2,151 MB on 2026-11-22), in the QLoRA training cell. Run it on Colab or Kaggle,
# or on a machine with 3 GB.
#
# **Where the code is**: `ftlab.quant` (the NF4 config), `ftlab.models` (4-bit and Unsloth loading), `ftlab.training`. Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# - The training configs ship inside ftlab and find their data there: `load_config("dates_smoke")`.
# - `pick(small=..., full=...)` keeps the CI run (FTLAB_PROFILE=small) to a few steps; the full
#   profile is the real lesson.

# %%
import os

from ftlab.course import pick, profile

print("profile:", profile(), "| runs written to", os.getcwd())

# %% [markdown]
# **Memory: fp32 vs 4-bit**
# - The same model loaded twice: fp32 (4 bytes per weight, what CPU training holds) and 4-bit NF4
#   (`load_in_4bit=True`; the `BitsAndBytesConfig` comes from `ftlab.quant.nf4_config`, printed below).
# - `get_memory_footprint()` adds up the bytes of every parameter and buffer.

# %%
import torch

from ftlab import load_model
from ftlab.quant import nf4_config

print(nf4_config())
model32, tokenizer = load_model(dtype=torch.float32, backend="transformers", verbose=False)  # fp32 on a GPU too
model4, _ = load_model(load_in_4bit=True)
fp32_mb = model32.get_memory_footprint() / 2**20
nf4_mb = model4.get_memory_footprint() / 2**20
print(f"fp32: {fp32_mb:.0f} MB | 4-bit NF4: {nf4_mb:.0f} MB = {nf4_mb / fp32_mb:.0%} of fp32")

# %% [markdown]
# - Why not 1/8? Only the linear layers of the decoder are quantized. The token embedding (49,152 x 576,
#   shared with the output head), the output head when it is not shared, and the norms stay in 16 or 32 bits.
# - How much that matters depends on the vocabulary, not only the size: the cell counts it from each
#   model's config (`ftlab.estimation.count_params`), against a 16-bit checkpoint as a GPU loads it.

# %%
from ftlab.estimation import NF4_BYTES, count_params

for shape in ["smollm2-135m", "llama-3.2-1b", "llama-2-7b", "llama-3.1-8b"]:
    n = count_params(shape)
    kept = n["embedding"] + n["lm_head"] + n["norms"]  # not quantized
    nf4 = (n["total"] - kept) * NF4_BYTES + kept * 2  # bytes: 4-bit linears + 16-bit rest
    print(f"{shape:>13}: {n['total'] / 1e9:5.2f} B weights, {kept / n['total']:5.1%} not quantized, "
          f"4-bit = {nf4 / (2 * n['total']):.0%} of 16-bit (all quantized: {NF4_BYTES / 2:.0%})")

# %% [markdown]
# - Llama-2-7B (32k vocabulary) gets close to the floor; Llama-3.1-8B's 128k vocabulary and untied output
#   head keep about an eighth of its weights in 16 bits, so its 4-bit copy is well above it.

# %%
import pandas as pd

kinds = {}
for name, p in model4.named_parameters():
    is_4bit = type(p).__name__ == "Params4bit"
    kind = "4-bit (linear layers)" if is_4bit else f"kept {p.dtype} (embedding, norms)"
    n_bytes, n_weights = kinds.get(kind, (0, 0))
    n_weights += p.numel() * (2 if is_4bit else 1)  # two 4-bit codes per stored byte
    kinds[kind] = (n_bytes + p.numel() * p.element_size(), n_weights)
pd.DataFrame([{"part": k, "weights (M)": w / 1e6, "MB": b / 2**20} for k, (b, w) in kinds.items()]).round(1)

# %% [markdown]
# **Inside one 4-bit layer**
# - A `Linear4bit` stores its weight as bytes (two 4-bit codes each), flattened.
# - Every block of 64 consecutive weights shares one scale (`absmax`, the block's largest |w|): a code
#   picks one of 16 levels in [-1, 1] and the weight is `level x absmax`.
# - The NF4 levels are quantiles of a normal distribution: dense near 0, where most weights are.
# - Double quantization stores the scales themselves in 8 bits (with a second, coarser set of fp32
#   scales, `state2`): `nested=True` below.

# %%
layer4 = model4.model.layers[0].mlp.down_proj
layer32 = model32.model.layers[0].mlp.down_proj
state = layer4.weight.quant_state
print(layer4)
print(f"stored {layer4.weight.dtype} {tuple(layer4.weight.shape)} -> encodes a {tuple(state.shape)} matrix")
print(f"blocks of {state.blocksize} | scales: {state.absmax.dtype} x {state.absmax.numel()} | "
      f"double quant (nested): {state.nested}")
print("NF4 levels:", [round(v, 3) for v in state.code.tolist()])

# %% [markdown]
# - Bits per weight, counted from what this layer stores: 4 for the code, plus the scales.
# - Without double quantization each block of 64 has an fp32 scale: 32/64 = 0.5 bits per weight.
#   With it: 8/64 for the 8-bit scale, plus one fp32 scale per 256 blocks. On a 7B model the
#   difference is ~0.37 bits x 7e9 = ~320 MB.

# %%
n = state.shape.numel()  # weights this layer encodes
bits_codes = layer4.weight.numel() * 8 / n
bits_scales = (state.absmax.numel() * state.absmax.element_size() + state.state2.absmax.numel() * 4) * 8 / n
bits_plain = 32 / state.blocksize  # one fp32 absmax per block, without double quantization
print(f"codes {bits_codes:.2f} + scales {bits_scales:.3f} = {bits_codes + bits_scales:.3f} bits/weight "
      f"(without double quant: {bits_codes + bits_plain:.3f})")
print(f"double quant saves {(bits_plain - bits_scales) / 8 * 7e9 / 2**20:.0f} MB on a 7B model")

# %% [markdown]
# **How much does NF4 round away?**
# - `ftlab.merge.dequantize` turns a 4-bit layer back into a plain `nn.Linear` (the weights QLoRA
#   actually trains against). Compare with the fp32 original.
# - The histogram: each block's weights divided by its absmax, with the 16 NF4 levels as lines. Every
#   weight is rounded to its nearest line.

# %%
import matplotlib.pyplot as plt
import torch

from ftlab.merge import dequantize

w32 = layer32.weight.detach()  # (576, 1536) fp32
w4 = dequantize(torch.nn.Sequential(layer4))[0].weight.detach()  # the NF4 values; layer4 itself is untouched
err = w4 - w32
rel_err = (err.norm() / w32.norm()).item()
print(f"relative error |W4 - W| / |W| = {rel_err:.3f} | mean |error| {err.abs().mean():.2e} "
      f"vs mean |w| {w32.abs().mean():.2e}")

blocks = w32.flatten().reshape(-1, state.blocksize)  # (n_blocks, 64): a block shares one scale
scaled = blocks / blocks.abs().amax(dim=1, keepdim=True)  # in [-1, 1], what the code rounds
fig, ax = plt.subplots(figsize=(8, 2.5))
ax.hist(scaled.flatten().cpu().numpy(), bins=300, color="0.6")  # on the CPU for matplotlib, wherever the model is
for level in state.code.tolist():
    ax.axvline(level, color="C1", lw=0.8)
ax.set(xlabel="weight / block absmax", ylabel="weights", title="layer 0 down_proj and the 16 NF4 levels")
plt.show()

# %% [markdown]
# **A caveat about this course's offline model**
# - Offline, the "fp32" model was built from a `Q4_1` GGUF: its weights were already rounded to 16
#   evenly spaced levels per block of 32 before NF4 saw them. The first line below counts the distinct
#   values in blocks of 32: at most 16 means the grid is there (unrounded weights can have 32).
# - So the error above measures re-quantizing rounded weights. The second line quantizes fresh Gaussian
#   weights of the same shape and spread with the same NF4 call (`bitsandbytes.functional.quantize_4bit`),
#   which is what NF4 meets in a model that was never quantized.

# %%
import bitsandbytes.functional as bnb_functional

per_block = torch.tensor([b.unique().numel() for b in w32.flatten().reshape(-1, 32)[:2000]])
print(f"distinct values per block of 32 (first 2,000 blocks): at most {per_block.max()}, median {per_block.median():.0f}")
fresh = torch.randn_like(w32) * w32.std()
codes, fresh_state = bnb_functional.quantize_4bit(fresh, blocksize=state.blocksize, quant_type="nf4")
fresh_err = ((bnb_functional.dequantize_4bit(codes, fresh_state) - fresh).norm() / fresh.norm()).item()
print(f"NF4 relative error: this layer {rel_err:.3f} | fresh Gaussian weights, same shape and spread {fresh_err:.3f}")

# %% [markdown]
# **QLoRA: LoRA on the frozen 4-bit base**
# - `method=qlora` loads the base in 4-bit and trains LoRA matrices in full precision beside it. The
#   4-bit weights never change: gradients flow through them (dequantized on the fly) into A and B.
# - `backend=transformers` is PEFT + bitsandbytes, the path that runs anywhere, this CPU included.
#   The Unsloth cell further down runs the same job with `backend=unsloth`.
# - Gradient checkpointing turns on by itself for QLoRA (memory is why one picks 4-bit).

# %%
from ftlab.hardware import release_memory

del model32, model4, layer32, layer4  # free both models: train() loads its own 4-bit copy
release_memory()  # and hand their memory back: gc alone left ~160 MB more with the kernel
if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()  # peak_memory_mb below counts this run only, not the models above

from ftlab.config import load_config
from ftlab.training import train

val_rows = pick(small=16, full=100)  # validation rows for the loss before/after
overrides = ["method=qlora", "backend=transformers", "output_dir=runs/03_qlora", "eval_file=null",
             f"max_steps={pick(small=4, full=60)}", f"test_limit={pick(small=8, full=100)}",
             "max_length=128", "eval_steps=1000", "save_steps=1000"]
cfg = load_config("dates_smoke", overrides)
qlora = train(cfg)
qlora.model.print_trainable_parameters()
print(qlora.model.base_model.model.model.layers[0].mlp.down_proj)  # a LoRA layer wrapping a Linear4bit

# %% [markdown]
# - The loss on validation rows the run never saw, with the adapter switched off (the 4-bit base)
#   and on. `ftlab.merge.disabled` is PEFT's `disable_adapter()`.
# - The report's exact match compares base and tuned on test rows (few rows in the small profile).

# %%
from ftlab.evaluation import eval_loss
from ftlab.merge import disabled
from ftlab.report import accuracy_line
from ftlab.tasks import load_split

rows = load_split("dates", "validation")[:val_rows]
with disabled(qlora.model):
    base_loss = eval_loss(qlora.model, qlora.tokenizer, rows)["loss"]
tuned_loss = eval_loss(qlora.model, qlora.tokenizer, rows)["loss"]
m = qlora.metrics
print(f"validation loss: 4-bit base {base_loss:.3f} -> QLoRA {tuned_loss:.3f} ({len(rows)} rows)")
print(f"train loss by step: {[round(h['loss'], 3) for h in qlora.history if 'loss' in h]}")
print(accuracy_line(m))
print(f"{m['train_time_s']:.0f} s training, {m['tokens_per_s']:.0f} tokens/s, "
      f"peak memory {m['peak_memory_mb']:.0f} MB")

# %% [markdown]
# **Unsloth on a GPU**
# - Unsloth rewrites the model's attention, MLP and loss with fused Triton kernels and its own
#   gradient checkpointing. Unsloth's own benchmarks report about 2x the speed and less memory on
#   7B-class models at long sequences; that is their figure, not this course's.
# - On a 135M model at 128 tokens for a few steps, fixed costs (compiling kernels, the first steps)
#   weigh far more: read the table below as this job's figures, not as a measure of that claim.
# - It needs a CUDA GPU. Here the cell runs the identical config with `backend=unsloth` and puts both
#   runs side by side; on a CPU (or without `pip install 'ftlab[unsloth]'`) it says so and skips.
# - Once imported, Unsloth patches transformers, PEFT and TRL for the whole process, and it asks to be
#   imported before them: on a GPU where it is installed, `import ftlab` imports it first (in your own
#   code, put `import unsloth` above `import transformers`). So in one kernel the PEFT row also ran
#   patched; for a plain PEFT run, start a fresh process with `FTLAB_UNSLOTH=0`
#   (`!FTLAB_UNSLOTH=0 ftlab train ...`), which keeps Unsloth out of it.

# %%
from ftlab.hardware import choose_backend

columns = ["train_time_s", "tokens_per_s", "peak_memory_mb", "final_train_loss"]
runs = {"PEFT + bitsandbytes": qlora.metrics}
backend, why = choose_backend("auto")
if backend == "unsloth":
    del qlora
    release_memory()
    torch.cuda.reset_peak_memory_stats()
    fast = train(load_config("dates_smoke", overrides + ["backend=unsloth",
                                                                      "output_dir=runs/03_qlora_unsloth"]))
    runs["Unsloth"] = fast.metrics
else:
    print(f"Unsloth comparison skipped: {why}. This notebook trained QLoRA with PEFT + bitsandbytes above.")
pd.DataFrame({name: {c: metrics[c] for c in columns} for name, metrics in runs.items()}).T.round(3)

# %% [markdown]
# **What to take away**
# - 4-bit NF4 keeps under a third of the fp32 footprint here (the embedding stays fp32), and ~4.1 bits
#   per weight in the quantized layers; the rounding error is a few percent of each weight matrix.
# - QLoRA trains only the LoRA matrices, in full precision; the base never changes, so the 4-bit
#   error is the same before and after: the adapter learns around it.
#
# **Exercise** (pick a level)
# - *Easy*: compare the relative error of other layers (`q_proj`, `o_proj`, a later layer). Which
#   kind of layer does NF4 round worst?
# - *Medium*: quantize `w32` yourself with 16 *evenly spaced* levels per block of 64 (absmax scaling)
#   and compare its relative error with NF4's: the checked exercise below.
# - *Hard*: train with `method=lora` on the fp32 base with the same overrides and compare the loss
#   and exact match with QLoRA. How much quality does the 4-bit base cost on this task?

# %% [markdown] tags=["exercise"]
# **Checked exercise** (the medium level): write `uniform_4bit(w, block)`. Take `w.flatten()` in blocks of
# `block` weights. Divide each block by its largest absolute value, round every weight to the nearest of
# 16 *evenly spaced* levels in [-1, 1], and scale back. Return the rounded weights in `w`'s shape. The
# check runs it on Gaussian weights against the definition, and prints its error beside NF4's (bitsandbytes)
# on the same weights. The cell after it compares the two on this layer.

# %% tags=["exercise"]
def uniform_4bit(w, block=64):
    """w rounded block by block to 16 evenly spaced levels times the block's absmax; same shape as w."""
    return None  # your code here


# %% tags=["solution"]
import torch


def uniform_4bit(w, block=64):
    """w rounded block by block to 16 evenly spaced levels times the block's absmax; same shape as w."""
    blocks = w.flatten().reshape(-1, block)  # (n_blocks, block)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    levels = torch.linspace(-1, 1, 16, device=w.device, dtype=w.dtype)
    nearest = (blocks / absmax).unsqueeze(-1).sub(levels).abs().argmin(-1)  # (n_blocks, block): level index
    return (levels[nearest] * absmax).reshape(w.shape)


# %% tags=["check"]
from ftlab.exercises import check_uniform_4bit

check_uniform_4bit(uniform_4bit)

# %%
# Your uniform levels against NF4 on this layer, once your function passes its check
if check_uniform_4bit(uniform_4bit):
    uniform_err = ((uniform_4bit(w32, state.blocksize) - w32).norm() / w32.norm()).item()
    print(f"relative error on layer 0 down_proj: uniform 4-bit {uniform_err:.3f} vs NF4 {rel_err:.3f}")
else:
    print("uniform_4bit does not pass its check yet: the comparison with NF4 waits for it")

# %% [markdown]
# **Questions**
# 1. Why does QLoRA keep the LoRA matrices in 16/32-bit instead of 4-bit?
# 2. The 4-bit model took ~30% of fp32 memory here, not 12.5%. Which part would you quantize next,
#    and why do libraries usually leave it alone?
# 3. After QLoRA, merging the adapter into the 4-bit weights is refused by `ftlab.merge.merge`. Why?
# 4. When is plain LoRA on a 16-bit base the better choice than QLoRA?
#
# <details><summary>Answers</summary>
#
# 1. Training moves weights by small steps. On a grid of 16 levels per block, most steps would round back to
#    where they started, and the optimizer's states need precision too. The LoRA matrices are a few
#    percent of the weights, so keeping them in 16/32 bits costs little memory.
# 2. What stays unquantized: the embedding (tied to the output layer here), the norms and the LoRA matrices.
#    With a 49k vocabulary on a 135M model the embedding is a large share. Libraries leave the embedding and
#    output layer alone because every logit passes through the output layer, so its errors reach every
#    token. The embedding is a lookup: no matmul to speed up. On large models it is a few percent.
# 3. The adapter learned its update against the NF4 values, not the original weights. Adding it to 4-bit
#    storage would mean re-rounding `W4 + B A` to 16 levels per block, which loses most of the small update.
#    The fix: dequantize the base, then merge in 16/32 bits (`ftlab.merge` does this for QLoRA adapters).
# 4. When the 16-bit base fits in memory. Then there is no quantization error, steps are faster (no
#    dequantizing in every matmul), and the merged model is the model that was trained.
#
# </details>

# %%
# The lesson's own check: 4-bit really is small, NF4 really rounds, and QLoRA really learned.
assert nf4_mb < 0.4 * fp32_mb, (nf4_mb, fp32_mb)
assert 0.01 < rel_err < 0.2, rel_err
assert tuned_loss < base_loss, (base_loss, tuned_loss)
peft_run = runs["PEFT + bitsandbytes"]
assert peft_run["method"] == "qlora" and peft_run["steps"] == cfg.max_steps, peft_run
print("notebook check passed")
