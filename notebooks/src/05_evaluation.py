# %% [markdown]
# # 05 · Evaluation: did fine-tuning help, and can you trust the number?
# {badges}
#
# {runtime}
#
# **You will learn to**
# - measure held-out loss and perplexity on the answer tokens, base vs tuned;
# - score generated answers with task metrics (exact match, contains) in one side-by-side table;
# - check that no evaluation row leaked into the training data, and see a planted leak get caught;
# - run a benchmark through lm-evaluation-harness on the model in memory.
#
# **Binder (2 GB) cannot run this notebook.** Measured in the small profile: the kernel peaked at
# 2,411 MB on 2026-11-22, and on 2026-12-01 it reached 2.3 GB in the training step. Run it on Colab or
# Kaggle, or on a machine with 3 GB.
#
# **Where the code is**: `ftlab.evaluation` (loss, metrics, contamination, lm-eval), `ftlab.tasks` (answer checking). Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# - Data and configs ship inside ftlab: `load_config("dates_smoke")` names a shipped config, and the run
#   folders (`runs/...`) are written beside this notebook.
# - `pick(small=..., full=...)`: a few steps and rows in CI (FTLAB_PROFILE=small), the real job otherwise.

# %%
import os

from ftlab.course import pick, profile
from ftlab.shipped import data_dir

DATA_DIR = data_dir()  # the course data, shipped inside the package
print("profile:", profile(), "| data in", DATA_DIR, "| runs written to", os.getcwd())

# %% [markdown]
# **Something to evaluate**
# - A LoRA adapter on the dates task: a few steps in the small profile, the course's main job
#   (the shipped config `dates_lora`; the README's table gives its measured time) in the full one.
# - `train()` returns the `PeftModel`: the base with the adapter `default` on top. Switching the adapter
#   off gives back the base model, so one model in memory serves both sides of every comparison.

# %%
from ftlab.config import load_config
from ftlab.training import train

config = pick(small="dates_smoke", full="dates_lora")
overrides = ["output_dir=runs/05_evaluation", "eval_file=null", "test_file=null", "save_steps=1000"]
overrides += pick(small=["max_steps=6", "max_length=128"], full=[])
run = train(load_config(config, overrides))
model, tok = run.model.eval(), run.tokenizer
print(type(model).__name__, "| adapters:", list(model.peft_config), "| steps:", run.metrics["steps"])

# %% [markdown]
# **Loss and perplexity**
# - The eval loss is the mean cross-entropy on the *answer* tokens only (the same mask as training),
#   on validation rows the run never saw. Lower = the model puts more probability on the right answer.
# - Perplexity = exp(loss): "as unsure as a uniform choice among this many tokens". 1.0 is certain.
# - `ftlab.merge.disabled(model)` switches the adapter off: that is the base model.

# %%
from ftlab.evaluation import eval_loss
from ftlab.merge import disabled
from ftlab.tasks import load_split

val_rows = load_split("dates", "validation")[: pick(small=16, full=100)]
with disabled(model):
    base = eval_loss(model, tok, val_rows)
tuned = eval_loss(model, tok, val_rows)
print(f"base : loss {base['loss']:.3f}, perplexity {base['perplexity']:.2f} ({base['tokens']} answer tokens)")
print(f"tuned: loss {tuned['loss']:.3f}, perplexity {tuned['perplexity']:.2f}")

# %% [markdown]
# **Task metrics, side by side**
# - Loss says how likely the right answer is; it does not say the model *writes* it. `evaluate()`
#   generates greedy answers on test rows and scores them:
#   - `exact_match`: the answer is the ISO date, nothing else (quotes and one trailing period forgiven);
#   - `contains`: the date appears somewhere in the answer. Base models often *know* the date but wrap
#     it in a sentence: high `contains`, low `exact_match` is a format problem, which fine-tuning fixes.
# - Passing the `PeftModel` compares its base (adapters off) with each adapter; `loss=True` adds the
#   eval loss on the same rows.

# %%
from ftlab.evaluation import evaluate

test_rows = load_split("dates", "test")[: pick(small=16, full=100)]
table, answers = evaluate(model, test_rows, tokenizer=tok, metrics=("exact_match", "contains"), loss=True,
                          batch_size=8)  # 8 answers generated at a time: less memory than the default 16
table.round(3)

# %% [markdown]
# - The answers behind the numbers: read a few before trusting any metric.

