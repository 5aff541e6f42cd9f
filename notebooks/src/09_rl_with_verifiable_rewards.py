# %% [markdown]
# # 09 · RL with verifiable rewards (GRPO)
# {badges}
#
# {runtime}
#
# **You will learn to**
# - write a reward function: a plain Python function that scores sampled answers;
# - see why GRPO learns nothing from a model whose answers all score the same, and fix it with a warm start;
# - compute GRPO's group-relative advantages by hand and check them against what TRL used;
# - read the KL term (`beta`), `num_generations` and `temperature`;
# - watch a model game a naive reward, then fix the reward.
#
# **Binder (2 GB) cannot run this notebook.** Measured in the small profile on 2026-12-02: the GRPO run's
# report gives a peak of 3,148 MB (the policy, the sampled answers and their log-probs). Colab, Kaggle or
# a machine with 4 GB run it.
#
# **Where the code is**: `ftlab.rewards` (the reward functions and their guard), `ftlab.training` (`task=grpo`, the warm start), `ftlab.curves` (the reward curves). Read any function with `??` (e.g. `exact_date??`).

# %%
# {install}

# %% [markdown]
# - `pick(small=..., full=...)`: a few steps in CI (FTLAB_PROFILE=small), the real job otherwise.
# - Every run below is `ftlab.training.train` on a `TrainConfig` with `task=grpo`: TRL's `GRPOTrainer`
#   with the same methods, safety nets and run folder as the SFT and DPO notebooks.

# %%
import os

from ftlab.course import pick, profile
from ftlab.shipped import data_dir

DATA_DIR = data_dir()
print("profile:", profile(), "| runs written to", os.getcwd())

# %% [markdown]
# **What a reward function is**
# - SFT shows the model the right answer. RL lets the model *sample* answers and tells it how good each
#   one was: a number from a **reward function**. "Verifiable": the number comes from a check a program
#   can make (is this the right date?), not from a human or a reward model.
# - TRL's signature: `fn(completions, **kwargs) -> list[float]`, one score per sampled answer. Every
#   column of the dataset arrives as a keyword: here `answer`, the reference date of each prompt.
# - ftlab ships three for the dates task (`ftlab.rewards`; read them with `exact_date??`):

# %%
import pandas as pd

from ftlab.rewards import date_fields, date_shape, exact_date

answers = ["2021-03-03", "2021-03-04", "The date is 2021-03-03.", "2000-01-01", "March 3rd, 2021"]
refs = ["2021-03-03"] * len(answers)
pd.DataFrame({"answer": answers, "exact_date": exact_date(answers, answer=refs),
              "date_shape": date_shape(answers), "date_fields": date_fields(answers, answer=refs)}).round(2)

# %% [markdown]
# **From the base model: no signal at all**
# - GRPO samples `num_generations` answers per prompt (a *group*) and compares each answer with its
#   group's mean. If every answer in a group scores the same, every advantage is 0: no gradient.
# - One GRPO step on the instruct model with the two strict rewards. TRL logs the share of groups
#   whose rewards have zero spread as `frac_reward_zero_std`.

# %%
from ftlab.config import load_config
from ftlab.report import accuracy_line
from ftlab.training import train

base = train(load_config("dates_grpo", [
    "output_dir=runs/09_base", "warm_start_steps=0", "reward_funcs=[exact_date,date_shape]",
    "max_steps=1", "test_file=null", "save_steps=1000"]))
first = base.history[0]
print({k: round(first[k], 3) for k in ("rewards/exact_date/mean", "rewards/date_shape/mean",
                                       "frac_reward_zero_std")})
print("a sampled answer:", repr(base.trainer._logs["completion"][0][0]["content"]))  # TRL's recent samples

# %% [markdown]
# - Read the cell's output: when `frac_reward_zero_std` is 1.0, every group's answers scored the same
#   (all 0: the instruct model writes sentences, not a bare `YYYY-MM-DD`), so this step changed nothing.
# - Two ways out, both used by `configs/dates_grpo.yaml`: a short **SFT warm start**
#   (`warm_start_steps`: SFT on the same file's answers first, merged into the weights) so some answers
#   are right, and a **partial-credit** reward (`date_fields`: 1/3 per right field) so answers that are
#   nearly right differ from those that are far off.

# %%
del base
import gc

gc.collect()

# %% [markdown]
# **The RL job: warm start, then GRPO**
# - `train()` first runs `warm_start_steps` of SFT into `runs/09_grpo/warm_start`, merges that adapter,
#   scores the test rows with this *starting policy*, trains a fresh LoRA adapter with GRPO, and scores
#   them again. The live plot shows the loss and, beside it, each reward function's mean per step.

