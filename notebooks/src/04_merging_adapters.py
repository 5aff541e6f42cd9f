# %% [markdown]
# # 04 · Merging and combining adapters
# {badges}
#
# {runtime}
#
# **You will learn to**
# - merge a LoRA adapter into its base model, so it loads and runs like any transformers model, and check
#   that the merge changed nothing;
# - keep several adapters on one base in memory, switch between them and turn them all off;
# - combine two adapters with weights, and measure what the combination keeps of each skill;
# - export an adapter as one GGUF file that llama.cpp and Ollama run, and check that its chat template,
#   its stop token and its answers survived.
#
# **Binder (2 GB) may not run this notebook.** Before its GGUF export it peaked at 1,756 MB (small
# profile, 2026-11-22); with the export (an fp32 merge, llama.cpp's converter, the file read back) the CI
# run of 2026-12-02 found it over 2 GB, so under 3 GB of memory the notebook leaves the export out and says so.
#
# **Where the code is**: `ftlab.merge` (merging, switching and combining adapters), `ftlab.export` (GGUF), `ftlab.evaluation`, `ftlab.panels`. Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# ## Two adapters, two skills
# - Two short LoRA runs on the same base: one learns dates (`March 3, 2021` -> `2021-03-03`), the other
#   numbers in words (`fifty-four thousand and seventy-four` -> `54074`). Same rank, so every way of
#   combining them works. Each run folder holds its adapter (a few MB), not a model.
# - The small profile (CI) trains 12 steps of 4 chats each at a high learning rate: enough to see each
#   skill appear, not to master it. The full profile trains 150 steps of 8.
# - Training is notebook 02's lesson; here it runs as the terminal command `ftlab train CONFIG.yaml`
#   (the same `ftlab.training.train`), each run in its own process, so this notebook's memory holds only
#   what it merges. `save_config` writes the config that command reads.

# %%
import dataclasses
from pathlib import Path

from ftlab.config import TrainConfig, save_config
from ftlab.course import pick
from ftlab.tasks import DATA_DIR

dates_cfg = TrainConfig(
    train_file=str(DATA_DIR / "dates" / "train.jsonl"),
    output_dir="runs/04_dates",  # the adapter lands here
    r=8, lora_alpha=16,  # both adapters: the same rank, so 'linear' combinations work too
    learning_rate=pick(small=1e-3, full=5e-4),  # high for LoRA: fine for short runs on narrow tasks
    max_steps=pick(small=12, full=150),
    per_device_train_batch_size=2, gradient_accumulation_steps=pick(small=2, full=4),  # 4 or 8 chats a step
    gradient_checkpointing=True,  # recompute activations in backward: slower, a few hundred MB less memory
    max_length=128, warmup_ratio=0.1, logging_steps=4, save_steps=1000,
)
numbers_cfg = dataclasses.replace(dates_cfg, train_file=str(DATA_DIR / "numbers" / "train.jsonl"),
                                  output_dir="runs/04_numbers")
for cfg in (dates_cfg, numbers_cfg):
    print("wrote", save_config(cfg, cfg.output_dir + ".yaml"))

# %% [markdown]
# - The two runs: a step line every `logging_steps`, then where the run folder is. Each folder holds the
#   adapter (`adapter_model.safetensors`, ~10 MB at r=8 on every linear layer), its config and a report.

# %%
# !ftlab train runs/04_dates.yaml
# !ftlab train runs/04_numbers.yaml
runs = {"dates": Path(dates_cfg.output_dir), "numbers": Path(numbers_cfg.output_dir)}
print({name: sorted(p.name for p in run.glob("adapter_*")) for name, run in runs.items()})

# %% [markdown]
# ## Merge, and check the merge
# - LoRA computes `W x + (alpha/r) B A x`. Merging folds the update into the weights once:
#   `W' = W + (alpha/r) B A`. The merged model has no adapter, no PEFT dependency and no extra
#   latency, and it is as big as the base.
# - `merge_adapter` merges in fp32, saves the result, then reloads the saved folder with plain
#   transformers and compares it with the adapter model on the given prompts: the largest logit
#   difference, the mean KL divergence per token, and whether the greedy answers are identical. It
#   raises if the saved model is further than the tolerance for its dtype.
# - Saved in fp32 here, so the merged model must answer exactly like the adapter. bf16 halves the disk
#   for a small KL; the exercise below measures what that costs.

# %%
import json

import torch

from ftlab.merge import merge_adapter
from ftlab.tasks import load_split

