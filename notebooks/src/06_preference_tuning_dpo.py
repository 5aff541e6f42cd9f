# %% [markdown]
# # 06 · Preference tuning with DPO
# {badges}
#
# {runtime}
#
# **You will learn to**
# - read preference data: a prompt, a *chosen* answer and a *rejected* one;
# - run the usual recipe: a short SFT, merge it, then DPO on top with the SFT model as reference;
# - read DPO's logs: rewards, margins, accuracies, and the chosen vs rejected log-probabilities;
# - compare answers before and after DPO.
#
# **Binder (2 GB) cannot run this notebook.** Measured on 2026-12-01 in the small profile: the kernel
# reaches 2.3 GB during the SFT step, and under a 2 GiB memory limit like Binder's it was killed in the
# DPO step. Run it on Colab or Kaggle, or on a machine with 4 GB.
#
# **Where the code is**: `ftlab.examples` (training rows), `ftlab.training` (DPOTrainer wiring), `ftlab.data`. Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# - Data and configs ship inside ftlab: `load_config("dates_smoke")` names a shipped config, and the run
#   folders (`runs/...`) are written beside this notebook.
# - `pick(small=..., full=...)`: a few steps in CI (FTLAB_PROFILE=small), the real job otherwise.

# %%
import os

from ftlab.course import pick, profile
from ftlab.shipped import data_dir

DATA_DIR = data_dir()  # the course data, shipped inside the package
print("profile:", profile(), "| data in", DATA_DIR, "| runs written to", os.getcwd())

# %% [markdown]
# **Preference data**
# - SFT shows the model one right answer. DPO shows it two answers to the same prompt and which one is
#   better, so it can also learn what *not* to write.
# - Here the rejected answer is one plausible mistake: day and month swapped, another date format, the
#   year or day off by one, or a chatty sentence around the right date.

# %%
import pandas as pd

from ftlab.data import read_rows

pairs = read_rows(DATA_DIR / "dates" / "preference_train.jsonl")
print(len(pairs), "pairs; one of them as stored:", pairs[0], sep="\n")
pd.DataFrame([{"date in the prompt": p["prompt"][-1]["content"].splitlines()[-1],
               "chosen": p["chosen"][0]["content"], "rejected": p["rejected"][0]["content"]}
              for p in pairs[:6]])

# %% [markdown]
# **Step 1: a short SFT, merged into the weights**
# - DPO moves a model *away from a reference*, normally the SFT model. `train()` puts a fresh adapter on
#   the model it loads, so the SFT adapter is first merged into the weights (`merge_adapter`); DPO's
#   adapter then trains on top of that merged model, and switching DPO's adapter off gives the
#   reference back: no second copy of the model in memory.
# - The fidelity check of the merge is notebook 04's topic; `check=False` skips it here.

# %%
from ftlab.config import load_config
from ftlab.hardware import release_memory
from ftlab.merge import merge_adapter
from ftlab.training import train

n_test = pick(small=8, full=100)  # test rows scored before/after each stage
sft = train(load_config("dates_smoke", [
    "output_dir=runs/06_sft", "eval_file=null", f"test_limit={n_test}", "save_steps=1000",
    f"max_steps={pick(small=4, full=60)}", "max_length=128"]))
sft_metrics = sft.metrics
del sft  # free the model before loading another
release_memory()  # gc, then hand the freed memory back to the system (glibc would keep it)
merged = merge_adapter("runs/06_sft", "runs/06_sft_merged", check=False)
release_memory()  # the model merge_adapter loaded is dropped on return: its memory too
print(merged.summary().splitlines()[0])

# %% [markdown]
# **Step 2: DPO on top**
# - `task=dpo` with prompt/chosen/rejected rows; `model=` the merged SFT folder.
# - `beta` sets how far the policy may drift from the reference: the DPO loss is
#   `-log sigmoid(beta x (how much more the policy prefers chosen over rejected than the reference did))`.
# - `eval_file` holds 50 held-out pairs: DPO's rewards are measured on them at the end.
# - `learning_rate=5e-4` is a **toy setting**, chosen so that a few CPU steps move the adapter visibly.
#   Real DPO runs use far less: TRL's `DPOConfig` defaults to 1e-6 (the cell prints it), and LoRA-DPO
#   recipes sit around 5e-6 to 5e-5. At 5e-4 for many steps a policy drifts far from its reference.

