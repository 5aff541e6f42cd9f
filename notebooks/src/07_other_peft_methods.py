# %% [markdown]
# # 07 · Beyond LoRA: IA3, prefix and prompt tuning, adapter layers, DoRA, full fine-tuning; continued pretraining
# {badges}
#
# {runtime}
#
# **You will learn to**
# - name what each method trains: virtual tokens, per-layer vectors, low-rank matrices, or everything;
# - run them all on the same task with the same step budget, changing one config key (`method=`);
# - compare trainable parameters, peak memory, time, eval loss and exact match in one table;
# - pick a method for a job from those numbers;
# - see, by timing generation, why LoRA displaced the adapter layers it came after;
# - adapt a model to raw text (continued pretraining) and read the perplexity before and after.
#
# **Binder (2 GB) may not run this notebook.** Measured in the small profile on 2026-11-22: 2,743 MB
# with full fine-tuning. Under 3 GB the notebook leaves full fine-tuning out; that mode's peak is not
# measured yet. Colab, Kaggle or a machine with 4 GB run all of it.
#
# **Where the code is**: `ftlab.adapters` (every method's PEFT config), `ftlab.bottleneck` (adapter layers), `ftlab.training`, `ftlab.hardware` (peak memory). Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# - Data and configs ship inside ftlab: `load_config("dates_smoke")` names a shipped config, and the run
#   folders (`runs/...`) are written beside this notebook.
# - `pick(small=..., full=...)`: a few steps in CI (FTLAB_PROFILE=small), the real comparison otherwise.

# %%
import os

from ftlab.course import pick, profile
from ftlab.shipped import data_dir

DATA_DIR = data_dir()  # the course data, shipped inside the package
print("profile:", profile(), "| data in", DATA_DIR, "| runs written to", os.getcwd())

# %% [markdown]
# **The methods, from fewest trained weights to all of them**
# - `prompt`: prompt tuning, 20 trained input embeddings ("virtual tokens") before every prompt.
# - `prefix`: prefix tuning, 20 trained key/value vectors in *every* attention layer.
# - `ia3`: one trained scaling vector per targeted layer, multiplying its activations.
# - `adapter`: adapter layers (Houlsby et al. 2019), the first PEFT method: a small block
#   h -> h + up(gelu(down(h))) after the attention and the MLP of every layer, `r` wide (8 here), starting as
#   the identity. PEFT has none, so ftlab holds one (`ftlab.bottleneck`, 150 lines: read it with `??`).
# - `lora`: low-rank matrices B x A added to every linear layer (notebooks 01-02).
# - `dora`: LoRA that learns each weight column's magnitude and direction apart.
# - `full`: every weight of the model trains.
# - Each gets a learning rate that suits it: few trained weights tolerate (and need) larger steps.
# - Under 3 GB of memory (Binder gives 2 GB) the full fine-tuning run is left out, and the cell says so.

# %%
import json
from pathlib import Path

from ftlab.config import load_config
from ftlab.hardware import memory_bytes
from ftlab.tasks import load_split

METHODS = ["prompt", "prefix", "ia3", "adapter", "lora", "dora", "full"]
if memory_bytes() < 3 * 2**30:  # Binder gives 2 GB; full FT alone holds 1.1 GB of fp32 weights + gradients
    METHODS.remove("full")
    print(f"this machine gives {memory_bytes() / 2**30:.1f} GB: full fine-tuning (fp32 weights and gradients "
          "alone: 1.1 GB) is left out; run this notebook on Colab or Kaggle to see it")
LEARNING_RATE = {"prompt": 3e-2, "prefix": 1e-2, "ia3": 1e-2, "adapter": 1e-3, "lora": 1e-3, "dora": 1e-3,
                 "full": 5e-5}
steps = pick(small=4, full=80)  # the same step budget for every method
val_file = Path("runs/07/validation.jsonl")  # held-out rows for the eval loss: a few in the small profile
val_file.parent.mkdir(parents=True, exist_ok=True)
val_rows = load_split("dates", "validation")[: pick(small=16, full=100)]
val_file.write_text("".join(json.dumps(r) + "\n" for r in val_rows))
base_overrides = ["output_dir=runs/07", f"eval_file={val_file}", "test_file=null",
                  f"max_steps={steps}", "max_length=128", "eval_steps=1000", "save_steps=1000"]
print(load_config("dates_smoke", base_overrides + ["method=ia3"]))

# %% [markdown]
# - Peak memory: `train()` reports the process's peak (RSS on a CPU, allocated memory on a GPU).
#   The runs share one process, so the peak is reset before each run, or each would inherit the
#   previous one's.
# - Full fine-tuning with AdamW holds 16 bytes per weight (weights, gradients, two moments): ~2.2 GB
#   for this model. The small profile uses Adafactor (factored second moment, no first) to stay within
#   CI's memory; the full profile uses AdamW like the others.
# - Eval loss: the trainer's evaluation on the held-out rows in `eval_file` at the end of each run
#   (through PEFT's forward, so prompt and prefix tuning's virtual tokens count). Exact match: greedy
#   answers on test rows. The base model's loss: the LoRA run's trainer with the adapter switched off.

