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
BETA = 0.1  # DPO's beta; the checked exercise at the end reads it too
dpo = train(load_config("dates_smoke", [
    "task=dpo", "model=runs/06_sft_merged", "output_dir=runs/06_dpo",
    f"train_file={DATA_DIR / 'dates' / 'preference_train.jsonl'}",
    f"eval_file={DATA_DIR / 'dates' / 'preference_test.jsonl'}", f"test_limit={n_test}",
    f"max_steps={pick(small=6, full=60)}", "learning_rate=5e-4", f"beta={BETA}", "max_length=128",
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
# **DPO, ORPO and KTO on the same pairs**
# - **ORPO** (Hong et al. 2024) needs no reference model and no SFT step. Its loss is the SFT loss on the
#   chosen answer plus `beta` x an odds-ratio term, `-log sigmoid(log odds(chosen) - log odds(rejected))`,
#   with `odds(y) = p(y) / (1 - p(y))` and `p(y)` the answer's mean per-token probability. So it starts
#   from the instruct model and, in the full profile, gets the SFT and DPO steps together as its budget
#   (the small profile, for CI, gives ORPO 4 steps and KTO 2; the table's `train s` shows what they cost).
#   TRL keeps it in `trl.experimental.orpo`; ftlab imports it from there and stops with a message if a
#   TRL lacks it.
# - **KTO** (Ethayarajh et al. 2024) needs no pairs: each answer is only marked desirable or undesirable,
#   and the loss pushes the policy's log-ratio to the reference up for the first and down for the second.
#   It starts from the merged SFT model, like DPO, with the same reference (the adapter off).
#   `ftlab.data.unpaired` turns each pair into two such rows (below): data you can collect with a thumbs
#   up or down, with no second answer to write.
# - One yardstick for all: `preference_accuracy`, the share of the 50 held-out pairs in which a model gives
#   the chosen answer the higher log-probability. It needs no reference model, so it compares models whose
#   references differ; and exact match on the same test rows as above.

# %%
from ftlab.data import unpaired

pd.DataFrame([{"prompt": r["prompt"][-1]["content"].splitlines()[-1], "completion": r["completion"][0]["content"],
               "label (desirable?)": r["label"]} for r in unpaired(pairs[:3])])

# %%
from ftlab.evaluation import preference_accuracy, wilson
from ftlab.merge import disabled

held_out = read_rows(DATA_DIR / "dates" / "preference_test.jsonl")  # 50 pairs no run trains on
PAIRS_FILE = DATA_DIR / "dates" / "preference_train.jsonl"
sft_steps, dpo_steps = sft_metrics["steps"], dpo.config.max_steps
ranked, rows = {}, {}


def add_row(name, starts_from, reference, steps, seconds, exact):
    rows[name] = {"starts from": starts_from, "reference model": reference, "steps": steps,
                  "train s": seconds, f"exact match ({n_test} test rows)": exact,
                  "held-out pairs ranked right": ranked[name]["accuracy"],
                  "mean margin (nats)": ranked[name]["mean_margin"]}


with disabled(dpo.model):  # DPO's adapter off: the merged SFT model, DPO's (and KTO's) reference
    ranked["SFT"] = preference_accuracy(dpo.model.eval(), dpo.tokenizer, held_out)
ranked["SFT + DPO"] = preference_accuracy(dpo.model, dpo.tokenizer, held_out)
del dpo  # its figures are kept; the model's memory goes back before the next run
release_memory()

orpo = train(load_config("dates_smoke", [  # from the instruct model: SFT and preference in one stage
    "task=orpo", "output_dir=runs/06_orpo", f"train_file={PAIRS_FILE}", "eval_file=null", f"test_limit={n_test}",
    f"max_steps={pick(small=4, full=sft_steps + dpo_steps)}", "learning_rate=5e-4", "beta=0.1", "max_length=128",
    "logging_steps=1", "save_steps=1000"]))
with disabled(orpo.model):  # ORPO's adapter off: the instruct model it started from
    ranked["instruct"] = preference_accuracy(orpo.model.eval(), orpo.tokenizer, held_out)
ranked["ORPO"] = preference_accuracy(orpo.model, orpo.tokenizer, held_out)
orpo_type, om = type(orpo.trainer).__name__, orpo.metrics
del orpo
release_memory()

kto = train(load_config("dates_smoke", [  # on the merged SFT model, like DPO; the pairs split into two rows each
    "task=kto", "model=runs/06_sft_merged", "output_dir=runs/06_kto", f"train_file={PAIRS_FILE}",
    "eval_file=null", f"test_limit={n_test}", f"max_steps={pick(small=2, full=dpo_steps)}", "learning_rate=5e-4",
    "beta=0.1",
    "max_length=128", "logging_steps=1", "save_steps=1000"]))
ranked["SFT + KTO"] = preference_accuracy(kto.model.eval(), kto.tokenizer, held_out)
kto_type, kto_rows, km = type(kto.trainer).__name__, len(kto.trainer.train_dataset), kto.metrics
del kto
release_memory()

add_row("instruct", "-", "-", 0, 0.0, sft_metrics["base_exact_match"])
add_row("SFT", "instruct", "-", sft_steps, sft_metrics["train_time_s"], sft_metrics["tuned_exact_match"])
add_row("SFT + DPO", "SFT, merged", "SFT (adapter off)", sft_steps + dpo_steps,
        sft_metrics["train_time_s"] + m["train_time_s"], m["tuned_exact_match"])
add_row("ORPO", "instruct", "none", om["steps"], om["train_time_s"], om["tuned_exact_match"])
add_row("SFT + KTO", "SFT, merged", "SFT (adapter off)", sft_steps + km["steps"],
        sft_metrics["train_time_s"] + km["train_time_s"], km["tuned_exact_match"])
methods = pd.DataFrame.from_dict(rows, orient="index")
print(f"{orpo_type}, {kto_type} ({kto_rows} unpaired rows from {len(pairs)} pairs); held-out pairs: {len(held_out)}")
methods.style.format({"train s": "{:.0f}", f"exact match ({n_test} test rows)": "{:.0%}",
                      "held-out pairs ranked right": "{:.0%}", "mean margin (nats)": "{:+.2f}"})

# %% [markdown]
# **Reading the table**
# - Steps and seconds count the SFT stage too for the two-stage recipes, so the rows cost what they say.
# - The cell below reads this run's table: which recipe ranks most held-out pairs right, how far each
#   moved the margin from its own starting point, and how wide the exact-match intervals are at this n.

# %%
acc, margin = methods["held-out pairs ranked right"], methods["mean margin (nats)"]
print("held-out pairs ranked right, best first: " + ", ".join(f"{k} {v:.0%}" for k, v in acc.sort_values(ascending=False).items()))
for name, start in [("SFT + DPO", "SFT"), ("SFT + KTO", "SFT"), ("ORPO", "instruct")]:
    print(f"{name}: mean margin {margin[start]:+.2f} -> {margin[name]:+.2f} nats (from {start})")
lo, hi = wilson(round(acc.max() * len(held_out)), len(held_out))
print(f"with {len(held_out)} pairs, the best share's 95% interval is [{lo:.0%}, {hi:.0%}]; exact match on "
      f"{n_test} rows moves in steps of {1 / n_test:.0%}: differences smaller than these are noise")

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
# Exercise default: the medium level, answered for SFT + DPO: per kind of mistake, how often the chosen
# answer gets the higher log-probability (preference_accuracy's margins, one per held-out pair).
def kind(pair):
    chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
    if chosen in rejected:
        return "chatty sentence"
    if len(rejected) != 10 or rejected[4] != "-":
        return "other format"
    return "swap or off by one"


by_kind = pd.DataFrame({"kind": [kind(p) for p in held_out], "ranked right": [x > 0 for x in ranked["SFT + DPO"]["margins"]]})
by_kind.groupby("kind")["ranked right"].agg(["mean", "count"])

# %% [markdown] tags=["exercise"]
# **Checked exercise**: the DPO loss from four log-probabilities. Each pair has the policy's and the
# reference's summed log-probabilities of the chosen and of the rejected answer. Write
# `dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)` (1-D tensors, one entry per
# pair). It returns the batch mean of
# `-log sigmoid(beta x ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))`.
# The check runs it on fixed values; the cell after it holds it against the loss TRL logged above.

# %% tags=["exercise"]
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """Mean sigmoid DPO loss over the batch; the arguments are 1-D tensors of summed log-probabilities."""
    return None  # your code here


# %% tags=["solution"]
import torch.nn.functional as F


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """Mean sigmoid DPO loss over the batch; the arguments are 1-D tensors of summed log-probabilities."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


# %% tags=["check"]
from ftlab.exercises import check_dpo_loss

check_dpo_loss(dpo_loss)

# %%
# Against TRL's logs (`logs`, the DPO run's steps): each holds batch means, and rewards/chosen =
# beta x (policy - reference), so the four log-probabilities follow from them. The loss is convex in the
# margin: your loss at the batch's mean margin must be at most TRL's mean loss, and equal at step 1, where
# every margin is 0 (log 2 = 0.6931).
check_dpo_loss(dpo_loss, history=logs.reset_index().to_dict("records"), beta=BETA)

# %% [markdown]
# **Questions**
# 1. Why does DPO need a reference model at all? What would happen with `beta` near 0?
# 2. Both `logps/chosen` and `logps/rejected` can fall while the margin grows. Is that a problem?
# 3. When would you collect preference pairs instead of more SFT examples?
# 4. Why is the SFT adapter merged before DPO here, rather than trained further by DPO?
#
# <details><summary>Answers</summary>
#
# 1. The loss rewards the *change* in preference relative to the reference. This keeps the policy near the
#    model it started from: DPO solves the RLHF objective with a KL penalty of weight `beta`. With `beta` near
#    0 the penalty vanishes. The loss then rewards ever larger margins without saturating, so the policy can
#    drift far from the reference, and both answers' likelihoods can collapse.
# 2. Not by itself: DPO constrains only the gap, and probability moves to other answers. It becomes a
#    problem when the chosen answer itself grows unlikely and generations get worse, which exact match on
#    the test rows shows. Remedies: a lower learning rate, a higher `beta`, or an SFT term on the chosen
#    answers (TRL's `rpo_alpha`).
# 3. When good answers are hard to write but easy to compare (tone, helpfulness, safety), or when the SFT
#    model is mostly right and you want to remove specific mistakes. Then a rejected answer shows exactly
#    the mistake, which more SFT examples never name.
# 4. DPO's reference must be the model DPO starts from. After the merge, one model serves both roles: the
#    policy (a fresh adapter on top) and the reference (the same model with the adapter off). If DPO went on
#    training the SFT adapter, "adapter off" would be the instruct model, the wrong reference.
#
# </details>

# %%
# The lesson's own check: DPO ran on preference pairs and pushed chosen above rejected.
assert m["task"] == "dpo" and m["steps"] == dpo_steps
assert abs(logs["rewards/margins"].iloc[0]) < 1e-3  # step 1: the policy is the reference
assert logs["rewards/margins"].iloc[-3:].mean() > 0, logs["rewards/margins"]
assert final["eval_rewards/margins"] > 0 and final["eval_rewards/accuracies"] > 0.5, final
assert (orpo_type, kto_type) == ("ORPOTrainer", "KTOTrainer") and kto_rows == 2 * len(pairs), (orpo_type, kto_rows)
assert om["task"] == "orpo" and om["steps"] == pick(small=4, full=sft_steps + dpo_steps) and km["task"] == "kto", (om, km)
assert all(r["n"] == len(held_out) == 50 for r in ranked.values()), {k: r["n"] for k, r in ranked.items()}
print("notebook check passed")
