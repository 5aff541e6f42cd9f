# %% [markdown]
# # 02 · LoRA: train a few percent of the weights
# {badges}
#
# {runtime}
#
# **You will learn to**
# - write LoRA's forward pass in three lines of torch and check it against PEFT's layer;
# - count what LoRA trains for a given rank and set of target layers;
# - fine-tune SmolLM2 on the dates task with a hyperparameter panel and a live loss curve;
# - measure the result: exact match of the base model against the tuned one on held-out prompts.
#
# **Where the code is**: `ftlab.adapters` (LoRA and the other PEFT methods), `ftlab.training` (the recipe), `ftlab.panels`, `ftlab.monitor`. Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# ## The idea on one layer
# - A linear layer computes `W x` with `W` of shape (d_out, d_in). Fine-tuning changes `W` to `W + ΔW`.
# - LoRA keeps `W` frozen and learns `ΔW = B A`, with `A` (r, d_in) and `B` (d_out, r) for a small rank r,
#   scaled by `alpha / r`: `y = W x + (alpha / r) * B (A x)`.
# - `add_adapter` (what `ftlab.training` calls) wraps the chosen layers in PEFT's LoRA layers. Here one
#   layer, `q_proj` of the first block, rank 8.

# %%
import torch

from ftlab import load_model
from ftlab.adapters import add_adapter, trainable_parameters
from ftlab.config import TrainConfig

model, tokenizer = load_model()
n_base = sum(p.numel() for p in model.parameters())  # 134.5M (the embedding is shared with the output layer)
one_layer = TrainConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj"], backend="transformers")
peft_model = add_adapter(model, one_layer)  # a real peft.PeftModel
layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
print(layer)

# %% [markdown]
# - PEFT starts `B` at zero, so the adapted model is exactly the base model before training. To make the
#   check below mean something, give `B` random values first (training would move it anyway).
# - Then LoRA by hand, from the layer's own tensors, against the layer's forward pass.

# %%
torch.manual_seed(0)
with torch.no_grad():
    layer.lora_B["default"].weight.normal_(std=0.02)

W = layer.base_layer.weight  # (576, 576): frozen
A = layer.lora_A["default"].weight  # (8, 576): trained
B = layer.lora_B["default"].weight  # (576, 8): trained
scale = one_layer.lora_alpha / one_layer.r  # 16 / 8 = 2
x = torch.randn(4, 576, device=W.device, dtype=W.dtype)  # 4 token vectors of the hidden size, where W is

with torch.no_grad():
    xf = x.float()  # by hand in fp32, whatever the base's dtype (fp32 on a CPU, 16-bit on a GPU)
    by_hand = xf @ W.float().T + scale * (xf @ A.float().T) @ B.float().T
    by_peft = layer(x).float()
tol = 1e-5 if W.dtype == torch.float32 else 3e-2  # a 16-bit base rounds each output to ~3 significant digits
print("LoRA by hand == PEFT:", torch.allclose(by_hand, by_peft, atol=tol, rtol=tol),
      f"(max difference {(by_hand - by_peft).abs().max():.1e}; base in {W.dtype}, tolerance {tol:g})")
print(f"W has {W.numel():,} weights; A and B together {A.numel() + B.numel():,}")

# %% [markdown]
# ## What LoRA trains
# - Each adapted layer adds `r * (d_in + d_out)` parameters. The more layers you target and the higher
#   the rank, the more capacity (and memory, and risk of overfitting a small dataset).
# - The count by hand is checked against PEFT's own count for the one-layer adapter above (30 blocks
#   each have a `q_proj`).

# %%
def lora_parameters(model, r, targets):
    """r * (d_in + d_out) summed over the linear layers named in `targets` (also once PEFT has wrapped them)."""
    total = 0
    for name, module in model.named_modules():
        linear = getattr(module, "base_layer", module)  # PEFT's LoRA layer keeps the original as .base_layer
        if isinstance(linear, torch.nn.Linear) and name.split(".")[-1] in targets:
            total += r * (linear.in_features + linear.out_features)
    return total


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
print(f"q_proj only, r=8: by hand {lora_parameters(peft_model, 8, ['q_proj']):,}, "
      f"PEFT {trainable_parameters(peft_model)[0]:,}")