# %%
n_test = pick(small=8, full=100)
cfg = load_config("dates_grpo", [
    "output_dir=runs/09_grpo", f"test_limit={n_test}", f"max_steps={pick(small=4, full=30)}", "logging_steps=1"])
grpo = train(cfg, live_plot=True)
m = grpo.metrics
print(accuracy_line(m))
print(f"mean reward (sum of the reward functions): {m['base_mean_reward']:.2f} -> {m['tuned_mean_reward']:.2f}")
pd.DataFrame(m["reward_table"]).round(3)

# %% [markdown]
# **Group-relative advantages, by hand**
# - For one group of G answers with rewards r_1..r_G (the sum of the reward functions):
#   `advantage_i = (r_i - mean(r)) / (std(r) + 1e-4)`. Better than the group's average: pushed up;
#   worse: pushed down. No value network, just the group as baseline.
# - TRL keeps the last batch's rewards and advantages (`trainer._logs`, what `log_completions` prints).
#   Recompute the first group's advantages from its rewards and compare.

# %%
import torch

G = cfg.num_generations
logs = grpo.trainer._logs
rewards = torch.tensor([logs["rewards"][name] for name in cfg.reward_funcs]).sum(0)[:G]  # (G,) first group
by_hand = (rewards - rewards.mean()) / (rewards.std() + 1e-4)  # TRL: the group's sample std (n - 1)
trl_adv = torch.tensor(list(logs["advantages"])[:G])
print("rewards   ", rewards.numpy().round(3), "\nby hand   ", by_hand.numpy().round(3),
      "\nTRL       ", trl_adv.numpy().round(3))
assert torch.allclose(by_hand, trl_adv, atol=1e-4)

# %% [markdown]
# **The knobs**
# - `beta`, the KL term: how hard the policy is pulled back toward the reference (here the starting
#   policy: the GRPO adapter switched off). TRL's default is `beta=0.0`: no KL term, and the reference
#   log-probabilities are not even computed (faster, less memory). DeepSeek-R1 used 0.001; raise it when
#   the policy drifts into strange text while the reward still rises.
# - `num_generations`: the group size. More answers per prompt: a steadier baseline and more groups with
#   some spread, but each step generates more. The batch counts answers: 8 = 2 prompts x 4.
# - `temperature`: how varied the sampled answers are. Too low: all answers of a group equal (no signal,
#   `frac_reward_zero_std` near 1). Too high: mostly nonsense.

# %%
from trl import GRPOConfig

print("TRL defaults: beta", GRPOConfig.beta, "| num_generations", GRPOConfig.num_generations,
      "| temperature", GRPOConfig.temperature)
zero_std = [h["frac_reward_zero_std"] for h in grpo.history if "frac_reward_zero_std" in h]
print("frac_reward_zero_std per logged step:", [round(z, 2) for z in zero_std])

# %% [markdown]
# **Reward hacking, live**
# - A reward that checks only the *shape* (`date_shape`) pays for any real date, right or wrong. The
#   model can learn to answer a date that has nothing to do with the prompt: the reward climbs, exact
#   match does not.
# - The hyperparameter panel trains GRPO too: its live plot draws the reward curves beside the loss.
#   Same warm start (`init_adapter`), the naive reward only.

# %%
from IPython.display import display

from ftlab.panels import hyperparameter_panel

hack_cfg = load_config("dates_grpo", [
    "output_dir=runs/09_hack", "warm_start_steps=0", f"init_adapter={grpo.run_dir / 'warm_start'}",
    "reward_funcs=[date_shape]", f"test_limit={n_test}", "logging_steps=1"])
panel = hyperparameter_panel(hack_cfg)
display(panel)

# %%
hack = panel.train(max_steps=pick(small=3, full=40))
h = hack.metrics
print(f"date_shape reward {h['base_mean_reward']:.2f} -> {h['tuned_mean_reward']:.2f}; exact match "
      f"{h['base_exact_match']:.0%} -> {h['tuned_exact_match']:.0%}")
pd.DataFrame(h["samples"])[["reference", "base", "tuned"]]

# %% [markdown]
# - The same game played perfectly: one fixed date for every prompt earns `date_shape`'s full reward,
#   and nothing from the rewards that compare with the reference. That is the fix the main job uses:
#   `exact_date` (the real goal) plus `date_fields` (partial credit toward it), never shape alone.

# %%
gamed = ["1999-01-01"] * len(refs)
print("always 1999-01-01 -> date_shape", sum(date_shape(gamed)) / len(gamed), "| exact_date",
      sum(exact_date(gamed, answer=refs)) / len(gamed), "| date_fields",
      round(sum(date_fields(gamed, answer=refs)) / len(gamed), 2))