# %%
import pandas as pd

from ftlab import evaluate
from ftlab.hardware import release_memory, reset_peak_memory
from ftlab.merge import disabled
from ftlab.training import train

test_rows = load_split("dates", "test")[: pick(small=8, full=100)]
results, histories = [], {}
for method in METHODS:
    overrides = base_overrides + [f"method={method}", f"learning_rate={LEARNING_RATE[method]}",
                                  f"output_dir=runs/07/{method}"]
    if method == "full":
        overrides.append(f"optim={pick(small='adafactor', full='adamw_torch')}")
    release_memory()  # the previous run's model: gc, then its memory back to the system
    reset_peak_memory()  # each run's peak_memory_mb counts that run only (GPU peak, or the process's VmHWM)
    run = train(load_config("dates_smoke", overrides))
    m = run.metrics
    results.append({"method": method, "trainable": m["trainable_params"],
                    "trainable %": 100 * m["trainable_params"] / m["total_params"],
                    "peak MB": m["peak_memory_mb"], "train s": m["train_time_s"],
                    "eval loss": m["final_eval_loss"],
                    "exact match": evaluate({method: (run.model.eval(), run.tokenizer)}, test_rows,
                                            metrics=("exact_match",))[0].loc[method, "exact_match"],
                    "learning rate": LEARNING_RATE[method], "optim": run.config.optim})
    histories[method] = [h["loss"] for h in run.history if "loss" in h]
    if method == "lora":  # the base model's eval loss, measured the same way: the adapter switched off
        with disabled(run.model):
            base_loss = run.trainer.evaluate()["eval_loss"]
    del run

# %% [markdown]
# **The table**

# %%
table = pd.DataFrame(results).set_index("method")
print(f"base model (no training): eval loss {base_loss:.3f}; {steps} steps per method")
table.style.format({"trainable": "{:,}", "trainable %": "{:.3f}", "peak MB": "{:.0f}", "train s": "{:.1f}",
                    "eval loss": "{:.3f}", "exact match": "{:.0%}", "learning rate": "{:g}"})

# %% [markdown]
# - The training loss per step, to see which methods are still catching up.

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3))
for method, losses in histories.items():
    ax.plot(range(1, len(losses) + 1), losses, marker="o", label=method)
ax.axhline(base_loss, color="0.5", ls="--", label="base (eval)")
ax.set(xlabel="step", ylabel="train loss", yscale="log", title=f"same {steps} steps, every method")
ax.legend(ncol=4, fontsize=8)
plt.show()

# %% [markdown]
# **Reading the table**
# - What to look for: how far the trained-weight counts spread; whether the PEFT methods' memory
#   peaks differ (the frozen model is the same for all; full fine-tuning adds gradients and optimizer
#   state for every weight); which losses are still high after the same few steps (prefix tuning starts
#   from random key/values in every layer, which first disrupts the model); what DoRA's renormalizing
#   of every weight column costs per step.
# - The cell reads each of these off this run's table, so the sentences it prints are this run's.

# %%
counts, peak, loss, secs = table["trainable"], table["peak MB"], table["eval loss"], table["train s"]
print(f"in this run: trained weights from {counts.min():,} ({counts.idxmin()}) to {counts.max():,} "
      f"({counts.idxmax()}), a factor of {counts.max() / counts.min():,.0f}")
peft_only = [m for m in table.index if m != "full"]
print(f"peak memory of the PEFT methods: {peak[peft_only].min():.0f} to {peak[peft_only].max():.0f} MB"
      + (f"; full fine-tuning {peak['full']:.0f} MB" if "full" in table.index else ""))
print("eval loss after the same steps, best first: "
      + ", ".join(f"{m} {v:.3f}" for m, v in loss.sort_values().items()) + f" (base {base_loss:.3f})")
print(f"LoRA trains {counts['lora'] / counts['ia3']:.0f}x IA3's weights; "
      f"DoRA's steps took {secs['dora'] / secs['lora']:.2f}x LoRA's time")


# %% [markdown]
# **Why LoRA displaced adapter layers: time at inference**
# - LoRA's update B A is linear, so it can be added into W once (`merge_and_unload`): the merged model is
#   the base model's architecture, with no extra work per token. An adapter layer has a gelu between its
#   two matrices, so it cannot be folded into any weight: it runs at every layer for every token.
# - Measured below: greedy decoding of the same prompt to exactly `n_new` tokens (best of 3), for the base
#   model, LoRA before and after merging, and the adapter layers, from the run folders the loop wrote.