check_rows = load_split("dates", "validation")[:pick(small=6, full=20)]  # fidelity prompts: the task's own
merged = merge_adapter(runs["dates"], "runs/04_dates_merged", dtype=torch.float32, prompts=check_rows)
print(f"saved {merged.size_bytes / 1e6:.0f} MB in {merged.dtype} to {merged.out_dir}")
print(json.dumps(merged.fidelity, indent=1))

# %% [markdown]
# - `fp32_merge` is the merge itself, `saved_model` the folder as users will load it: differences at
#   rounding level, identical greedy answers.
# - The merged folder is a complete transformers model (weights, config, tokenizer): `load_merged` is
#   `AutoModelForCausalLM.from_pretrained`. Its answers on test prompts next to the adapter model's,
#   one model in memory at a time:

# %%
import gc

from peft import PeftModel
from transformers import AutoTokenizer

from ftlab import generate_batch, load_model
from ftlab.merge import load_merged
from ftlab.tasks import prompts_and_references

test_rows = load_split("dates", "test")[:pick(small=16, full=100)]
prompts, references = prompts_and_references(test_rows)
tokenizer = AutoTokenizer.from_pretrained(merged.out_dir)
merged_model = load_merged(merged.out_dir)
from_merged = generate_batch(merged_model, tokenizer, prompts, max_new_tokens=16)
del merged_model
base, _ = load_model()
adapter_model = PeftModel.from_pretrained(base, runs["dates"]).eval()
with_adapter = generate_batch(adapter_model, tokenizer, prompts, max_new_tokens=16)
del adapter_model, base
gc.collect()
for a, b, ref in list(zip(with_adapter, from_merged, references))[:5]:
    print(f"adapter {a!r:<16} merged {b!r:<16} reference {ref}")
print(f"identical greedy answers: {sum(a == b for a, b in zip(with_adapter, from_merged))}/{len(prompts)}")

# %% [markdown]
# ## Several adapters on one base
# - A merged model serves one skill. To serve several, keep one base in memory and load each adapter
#   beside it (a few MB each): `load_adapters` returns a PeftModel holding all of them, the first active.
# - `use_adapter` switches, `disabled` turns them all off (the base answers), `delete_adapter` frees one.
# - The generation panel asks all three at once; its Generate button does the same for your own prompt.

# %%
from IPython.display import display

from ftlab import chat
from ftlab.merge import disabled, load_adapters, use_adapter
from ftlab.panels import generation_panel

base, tokenizer = load_model()  # one base in memory for everything below
model = load_adapters(base, {"dates": runs["dates"], "numbers": runs["numbers"]})
print("loaded:", list(model.peft_config), "active:", model.active_adapter)
number = "Write this number in digits only (no commas or spaces).\nNumber: four thousand and twelve"
print("numbers adapter:", repr(chat(use_adapter(model, "numbers"), tokenizer, number, max_new_tokens=16)))
with disabled(model):
    print("adapters off:   ", repr(chat(model, tokenizer, number, max_new_tokens=16)))

side_by_side = generation_panel({"base": (model, tokenizer, False), "dates": (model, tokenizer, "dates"),
                                 "numbers": (model, tokenizer, "numbers")}, max_new_tokens=20)
side_by_side.generate("Rewrite this date as YYYY-MM-DD.\nDate: the 3rd of March, 2021")
display(side_by_side)

# %% [markdown]
# ## Combining two adapters
# - `combine_adapters` builds a new adapter from weighted existing ones (PEFT's `add_weighted_adapter`).
#   `cat` stacks both (rank 8 + 8 = 16) and is exact: its update is `w1 ΔW_dates + w2 ΔW_numbers`.
#   `linear` (same rank needed) adds the matrices themselves: A = Σ √(wᵢsᵢ)·Aᵢ and B = Σ √(wᵢsᵢ)·Bᵢ
#   (sᵢ = each adapter's alpha/r). Its update B·A is the weighted sum of the updates **plus cross terms**
#   such as B_dates·A_numbers, which neither adapter learned. `ties`, `dare_*` prune each update first
#   (they need `density`).
# - The panel: two weight sliders, the combination type, and a button that combines and re-scores the
#   base, each adapter and the combination on both tasks. Below, the button's function, called in code.

# %%
from ftlab.panels import combination_panel

tasks = {"dates": load_split("dates", "test")[:pick(small=16, full=100)],
         "numbers": load_split("numbers", "test")[:pick(small=16, full=100)]}
mix = combination_panel(model, tokenizer, ["dates", "numbers"], tasks)
table = mix.combine(weights=[1.0, 1.0], combination_type="cat")
display(mix)