# %% [markdown]
# **Exercise** (pick a level)
# - *Easy*: write `right_year(completions, answer, **kwargs)`: 1.0 when the first four characters of the
#   answer are the reference's year, else 0.0. The check below runs it on fixed answers.
# - *Medium*: write a reward that subtracts 0.5 for any text beyond the date (chatter), and check it on
#   the answers of the first cell.
# - *Hard*: train with your function next to `exact_date` (the cell after the check) for 30 steps. Does
#   `frac_reward_zero_std` drop compared with `exact_date` alone?

# %% [markdown] tags=["exercise"]
# **Checked exercise** (the easy level): write `right_year(completions, answer, **kwargs)` with TRL's
# reward signature: 1.0 when the answer starts with the reference's year, else 0.0. `completions` holds
# strings or chat messages (`ftlab.rewards.text` gives the text of either); `answer` the reference dates.

# %% tags=["exercise"]
from ftlab.rewards import text


def right_year(completions, answer, **kwargs):
    """1.0 when the answer starts with the reference's year, else 0.0; one float per completion."""
    return None  # your code here


# %% tags=["solution"]
from ftlab.rewards import text


def right_year(completions, answer, **kwargs):
    """1.0 when the answer starts with the reference's year, else 0.0; one float per completion."""
    return [float(text(c).strip()[:4] == ref[:4]) for c, ref in zip(completions, answer)]


# %% tags=["check"]
# The check: your function on fixed answers (plain strings and chat messages, as TRL passes them), called as
# GRPO calls it (ftlab.rewards.checked: one float per completion, or a stop naming the completion that broke it)
from ftlab.exercises import check_reward

fixed = ["2021-03-03", "2021-12-31", "2020-03-03", "The year 2021", [{"role": "assistant", "content": "2021"}]]
check_reward(right_year, fixed, answer=["2021-03-03"] * len(fixed), expected=[1.0, 1.0, 0.0, 0.0, 1.0])

# %%
# Hard level: your function next to a shipped one (names and functions mix); a few steps here. Until your
# right_year passes its check, the shipped date_fields stands in for it.
yours = right_year if check_reward(right_year, fixed, ["2021-03-03"] * len(fixed), [1.0, 1.0, 0.0, 0.0, 1.0]) \
    else "date_fields"
mine = train(load_config("dates_grpo", [
    "output_dir=runs/09_mine", "warm_start_steps=0", f"init_adapter={grpo.run_dir / 'warm_start'}",
    f"max_steps={pick(small=1, full=30)}", "test_file=null", "logging_steps=1", "save_steps=1000"]),
    reward_funcs=[yours, "exact_date"])
print({k: round(v, 3) for k, v in mine.history[0].items() if k.startswith("rewards/") and k.endswith("/mean")})

# %% [markdown]
# **Questions**
# 1. Why does a group whose answers all have the same reward give no gradient, whatever that reward is?
# 2. `date_fields` pays 2/3 for a date with the wrong day. Could a model learn to stop at 2/3? What in
#    the main job's rewards prevents it?
# 3. When would you turn the KL term on (`beta > 0`), and what does it cost?
# 4. SFT needs the right answers; GRPO needs only a way to check them. When is that difference decisive?
#
# <details><summary>Answers</summary>
#
# 1. The advantage of an answer is its reward minus the group's mean (divided by the group's standard
#    deviation). Equal rewards give every answer advantage 0, so the policy-gradient term is 0, whatever the
#    reward's value. Only the KL term could move the model, and it is off at `beta = 0`.
# 2. It could, if the day stays hard while year and month are easy: 2/3 is then a stable plateau. The main
#    job also pays `exact_date`, 1 only for the whole date. In a group where one answer gets the day right,
#    that answer earns 1 + 1 = 2 against 0 + 2/3, so it gets the largest advantage.
# 3. When the policy drifts: reward hacking, broken language, lost general ability, long runs. A positive
#    `beta` keeps it near the reference. The cost is a reference forward pass per batch (time and memory;
#    with LoRA, a pass with the adapter off) and slower reward gains.
# 4. When right answers are expensive to write but cheap to check: maths with a checker, code with tests,
#    formats with a validator. It also matters when many answers are right (SFT imitates one of them) or when
#    the model should find its own way to an answer.
#
# </details>

# %%
# The lesson's own check: GRPO ran on the warm-started policy with both rewards logged per step.
assert m["task"] == "grpo" and m["steps"] == cfg.max_steps
assert all(f"rewards/{n}/mean" in grpo.history[0] for n in cfg.reward_funcs)
assert first["frac_reward_zero_std"] == 1.0  # the base model: no signal
assert f"rewards/{getattr(yours, '__name__', yours)}/mean" in mine.history[0]
print("notebook check passed")