# %%
import time

import torch
from peft import PeftModel

from ftlab import load_model
from ftlab.bottleneck import load_bottlenecks

n_new = pick(small=24, full=64)


def decode_ms(model, tokenizer, repeats=3):
    """Milliseconds per generated token, best of `repeats`, decoding exactly n_new tokens greedily."""
    enc = tokenizer.apply_chat_template([{"role": "user", "content": test_rows[0]["messages"][0]["content"]}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            best = min(best, time.perf_counter() - start)
    return {"ms per token": 1000 * best / n_new, "tokens": out.shape[1] - enc["input_ids"].shape[1]}


release_memory()
base, tokenizer = load_model(verbose=False)
timings = {"base model": decode_ms(base.eval(), tokenizer)}
lora = PeftModel.from_pretrained(base, "runs/07/lora").eval()
timings["LoRA, unmerged"] = decode_ms(lora, tokenizer)
timings["LoRA, merged"] = decode_ms(lora.merge_and_unload().eval(), tokenizer)  # the base's own architecture again
del base, lora
release_memory()
adapted, _ = load_model(verbose=False)
timings["adapter layers (cannot merge)"] = decode_ms(load_bottlenecks(adapted, "runs/07/adapter").eval(), tokenizer)
del adapted
gen_ms = pd.DataFrame(timings).T
gen_ms["vs base"] = gen_ms["ms per token"] / gen_ms.loc["base model", "ms per token"]
gen_ms.style.format({"ms per token": "{:.1f}", "tokens": "{:.0f}", "vs base": "{:.2f}x"})

# %% [markdown]
# - Read the ratios, not the milliseconds (those depend on the processor). Merged LoRA should cost what
#   the base costs; unmerged LoRA and the adapter layers both pay for extra matrix products at every layer
#   and every token, and only LoRA can be rid of them by merging. The cell prints this run's ratios.

# %%
ratio = gen_ms["vs base"]
print(f"per token, vs the base model: LoRA unmerged {ratio['LoRA, unmerged']:.2f}x, LoRA merged "
      f"{ratio['LoRA, merged']:.2f}x, adapter layers {ratio['adapter layers (cannot merge)']:.2f}x")

# %% [markdown]
# **Continued pretraining on raw text**
# - Every run so far taught a *task* from chats, with the loss on the answers only. Continued pretraining
#   (`task=cpt`) teaches a *domain*: raw text, the loss on every token, the rows packed end to end into
#   `max_length` windows (no padding). It is how a model learns a field's vocabulary and style before
#   any instruction tuning (Unsloth's CPT notebooks, LLaMA-Factory's "pt" stage).
# - The `text` format: a `.txt` file, one row per paragraph (blank lines between), or `{"text": ...}`
#   rows in JSONL. The corpus here is the harbour log of Varnholm, an invented port
#   (`data/text/make_corpus.py` writes it), so the model has never seen its names or its way of writing.
# - The measure: perplexity (exp of the mean loss per token) on held-out entries, before and after.

# %%
from ftlab.data import read_rows
from ftlab.report import perplexity_line

corpus = read_rows(DATA_DIR / "text" / "train.txt")
print(f"{len(corpus)} paragraphs; the first:", corpus[0]["text"], sep="\n")
cpt = train(load_config("dates_smoke", [
    "task=cpt", f"train_file={DATA_DIR / 'text' / 'train.txt'}", f"test_file={DATA_DIR / 'text' / 'test.txt'}",
    "eval_file=null", f"test_limit={pick(small=10, full=30)}", f"max_steps={pick(small=6, full=60)}",
    f"max_length={pick(small=64, full=256)}", "learning_rate=2e-3", "output_dir=runs/07_cpt", "save_steps=1000"]))
cpt_m = cpt.metrics
print(perplexity_line(cpt_m))

# %% [markdown]
# - The same opening of a log entry, continued by the base model (adapter off) and by the adapted one:

# %%
opening = "Entered this day, day 3 of month 5, 1802. The"
enc = cpt.tokenizer(opening, return_tensors="pt")
with torch.inference_mode():
    with disabled(cpt.model):
        before = cpt.model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=cpt.tokenizer.pad_token_id)
    after = cpt.model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=cpt.tokenizer.pad_token_id)
for who, ids in [("base", before), ("after CPT", after)]:
    print(f"{who}: {opening}{cpt.tokenizer.decode(ids[0, enc['input_ids'].shape[1]:], skip_special_tokens=True)}")
del cpt
release_memory()

# %% [markdown]
# **Exercise** (pick a level)
# - *Easy*: give LoRA `r=2` and `r=64` (two more runs) and add them to the table. Where does the rank
#   stop mattering on this task?
# - *Medium*: prompt tuning with `num_virtual_tokens=5` and `50`: trainable count and loss.
# - *Hard*: give every method the same *wall-clock* budget instead of the same steps (use `train s`
#   above to set `max_steps` per method) and redo the table. Does the ranking change?