# %% [markdown]
# - The sum of both updates keeps most of each skill here: the two tasks touch different prompts. When
#   skills conflict, lower weights (or `ties`) trade one against the other. One more point, by code:

# %%
half = mix.combine(weights=[0.5, 0.5], combination_type="linear")
display(half)

# %% [markdown]
# - Why `linear` is not the weighted sum: read one layer's update from PEFT (`get_delta_weight`) for the
#   combination and for each adapter, and measure what the cross terms add.

# %%
from ftlab.merge import combine_adapters, delete_adapter

layer = model.base_model.model.model.layers[0].self_attn.q_proj  # one LoRA layer holding every adapter
weighted_sum = 0.5 * layer.get_delta_weight("dates") + 0.5 * layer.get_delta_weight("numbers")
combine_adapters(model, ["dates", "numbers"], [0.5, 0.5], name="cat_half", combination_type="cat")
for kind, name in [("linear", mix.name), ("cat", "cat_half")]:
    gap = (layer.get_delta_weight(name) - weighted_sum).norm() / weighted_sum.norm()
    print(f"q_proj of layer 0, {kind} 0.5/0.5: differs from 0.5 ΔW_dates + 0.5 ΔW_numbers by {gap:.1%} of its norm")
model.set_adapter(mix.name)
delete_adapter(model, "cat_half")  # the panel's combination stays the active adapter

# %% [markdown]
# ## From adapter to a file people run: GGUF for llama.cpp and Ollama
# - llama.cpp, Ollama and LM Studio do not read a transformers folder; they read one GGUF file: the
#   weights (16-bit or quantized), the tokenizer, and the chat template, all inside.
# - `export_gguf` merges the adapter in fp32 (as above), converts the merged folder with llama.cpp's own
#   converter (`convert_hf_to_gguf.py`, fetched once from the llama-cpp-python sdist on PyPI, never copied
#   into this course), and writes an Ollama `Modelfile` beside the file (`ollama create dates -f ...`).
# - Then it reads the GGUF back and checks what a bad export gets wrong without an error: the chat template
#   and the eos/pad token ids against the training tokenizer's, and the answers. transformers loads the file
#   (`gguf_file=`), and so does llama.cpp itself where `llama-cpp-python` is installed (`ftlab[gguf]`,
#   which compiles llama.cpp). Each must answer the test prompts greedily within 3 points of the adapter's
#   exact match, and every answer must end at `<|im_end|>`: a lost stop token shows as answers that run on.
# - The same job from a terminal: `ftlab export --adapter runs/04_dates --out dates.gguf --quant q8_0`.

# %%
from ftlab.export import export_gguf, fetch_converter, gguf_metadata
from ftlab.hardware import memory_bytes

if memory_bytes() < 3 * 2**30:  # Binder gives 2 GB: the fp32 merge and the read-back would not fit
    print(f"this machine gives {memory_bytes() / 2**30:.1f} GB: the GGUF export is left out (it needs about 3 GB); "
          "run it on Colab, Kaggle or locally: ftlab export --adapter runs/04_dates --out dates.gguf --quant q8_0")
else:
    print("llama.cpp's converter:", fetch_converter())  # once per machine: the 76 MB sdist, only the converter kept
    exported = export_gguf(runs["dates"], "runs/04_dates.gguf", quant="q8_0",
                           rows=test_rows[:pick(small=4, full=16)])  # the check's prompts: a few test rows
    print(exported.summary())
    meta = gguf_metadata(exported.gguf)
    print("eos id in the GGUF:", meta["eos_token_id"], "| training tokenizer:", tokenizer.eos_token_id,
          repr(tokenizer.eos_token))
    print("chat template identical:", meta["chat_template"] == tokenizer.chat_template)
    for reader, result in exported.roundtrip["answers"].items():
        print(f"{reader:>12}: exact match {result['exact_match']:.2f}, stopped at <|im_end|>: "
              f"{result.get('stopped', '-')}/{exported.roundtrip['n']}")
    print(exported.modelfile.read_text())

# %% [markdown]
# **Exercise** (pick a level)
# - *Easy*: move the sliders (e.g. dates 1.5, numbers 0.5) and press "Combine and evaluate". Which task
#   suffers first?
# - *Medium*: compare `cat`, `linear` and `svd` at weights 1 and 1. Which keeps both skills best, and why
#   is `linear` at 0.5/0.5 not the same as `cat` at 0.5/0.5 (the cell above measures the answer)? Then
#   merge the dates adapter again with `dtype=torch.bfloat16` and compare the answers on `prompts` with the
#   fp32 merge's: count how many change, and read `ftlab.merge.fidelity`'s KL beside that count.
# - *Hard*: merge the combined adapter into the base (`model.set_adapter("combined")`, then
#   `ftlab.merge.merge(model)`) and check with `ftlab.merge.fidelity` that it answers like the adapter.
#   Or export the dates adapter as `q4_k_m` (needs `pip install "ftlab[gguf]"`) and read
#   `runs/04_dates.q4_k_m.roundtrip.json`: which answers changed, and did the check let it through?