# %%
dpo = train(load_config("dates_smoke", [
    "task=dpo", "model=runs/06_sft_merged", "output_dir=runs/06_dpo",
    f"train_file={DATA_DIR / 'dates' / 'preference_train.jsonl'}",
    f"eval_file={DATA_DIR / 'dates' / 'preference_test.jsonl'}", f"test_limit={n_test}",
    f"max_steps={pick(small=6, full=60)}", "learning_rate=5e-4", "beta=0.1", "max_length=128",
    "logging_steps=1", "eval_steps=1000", "save_steps=1000"]))
print(type(dpo.trainer).__name__, "| reference: the same model with the adapter off")
from trl import DPOConfig

print(f"learning rate here {dpo.trainer.args.learning_rate:g}; TRL's DPOConfig default "
      f"{DPOConfig.__dataclass_fields__['learning_rate'].default:g}")

# %% [markdown]
# **What DPO logs**
# - `rewards/chosen` = beta x (log-prob of the chosen answer under the policy - under the reference);
#   the same for `rewards/rejected`. At step 1 the policy *is* the reference, so both are 0.
# - `rewards/margins` = chosen - rejected reward: DPO pushes it up. `rewards/accuracies` = share of
#   pairs in the batch where the chosen answer's reward is higher.
# - `logps/chosen`, `logps/rejected`: the policy's log-probabilities of each answer. Both may go down;
#   what DPO needs is the *gap* to grow.

# %%
import matplotlib.pyplot as plt

logs = pd.DataFrame([h for h in dpo.history if "rewards/margins" in h]).set_index("step")
final = next(h for h in reversed(dpo.history) if "eval_rewards/margins" in h)  # held-out pairs, at the end
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
logs[["rewards/chosen", "rewards/rejected", "rewards/margins"]].plot(ax=ax1, title="rewards (train batches)")
(logs["logps/chosen"] - logs["logps/rejected"]).plot(ax=ax2, title="log-prob chosen - rejected (policy)")
plt.tight_layout()
plt.show()
logs[["loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"]].round(3)

# %% [markdown]
# - On the 50 held-out pairs, after training:

# %%
print({k.removeprefix("eval_"): round(v, 3) for k, v in final.items()
       if k.startswith(("eval_rewards/", "eval_logps/"))})

# %% [markdown]
# **Answers before and after**
# - `train()` scored the same test rows before and after each stage: instruct model -> SFT (step 1),
#   SFT -> SFT + DPO (here; its "base" is the merged SFT model). Then a few answers side by side.

# %%
from ftlab.report import accuracy_line

m = dpo.metrics
print(f"exact match on {n_test} test rows: instruct {sft_metrics['base_exact_match']:.0%} -> "
      f"SFT {sft_metrics['tuned_exact_match']:.0%} -> SFT + DPO {m['tuned_exact_match']:.0%}")
print("with intervals:", accuracy_line(m))
pd.DataFrame(m["samples"]).rename(columns={"base": "SFT", "tuned": "SFT + DPO"})

# %% [markdown]
# **Exercise** (pick a level)
# - *Easy*: rerun the DPO cell with `beta=0.5` and then `beta=0.02`. How do the margins and the
#   answers change?
# - *Medium*: which kind of mistake does the model still prefer? Group the held-out pairs by the kind
#   of rejected answer and compute, per kind, how often the policy gives the chosen answer the higher
#   log-probability.
# - *Hard*: skip the SFT step (`model=` the instruct model) and run DPO alone with the same steps. Does
#   DPO alone teach the format? Compare exact match.

# %%
# Exercise default: the medium level's first step, the held-out pairs grouped by kind of mistake.
def kind(pair):
    chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
    if chosen in rejected:
        return "chatty sentence"
    if len(rejected) != 10 or rejected[4] != "-":
        return "other format"
    return "swap or off by one"


held_out = read_rows(DATA_DIR / "dates" / "preference_test.jsonl")
pd.Series([kind(p) for p in held_out]).value_counts()

# %% [markdown]
# **Questions**
# 1. Why does DPO need a reference model at all? What would happen with `beta` near 0?
# 2. Both `logps/chosen` and `logps/rejected` can fall while the margin grows. Is that a problem?
# 3. When would you collect preference pairs instead of more SFT examples?
# 4. Why is the SFT adapter merged before DPO here, rather than trained further by DPO?

# %%
# The lesson's own check: DPO ran on preference pairs and pushed chosen above rejected.
assert m["task"] == "dpo" and m["steps"] == dpo.config.max_steps
assert abs(logs["rewards/margins"].iloc[0]) < 1e-3  # step 1: the policy is the reference
assert logs["rewards/margins"].iloc[-3:].mean() > 0, logs["rewards/margins"]
assert final["eval_rewards/margins"] > 0 and final["eval_rewards/accuracies"] > 0.5, final
print("notebook check passed")