# %%
# Exercise default: the easy level's question asked of the table, trained weights per unit of loss gained.
gain = (base_loss - table["eval loss"]).clip(lower=0)
print((gain / table["trainable"] * 1e6).rename("eval-loss drop per million trained weights").round(3))

# %% [markdown] tags=["exercise"]
# **Checked exercise**: count IA3's trained weights by hand. IA3 learns one vector per targeted linear
# layer that rescales the layer's output (length `out_features`). In a feed-forward layer it rescales the
# input instead (length `in_features`). Write `ia3_parameters(model, targets, feedforward)` for a model
# that PEFT has not wrapped yet (`targets`, `feedforward`: lists of layer names such as `"down_proj"`). The
# check compares it with PEFT's IA3, as ftlab builds it, on a small Llama.

# %% tags=["exercise"]
def ia3_parameters(model, targets, feedforward):
    """The number of weights IA3 trains on `model` (its linear layers named in targets / feedforward)."""
    return None  # your code here


# %% tags=["solution"]
import torch


def ia3_parameters(model, targets, feedforward):
    """The number of weights IA3 trains on `model` (its linear layers named in targets / feedforward)."""
    total = 0
    for name, module in model.named_modules():
        short = name.split(".")[-1]
        if isinstance(module, torch.nn.Linear) and short in targets:
            total += module.in_features if short in feedforward else module.out_features
    return total


# %% tags=["check"]
from ftlab.exercises import check_ia3_parameters

check_ia3_parameters(ia3_parameters)

# %% [markdown]
# **Questions**
# 1. IA3 trains an order of magnitude fewer weights than LoRA here (the "Reading the table" cell prints
#    the factor). When would that be worth its lower capacity?
# 2. Why do prompt and prefix tuning not work with sequence packing (ftlab refuses the combination)?
# 3. Full fine-tuning wants a learning rate ~20x smaller than LoRA. Why?
# 4. Adapter layers cannot be merged, LoRA can. When does that not matter (think of serving many tasks)?
# 5. Continued pretraining puts the loss on every token. What happens to the model's chat behaviour, and
#    how do recipes get it back?
# 6. Several tasks, one base model: which of these methods let you serve all tasks from one copy of
#    the base weights?
#
# <details><summary>Answers</summary>
#
# 1. When each task or user needs its own adapter and there are many of them: IA3's vectors take kilobytes.
#    Also when data is scarce (low capacity overfits less), and for tasks that re-weight features the model
#    already has (format, style) rather than teach new ones.
# 2. Packing joins several examples into one sequence. The virtual tokens are prepended once, at the start
#    of the sequence, so only the first example sees them where training put them. The others see them as
#    distant context, and no attention mask can give each packed example a prefix of its own.
# 3. Full fine-tuning changes the pretrained weights themselves, all of them, so a step moves the whole
#    function and large steps wipe out pretrained knowledge (instability, forgetting). LoRA's update starts
#    at zero, has low rank and a fixed scale, so it needs larger steps to move at all.
# 4. When many tasks are served from one base: the adapters stay separate either way, swapped per request,
#    so being unmergeable costs nothing extra. It also does not matter when the latency overhead (measured in
#    the timing table above) is acceptable.
# 5. It drifts toward plain text continuation: it follows the chat template less, ignores instructions,
#    rambles and may not stop. Recipes mix chat data into the continued pretraining or run a short SFT on
#    chat data afterwards.
# 6. Every method that keeps the base frozen and adds its own weights: LoRA (unmerged), DoRA, IA3, prefix and
#    prompt tuning, and adapter layers. Full fine-tuning (and merged LoRA) needs one copy of the base per
#    task.
#
# </details>

# %%
# The lesson's own check: every method ran, parameter counts are ordered, full FT trains everything.
assert list(table.index) == METHODS and table["eval loss"].notna().all(), table
counts = table["trainable"]
assert counts["prompt"] < counts["prefix"] < counts["lora"] < counts["dora"], counts
assert counts["ia3"] < counts["adapter"] < counts["lora"], counts
assert gen_ms.loc["adapter layers (cannot merge)", "tokens"] == gen_ms.loc["base model", "tokens"] == n_new, gen_ms
assert cpt_m["task"] == "cpt" and cpt_m["tuned_perplexity"] < cpt_m["base_perplexity"], cpt_m
if "full" in METHODS:  # left out under 3 GB of memory
    assert counts["dora"] < counts["full"] and table.loc["full", "trainable %"] == 100.0, table.loc["full"]
assert table.loc["lora", "eval loss"] < base_loss, (table.loc["lora", "eval loss"], base_loss)
print("notebook check passed")