# %%
# Exercise default (easy): more dates, less numbers, beside the equal weights above.
print("cat 1.0/1.0:", table.loc["combined"].to_dict())
print("cat 1.5/0.5:", mix.combine(weights=[1.5, 0.5], combination_type="cat").loc["combined"].to_dict())

# %% [markdown] tags=["exercise"]
# **Checked exercise**: what does `combination_type="linear"` compute? It does not add the updates
# `w_i s_i B_i A_i` (that is `cat`). It adds the matrices: `A = sum_i sqrt(w_i s_i) A_i` and
# `B = sum_i sqrt(w_i s_i) B_i`, and the new adapter's update is `B A` (its scale is 1). Write
# `linear_merge(As, Bs, weights, scalings)` returning that update, shape (d_out, d_in). The check combines
# two random adapters with `ftlab.merge.combine_adapters`, compares, and says how far the result lies from
# the weighted sum of the updates: the cross terms `B_i A_j`, the answer to the medium level.

# %% tags=["exercise"]
def linear_merge(As, Bs, weights, scalings):
    """As[i]: (r, d_in), Bs[i]: (d_out, r), weights[i], scalings[i] = alpha_i / r_i -> (d_out, d_in)."""
    return None  # your code here


# %% tags=["solution"]
def linear_merge(As, Bs, weights, scalings):
    """As[i]: (r, d_in), Bs[i]: (d_out, r), weights[i], scalings[i] = alpha_i / r_i -> (d_out, d_in)."""
    roots = [(w * s) ** 0.5 for w, s in zip(weights, scalings)]
    A = sum(c * a for c, a in zip(roots, As))
    B = sum(c * b for c, b in zip(roots, Bs))
    return B @ A


# %% tags=["check"]
from ftlab.exercises import check_linear_merge

check_linear_merge(linear_merge)

# %% [markdown]
# **Questions**
# 1. When would you ship a merged model, and when one base with several adapters?
# 2. Why is the merge computed in fp32 even when the model is saved in bf16?
# 3. A QLoRA adapter was trained against 4-bit weights. Which weights should it be merged into?
# 4. A GGUF whose weights are perfect can still answer badly in Ollama. Name two things inside the file
#    that the export checks besides the weights, and what a user would see if each were wrong.
#
# <details><summary>Answers</summary>
#
# 1. Ship a merged model for one task: it serves anywhere (llama.cpp, Ollama, vLLM without adapter
#    support) with no extra latency. Ship one base with several adapters when many tasks or users share
#    it: one copy of the base in memory, adapters of a few MB swapped per request, each updated on its own.
# 2. The update `(alpha / r) B A` is small next to `W`. bf16 keeps about 3 significant digits, so adding
#    the two in bf16 rounds much of the update away. Adding in fp32 and casting once at the end loses
#    only the final rounding.
# 3. Into the dequantized 4-bit weights, the NF4 values it was trained against. Merged into the original
#    16-bit weights, every layer would also shift by the quantization error that the adapter learned
#    around.
# 4. The chat template (tokenizer metadata): with the wrong one, prompts are laid out differently from
#    training and the answers degrade. The end-of-turn token (`<|im_end|>` as EOS/stop): with the wrong one,
#    the model never stops and writes the next turns itself. The tokenizer's vocabulary and merges are
#    in the file too.
#
# </details>

# %%
# The lesson's own check: the merge is faithful and the merged model answers exactly like the adapter.
assert all((run / "adapter_model.safetensors").exists() for run in runs.values()), "a training run failed"
report = merged.fidelity
assert report["saved_model"]["mean_kl"] <= report["max_mean_kl"], report
assert report["fp32_merge"]["greedy_identical"], report["fp32_merge"]
assert with_adapter == from_merged, [(a, b) for a, b in zip(with_adapter, from_merged) if a != b]
assert set(table.index) == {"base", "dates", "numbers", "combined"} and list(table.columns) == ["dates", "numbers"]
assert table.loc["dates", "dates"] > table.loc["base", "dates"], table
assert exported.roundtrip["passed"] and exported.gguf.exists(), exported.roundtrip["problems"]
print("notebook check passed")