# %%
answers.head(8)

# %% [markdown]
# **Contamination: did test rows leak into training?**
# - A test score means nothing if the test rows were trained on. `contamination()` lists evaluation rows
#   that share word n-grams with training rows, with the share of their n-grams that overlap.
# - The dates data is templated (7 instruction wordings), so comparing whole rows flags everything.
#   Compare the part that varies: the date as written and the answer.
# - First the real splits (built so that no date repeats), then a leak planted on purpose: three test
#   rows copied into the training data.

# %%
from ftlab.evaluation import contamination


def date_part(row):  # the date as written (last line of the prompt) and the ISO answer
    return row["messages"][0]["content"].splitlines()[-1] + "\n" + row["messages"][-1]["content"]


train_rows = load_split("dates", "train")
clean = contamination(train_rows, test_rows, n=4, text=date_part)
planted = [3, 11, 7]  # test rows copied into the training data
leaky = contamination(train_rows + [test_rows[i] for i in planted], test_rows, n=4, text=date_part)
print(f"real splits: {len(clean)} of {len(test_rows)} test rows share a 4-gram, "
      f"highest overlap {clean.overlap_ratio.max() if len(clean) else 0:.2f}")
leaky.head(6)

# %% [markdown]
# - The planted rows come out on top with every n-gram shared (overlap 1.0). The partial overlaps are
#   month and day names two dates share ("of March 1998"): look at `shared_ngrams` before calling a
#   row contaminated.

# %% [markdown]
# **A benchmark through lm-evaluation-harness**
# - lm-eval is the standard harness behind most leaderboards. `benchmark()` hands it the model object
#   in memory (no reload) and a task; `data/lm_eval/` holds the dates task as a multiple-choice
#   benchmark: is the right ISO date more likely than a plausible mistake?
# - It is an optional extra: without it the cell says how to install it and skips.

# %%
import importlib.util

import pandas as pd

from ftlab.evaluation import LM_EVAL_MISSING, benchmark

if importlib.util.find_spec("lm_eval") is None:
    print(LM_EVAL_MISSING)
    bench = pd.DataFrame()  # nothing to show
else:
    limit = pick(small=20, full=None)  # documents per task; None: all 50
    with disabled(model):
        bench_base = benchmark(model, tok, ["ftlab_dates_mc"], limit=limit)
    bench_tuned = benchmark(model, tok, ["ftlab_dates_mc"], limit=limit)
    bench = pd.concat({"base": bench_base.set_index(["task", "metric"])["value"],
                       "tuned": bench_tuned.set_index(["task", "metric"])["value"]}, axis=1)
bench.round(3)

# %% [markdown]
# **What `acc` and `acc_norm` measure**
# - lm-eval scores each choice by the **sum** of its tokens' log-probabilities after the question, and
#   `acc` counts the rows where the gold choice has the highest sum. Every extra token adds a negative
#   term, so a long wrong choice ("Sure! The date in ISO format is ...") loses before the model's
#   knowledge enters: part of why the *base* model already scores high on `acc`.
# - `acc_norm` divides each sum by the choice's length in bytes, which removes most of that advantage.
# - The cell counts the rows where length favours the right answer. In the others both choices are
#   dates of the same length (a day off, day and month swapped): only there does `acc` test the skill.

# %%
import json

mc = [json.loads(line) for line in (DATA_DIR / "lm_eval" / "dates_mc.jsonl").read_text().splitlines()]
shortest = sum(len(r["choices"][r["gold"]]) < min(len(c) for i, c in enumerate(r["choices"]) if i != r["gold"])
               for r in mc)
print(f"the right answer is strictly the shortest choice in {shortest} of {len(mc)} rows")

# %% [markdown]
# **Forgetting: what did tuning on dates cost?**
# - A narrow fine-tune can wear away what the model knew. Measure it: the same general-knowledge questions
#   (`ftlab_general_mc`: 40 plain facts, four choices each) with the adapter off and on. A drop is
#   forgetting; no change within the noise means the adapter left general knowledge alone.
# - With few questions the noise is large: the cell prints the interval beside each score.

# %%
from ftlab.evaluation import wilson

if importlib.util.find_spec("lm_eval") is None:
    print(LM_EVAL_MISSING)