for name, targets in (("q_proj+v_proj", ["q_proj", "v_proj"]), ("all-linear", ALL_LINEAR)):
    for r in (4, 8, 16, 64):
        n = lora_parameters(peft_model, r, targets)
        print(f"{name:<14} r={r:<3} {n:>10,} trainable ({100 * n / n_base:.2f}% of {n_base / 1e6:.1f}M)")
del model, peft_model, layer  # free the memory before training loads its own copy

# %% [markdown]
# ## The training settings, before the config that uses them
# - **Learning rate**: how far each optimizer step moves the weights. LoRA adapters start at zero and are
#   small, so they take rates 10x those of full fine-tuning: 1e-4 to 5e-4 is usual, 1e-3 for a very short run.
# - **Warm-up** (`warmup_ratio`): the first steps ramp the rate up from 0, so that AdamW's running
#   estimates settle before big steps. 0.03 to 0.1 of the run is common.
# - **Schedule** (`lr_scheduler_type`): after warm-up the rate decays, linearly or along a cosine, to 0
#   at the last step; `constant` keeps it.
# - **Effective batch**: `per_device_train_batch_size x gradient_accumulation_steps x processes` examples
#   per optimizer step. Accumulation sums the gradients of several micro-batches before a step: the same
#   step as one big batch, in the memory of a small one. Keep the effective batch when you change either.
# - The cell prints the schedule these settings give: the rate at every step of the run below.

# %%
import math

from transformers import get_scheduler

from ftlab.course import pick

steps, lr, warmup = pick(small=16, full=150), pick(small=1e-3, full=5e-4), 0.1  # the config below uses these
probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
kind = TrainConfig().lr_scheduler_type  # ftlab's default, as TRL builds it
schedule = get_scheduler(kind, probe, num_warmup_steps=math.ceil(warmup * steps), num_training_steps=steps)
rates = []
for _ in range(steps):
    rates.append(probe.param_groups[0]["lr"])
    probe.step()
    schedule.step()
print(f"learning rate per step ({kind}, warm-up {warmup:.0%}):", [f"{r:.1e}" for r in rates])
print("effective batch:", 2 * 4 * 1, "= per_device_train_batch_size 2 x gradient_accumulation_steps 4 x 1 process")

# %% [markdown]
# ## Fine-tune with the panel
# - The panel edits the usual `TrainConfig` fields (the same names as TRL's `SFTConfig`). `Estimate`
#   prints memory and time per step for this machine; `Train` runs `ftlab.training.train` with the panel's
#   live loss plot as a callback. Every field the panel does not show comes from `cfg`.
# - In the small profile (CI) the run is short: a high learning rate for LoRA (1e-3) and 16 steps of 8
#   chats. Micro-batches of 2 (accumulated to 8) and gradient checkpointing keep it near 2 GB of memory.

# %%
from IPython.display import display

from ftlab.course import pick
from ftlab.panels import hyperparameter_panel
from ftlab.tasks import DATA_DIR

cfg = TrainConfig(
    train_file=str(DATA_DIR / "dates" / "train.jsonl"),  # 2000 chats, one date each
    test_file=str(DATA_DIR / "dates" / "validation.jsonl"),  # tuning reads validation, never test
    test_limit=pick(small=20, full=100),  # rows scored after training: fewer is faster and noisier
    output_dir="runs/02_lora",  # adapter, metrics, loss curve, report
    r=8, lora_alpha=16,  # scale alpha/r = 2; rank 8 is plenty for one narrow task
    target_modules="all-linear",  # every linear layer of every block (lm_head excluded)
    learning_rate=lr,  # high for LoRA: fine for a short run on a narrow task
    max_steps=steps,  # optimizer steps; x 8 chats each
    per_device_train_batch_size=2, gradient_accumulation_steps=4,  # 8 chats per step, 2 at a time in memory
    gradient_checkpointing=True,  # recompute activations in backward: one more forward per step, less memory
    max_length=128,  # the longest chat is ~90 tokens
    warmup_ratio=warmup, logging_steps=2, save_steps=1000,  # no checkpoints: a short run
)
panel = hyperparameter_panel(cfg)
display(panel)

# %% [markdown]
# - `panel.estimate()` is what the Estimate button calls: the memory table for the current values.
#   Change the rank or the batch size in the panel and press Estimate to see what moves.

# %%
panel.estimate()