else:
    general_limit = pick(small=16, full=None)  # questions scored; None: all 40
    with disabled(model):
        general_base = benchmark(model, tok, ["ftlab_general_mc"], limit=general_limit)
    general_tuned = benchmark(model, tok, ["ftlab_general_mc"], limit=general_limit)
    n_general = general_limit or 40
    for who, result_table in (("base", general_base), ("tuned", general_tuned)):
        acc = float(result_table.set_index("metric").loc["acc", "value"])
        low, high = wilson(round(acc * n_general), n_general)
        print(f"general knowledge, {who}: acc {acc:.0%} [{low:.0%}, {high:.0%}] on {n_general} questions")

# %% [markdown]
# **Exercise** (pick a level)
# - *Easy*: write your own metric: the share of answers shaped like `YYYY-MM-DD` (right or wrong date).
#   It separates "learned the format" from "learned the dates". The checked exercise below.
# - *Medium*: run `contamination(train_rows, test_rows)` with the defaults (whole rows, 8-grams) and
#   explain why it flags almost every row. Which `max_train_share` would help?
# - *Hard*: run the generation benchmark `ftlab_dates_gen` and compare its exact match with the table
#   above on the same rows. Why can the two differ? (Read the task YAML.)

# %% [markdown] tags=["exercise"]
# **Checked exercise** (the easy level, as a function): write `iso_shape(answer)`: True when the answer
# is shaped `YYYY-MM-DD` (digits, right or wrong date) once it is tidied as exact match tidies it
# (`ftlab.tasks.normalize`: surrounding spaces, a final period and surrounding quotes go). The check
# compares it with the evaluation's own reading on fixed answers; the cell after it applies it to the
# answers above.

# %% tags=["exercise"]
def iso_shape(answer: str) -> bool:
    """True when normalize(answer) is shaped YYYY-MM-DD."""
    return None  # your code here


# %% tags=["solution"]
import re

from ftlab.tasks import normalize


def iso_shape(answer: str) -> bool:
    """True when normalize(answer) is shaped YYYY-MM-DD."""
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", normalize(answer)) is not None


# %% tags=["check"]
from ftlab.exercises import check_iso_shape

check_iso_shape(iso_shape)

# %%
# Exercise default: the easy level on the answers already generated (no new generation), with your iso_shape
if check_iso_shape(iso_shape):
    shares = answers[table.index].apply(lambda col: col.map(iso_shape).mean())
    print("share of answers in YYYY-MM-DD shape:", shares.round(2).to_dict())
else:
    print("iso_shape does not pass its check yet: the share of YYYY-MM-DD answers waits for it")

# %% [markdown]
# **Questions**
# 1. The tuned model's loss dropped a lot but its exact match only a little. How can both be true?
# 2. Why is eval loss on the answer tokens more comparable across models than on the whole chat?
# 3. A benchmark you did not write reports your model at 90%. What would you check before believing it?
# 4. The contamination check compares n-grams. Which kind of leak would it miss?
#
# <details><summary>Answers</summary>
#
# 1. The loss averages over every answer token, with the reference fed in. Most tokens (the dashes, the copied
#    year) become very likely, so the loss falls a lot. Exact match needs every token of a greedy answer
#    right: one wrong day digit scores 0.
# 2. The answer tokens are the same text for every model, and they are what the task asks for. Prompt
#    tokens differ in length and template from row to row (and between models with other templates), and
#    their loss is mostly the base model's language modelling, which tuning hardly changes: it would dilute
#    the difference you want to see.
# 3. Whether the test rows (or paraphrases of them) were in the training data; how the score is computed
#    (log-likelihood or generation, `acc` or `acc_norm`, few-shot prompts); n and its interval; the base
#    model's and chance's scores on the same items; and whether the benchmark measures your use at all.
# 4. Paraphrased or reformatted copies: the same dates written in another spelling, a translated row, a
#    test answer inside a longer training text. n-grams need the same words in the same order, so any
#    rewording slips through. So does a leak into the base model's own pretraining data.
#
# </details>

# %%
# The lesson's own check: tuning lowered the held-out loss, and the planted leak is caught exactly.
assert tuned["loss"] < base["loss"], (base, tuned)
assert set(leaky.eval_index[leaky.overlap_ratio == 1.0]) == set(planted), leaky.head()
assert (clean.overlap_ratio < 1.0).all(), clean.head()
assert set(table.index) == {"base", "default"} and table["n"].eq(len(test_rows)).all()
assert bench.empty or set(bench.columns) == {"base", "tuned"}
print("notebook check passed")