# %% [markdown]
# **What ftlab hands to TRL**
# - `train` turns the config into TRL's own `SFTConfig` (`ftlab.training.trainer_args`) and trains with
#   TRL's `SFTTrainer`: the same objects every TRL, axolotl or Unsloth recipe builds. Here is that
#   `SFTConfig` for the panel's current values, built the way `train` builds it:

# %%
from ftlab.config import resolve
from ftlab.hardware import choose_precision
from ftlab.training import trainer_args

sft_config = trainer_args(resolve(panel.config), choose_precision(bf16=panel.config.bf16))
print(f"{type(sft_config).__module__}.{type(sft_config).__name__}")
for key in ("learning_rate", "lr_scheduler_type", "warmup_steps", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_length", "optim", "bf16", "fp16", "train_sampling_strategy"):
    print(f"  {key} = {getattr(sft_config, key)!r}")

# %% [markdown]
# - `panel.train()` is what the Train button calls. Running it here trains now; watch the loss curve in
#   the panel above. `panel.config` is the exact config it used: print it, save it, reuse it.

# %%
print(panel.config)
result = panel.train()

# %% [markdown]
# **Reading the loss curve**
# - A healthy curve falls fast in the first steps (the format is learned), then flattens; eval loss
#   follows it. Warning signs: a loss that never falls (learning rate too low, or every label masked),
#   spikes (rate too high), eval loss rising while train loss falls (over-fitting: stop earlier).
# - `ftlab.monitor.diagnose` reads those signs off the logged curves; the run report quotes it. Here
#   on this run, then on a made-up curve with a spike:

# %%
from ftlab.monitor import diagnose

print("this run:", diagnose(result.history) or "nothing looks wrong")
spiky = [{"step": i, "loss": v} for i, v in enumerate([2.0, 1.5, 1.2, 1.0, 0.9, 4.0, 0.8, 0.7], start=1)]
print("a spike:", diagnose(spiky))

# %% [markdown]
# ## Did it learn?
# - `train` scored the validation prompts before (adapter disabled) and after, with 95% intervals: with
#   20 rows (the small profile) an interval spans about 40 points, so read the figure as rough. The test
#   split stays untouched until the end of the lesson. A few answers side by side:

# %%
import pandas as pd

from ftlab.report import accuracy_line

print(f"trained by {type(result.trainer).__module__}.{type(result.trainer).__name__} "
      f"with {type(result.trainer.args).__name__}")
m = result.metrics
print(accuracy_line(m))
print(f"trainable {m['trainable_params']:,} of {m['total_params']:,} parameters, {m['train_time_s']:.0f} s, "
      f"final train loss {m['final_train_loss']:.3f}")
pd.DataFrame(m["samples"])

# %% [markdown]
# - The same comparison on any prompt, with the generation panel: one PeftModel answers twice, once with
#   the adapter disabled (`False`) and once with it on.

# %%
from ftlab.panels import generation_panel

compare = generation_panel({"base": (result.model, result.tokenizer, False),
                            "tuned": (result.model, result.tokenizer, "default")}, max_new_tokens=24)
compare.generate("Rewrite this date as YYYY-MM-DD.\nDate: Sunday, the 4th of July, 1976")
display(compare)

# %% [markdown]
# **Rank, alpha, targets**
# - `r`: capacity of the update. A narrow task like this one learns at r=4..8; broad instruction tuning
#   uses 16..64. Higher r costs parameters (table above) and a little memory.
# - `lora_alpha`: the update is scaled by alpha/r. Keep alpha/r fixed (e.g. alpha = 2r) when you change r,
#   or the effective learning rate changes too. rsLoRA (`method="rslora"`) scales by alpha/sqrt(r).
# - `target_modules`: `all-linear` learns best for its cost in most reports; attention-only (`q_proj`,
#   `v_proj`, the original LoRA paper's choice) trains ~5x fewer parameters.
#
# **Exercise** (pick a level)
# - *Easy*: in the panel, set r=64 and press Estimate; then batch size 32. What grows, and by how much?
# - *Medium*: train again with `target_modules` = q_proj and v_proj only (the panel's list) and the
#   same steps. Compare the trainable parameters and the exact match.
# - *Hard*: find the fewest steps that still reach 50% exact match on the validation split at learning
#   rate 1e-3, then at 2e-4 (the panel scores validation). Which runs would you trust, given the intervals
#   the panel prints beside each figure?

# %%
# Exercise default (easy): the same estimate at a higher rank and a bigger batch, from code.
big = panel.set(r=64, per_device_train_batch_size=32).estimate()
panel.set(r=cfg.r, per_device_train_batch_size=cfg.per_device_train_batch_size)  # back to the trained values
print(big.table())

# %% [markdown] tags=["exercise"]
# **Checked exercise**: rsLoRA (`method=rslora`, in notebook 07's table) changes one thing in LoRA's
# forward pass. It scales the update by `alpha / sqrt(r)` instead of `alpha / r`, so that high ranks keep
# learning. Write its forward pass, `W x + scale * B A x`, for a batch of rows `x`. The check builds a
# real PEFT rsLoRA layer, gives you its `W`, `A` and `B`, and compares your output with the layer's.

# %% tags=["exercise"]
def rslora_forward(x, W, A, B, alpha, r):
    """x: (batch, d_in); W: (d_out, d_in); A: (r, d_in); B: (d_out, r) -> (batch, d_out)."""
    return None  # your code here


# %% tags=["solution"]
def rslora_forward(x, W, A, B, alpha, r):
    """x: (batch, d_in); W: (d_out, d_in); A: (r, d_in); B: (d_out, r) -> (batch, d_out)."""
    return x @ W.T + alpha / r**0.5 * (x @ A.T @ B.T)


# %% tags=["check"]
from ftlab.exercises import check_rslora_forward

check_rslora_forward(rslora_forward)

# %% [markdown]
# **Questions**
# 1. Why does PEFT start `B` at zero and `A` at random values, rather than both at random (or both zero)?
# 2. After training, how would you fold `B A` back into `W` so inference costs nothing extra? (Notebook 04.)
# 3. The loss curve falls within a few steps. Why is exact match on held-out prompts still the number to
#    trust, not the training loss?
#
# <details><summary>Answers</summary>
#
# 1. With `B = 0` the update `B A` is zero, so training starts from exactly the base model. A random `A`
#    still gives `B` a gradient from the first step. If both were zero, each one's gradient would be
#    multiplied by the other, which is zero, and nothing would ever train. If both were random, step 0
#    would add a random perturbation to every adapted layer.
# 2. Compute `W' = W + (alpha / r) B A` once, in fp32, and drop the adapter (`ftlab.merge.merge`, PEFT's
#    `merge_and_unload`). `W'` has the shape of `W`, so inference runs exactly as on the base.
# 3. The training loss is measured on rows the model is fitting, with the reference answer fed in token by
#    token. It falls as soon as the format tokens are right, even while some digits are still wrong.
#    Exact match on held-out prompts measures what you need: whole answers, generated greedily, right on
#    inputs the model has not seen.
#
# </details>

# %% [markdown]
# **The test split, once**
# - Every choice above (steps, rank, learning rate) was read off the validation split. Scoring the test
#   split after each try would tune on it too, and its figure would stop meaning "unseen". Now that the
#   lesson's settings are fixed, score it once:

# %%
from ftlab import evaluate
from ftlab.evaluation import wilson
from ftlab.tasks import load_split

final_rows = load_split("dates", "test")[:pick(small=20, full=100)]
final, _ = evaluate({"tuned": (result.model.eval(), result.tokenizer)}, final_rows, metrics=("exact_match",))
share = float(final.loc["tuned", "exact_match"])
low, high = wilson(round(share * len(final_rows)), len(final_rows))
print(f"test split, scored once: tuned {share:.0%} [{low:.0%}, {high:.0%}] (n={len(final_rows)}, Wilson 95%)")

# %%
# The lesson's own check: LoRA by hand equals PEFT's layer, the counts agree, and the tuned model beats the base.
assert torch.allclose(by_hand, by_peft, atol=tol, rtol=tol)
assert lora_parameters(result.model, cfg.r, ALL_LINEAR) == m["trainable_params"]
losses = [h["loss"] for h in result.history if "loss" in h]
assert losses[-1] < losses[0], losses
assert m["tuned_exact_match"] > m["base_exact_match"], (m["base_exact_match"], m["tuned_exact_match"])
print(f"notebook check passed: exact match {m['base_exact_match']:.0%} -> {m['tuned_exact_match']:.0%}")
