# %% [markdown]
# # 01 · Formatting data for fine-tuning
# {badges}
#
# {runtime}
#
# **You will learn to**
# - recognise the common dataset formats (Alpaca, ShareGPT, OpenAI messages, prompt/completion,
#   preference pairs) and turn any of them into the one conversational form TRL trains on;
# - validate a file, find its malformed rows, and keep them in a rejects file instead of losing them;
# - see what the chat template makes of a row, and which tokens carry the loss;
# - spot the EOS/pad pitfall that silently teaches a model never to stop, and fix it.
#
# **Where the code is**: `ftlab.formats` (detecting and converting formats), `ftlab.data` (files, validation, rejects), `ftlab.lossmask`. Read any function with `??` (e.g. `train??`).

# %%
# {install}

# %% [markdown]
# ## Five files, one task
# - `data/formats/` holds the dates task (a written date -> `YYYY-MM-DD`) in five formats, with a few
#   rows broken on purpose (data/README.md lists them).
# - `read_rows` reads JSON, JSONL, CSV or Parquet into plain dicts, exactly as stored. Here is the first
#   row of each file: same example, five shapes.

# %%
from pathlib import Path

from ftlab.data import read_rows
from ftlab.tasks import DATA_DIR  # the repo's data/ folder

FILES = sorted((DATA_DIR / "formats").glob("*.*"))
for path in FILES:
    rows = read_rows(path)
    print(f"{path.name:<24} {len(rows):>3} rows   first: {rows[0]}")

# %% [markdown]
# ## Detect, convert, validate
# - `convert(path)` detects the format from the fields most rows have, converts every row to TRL's
#   conversational form (`messages`, `prompt`/`completion`, or `prompt`/`chosen`/`rejected`) and puts
#   every row it cannot use in `.rejects`, with its row number, a `kind` and a reason naming the fix.
# - Given the tokenizer and `max_length`, it also rejects rows that would be cut during training.
#   The tokenizer is the model's own: its chat template decides what "too long" means.

# %%
import warnings

from ftlab import load_model
from ftlab.data import convert

_, tokenizer = load_model()
MAX_LENGTH = 512  # tokens per example in training (TrainConfig.max_length)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # convert() warns once per file; the summaries below say the same
    conversions = {p.name: convert(p, tokenizer=tokenizer, max_length=MAX_LENGTH) for p in FILES}
for name, c in conversions.items():
    print(f"{name:<24} {c.format:<18} read {c.n_input:>3}  valid {len(c.rows):>3}  rejected {len(c.rejects)}")

# %% [markdown]
# - Every input row is accounted for: `valid + rejected == read`. The summary gives the first reason
#   for each kind of problem; the converted row is what training reads.

# %%
sharegpt = conversions["sharegpt.json"]
print(sharegpt.summary())
print("\nconverted:", sharegpt.rows[0])

# %% [markdown]
# - `check_file` is the same report as `ftlab data check FILE` in a terminal: every reject and the
#   token lengths, which tell you what `max_length` to train with.

# %%
from ftlab.data import check_file

print(check_file(DATA_DIR / "formats" / "alpaca.json", tokenizer=tokenizer, max_length=MAX_LENGTH))

# %% [markdown]
# ## The rejects file
# - `convert_file(path, out)` writes the valid rows as JSONL and the rejects beside it
#   (`train.rejects.jsonl`), each with the original row exactly as read, so you can fix and re-add them.

# %%
import json

from ftlab.data import convert_file, rejects_path

OUT = Path("runs/01_formats")  # next to this notebook
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    written = {p.name: convert_file(p, OUT / f"{p.stem}.jsonl", tokenizer=tokenizer, max_length=MAX_LENGTH)
               for p in FILES}
for line in rejects_path(OUT / "openai.jsonl").read_text().splitlines():
    reject = json.loads(line)
    print(f"row {reject['row']:>2} [{reject['kind']}] {reject['reason']}\n        original: {str(reject['original'])[:90]}")

# %% [markdown]
# - Not every problem is a format error. `preference.parquet` row 18 has `chosen == rejected`: well
#   formed, but a pair with no difference teaches DPO nothing. The converter compares the two answers
#   as the model would see them (after conversion, surrounding spaces ignored) and rejects the row.

# %%
pairs = conversions["preference.parquet"].rows  # the pairs kept (used by the chat-template cell below)
same = [r for r in conversions["preference.parquet"].rejects if r.kind == "identical_pair"]
for r in same:
    print(f"row {r.row} [{r.kind}] {r.reason}")

# %% [markdown]
# ## Chat templates
# - Training never sees the dicts: the tokenizer's chat template renders them to one string. SmolLM2
#   uses ChatML (`<|im_start|>role ... <|im_end|>`) and adds a default system prompt when there is none.
# - A preference row renders twice: the prompt with the chosen answer, and with the rejected one.

# %%
from ftlab.formats import conversations

row = conversions["openai.jsonl"].rows[2]  # the row with its own system message
print(tokenizer.apply_chat_template(row["messages"], tokenize=False))
for chat_ in conversations(pairs[0]):
    print(repr(tokenizer.apply_chat_template(chat_, tokenize=False)[-60:]))

# %% [markdown]
# ## Which tokens carry the loss
# - With `assistant_only_loss` (ftlab's default) the model is trained on the answers only, plus the
#   `<|im_end|>` right after each answer: that token is how it learns to stop.
# - `loss_mask(row, tokenizer)` shows it: green tokens carry loss. `ftlab.training` builds its labels from
#   this very mask. The warnings below it are the next section.

# %%
from IPython.display import display

from ftlab.lossmask import loss_mask

view = loss_mask(row, tokenizer)
display(view)  # green: carries loss

# %% [markdown]
# - The same view as text, for a prompt/completion row: loss tokens in `[[...]]`.

# %%
print(loss_mask(conversions["prompt_completion.csv"].rows[0], tokenizer).text())

# %% [markdown]
# ## Pitfall 1: the pad token is the EOS token
# - SmolLM2's tokenizer pads with `<|im_end|>`, its end-of-turn token. Many models do the same
#   (pad = EOS), and it is harmless for inference.
# - A common collator builds labels by copying `input_ids` and setting `-100` wherever the token is
#   the pad token. Here that is also every `<|im_end|>`: the model is never trained to stop.

# %%
from transformers import DataCollatorForLanguageModeling

print(f"pad {tokenizer.pad_token!r} (id {tokenizer.pad_token_id}), eos {tokenizer.eos_token!r} (id {tokenizer.eos_token_id})")
chats = conversions["openai.jsonl"].rows[:3]
views = [loss_mask(r, tokenizer) for r in chats]
naive = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # labels = input_ids, -100 where input_ids == pad
batch = naive([{"input_ids": v.input_ids} for v in views])
eos = tokenizer.eos_token_id
real_eos = batch["attention_mask"].bool() & (batch["input_ids"] == eos)  # EOS tokens that are text, not padding
print(f"EOS tokens in the text: {int(real_eos.sum())}, of which trained: {int((batch['labels'][real_eos] == eos).sum())}")

# %% [markdown]
# - The fix: decide what carries loss by *position*, not by token id. Labels come from the loss mask,
#   and padding is marked by the attention mask (or padded with -100 directly), so an `<|im_end|>` in
#   the text keeps its label. TRL's collator pads labels with -100 this way, from the same mask.
# - `collate` below is that fix in a few lines of torch; the check after it compares its labels with
#   ftlab's mask token by token.

# %%
import torch


def collate(views, pad_id):
    """Right-pad a batch; labels are the tokens where the loss mask is 1, -100 elsewhere and on padding."""
    width = max(len(v.input_ids) for v in views)
    ids = torch.full((len(views), width), pad_id)  # (batch, width)
    attention = torch.zeros((len(views), width), dtype=torch.long)  # 1: text, 0: padding
    labels = torch.full((len(views), width), -100)  # -100: no loss
    for i, v in enumerate(views):
        n = len(v.input_ids)
        ids[i, :n], attention[i, :n] = torch.tensor(v.input_ids), 1
        labels[i, :n] = torch.where(torch.tensor(v.mask) == 1, torch.tensor(v.input_ids), -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


fixed = collate(views, tokenizer.pad_token_id)
answer_ends = fixed["labels"] == eos
print(f"EOS tokens trained now: {int(answer_ends.sum())} (one per answer: {len(views)} answers)")
for i, v in enumerate(views):  # same labels as ftlab's mask, position by position
    n = len(v.input_ids)
    assert [t if m else -100 for t, m in zip(v.input_ids, v.mask)] == fixed["labels"][i, :n].tolist()
print(view.warnings[0])

# %% [markdown]
# ## Pitfall 2: answers that do not end with the end token
# - A hand-made template (or plain `prompt + answer` text) often leaves out the end-of-turn token after
#   the answer. Training then never shows the model where an answer stops, and it rambles on.
# - `loss_mask` warns about it. Below, a template that forgets `<|im_end|>` after assistant turns,
#   then the tokenizer's own template.

# %%
import copy

broken = copy.deepcopy(tokenizer)
broken.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}"
                        "{% if m['role'] != 'assistant' %}{{ '<|im_end|>\n' }}{% endif %}{% endfor %}")
bad = loss_mask(row, broken)
print("".join(f"[[{t}]]" if m else t for t, m in bad.runs()))
print([w for w in bad.warnings if "does not end" in w])
print("with the model's own template:", [w for w in loss_mask(row, tokenizer).warnings if "does not end" in w])

# %% [markdown]
# ## How long are the rows?
# - `token_stats` counts chat-template tokens per converted row; pick `max_length` above the p95 (or the
#   max, for short data like this), since longer rows are cut and lose their answers.

# %%
from ftlab.data import token_stats

for name in ("openai.jsonl", "prompt_completion.csv"):
    print(name, token_stats(conversions[name].rows, tokenizer))

# %% [markdown]
# **Exercise** (pick a level)
# - *Easy*: build three rows of your own in a format of your choice (a list of dicts) and pass them to
#   `convert(rows)`; break one and read its reason.
# - *Medium*: lower `max_length` until `convert` rejects normal rows as `too_long`; what does
#   `loss_mask(row, tokenizer, max_length=...)` say about a row cut in its answer?
# - *Hard*: give the tokenizer a distinct pad token (`tokenizer.add_special_tokens({"pad_token": "<|pad|>"})`
#   on a copy) and show that the naive collator now keeps every EOS label. What else must change in the
#   model before training with it?

# %%
# Exercise default (easy): three Alpaca rows, one of them broken.
mine = [{"instruction": "Rewrite as YYYY-MM-DD.", "input": "July 4, 1976", "output": "1976-07-04"},
        {"instruction": "Rewrite as YYYY-MM-DD.", "input": "1 May 2001", "output": "2001-05-01"},
        {"instruction": "Rewrite as YYYY-MM-DD.", "input": "12 Jan 1999"}]  # no output
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    result = convert(mine)
print(result.summary())

# %% [markdown] tags=["exercise"]
# **Checked exercise**: write `alpaca_to_messages(row)`. It takes an Alpaca row (`instruction`, an
# optional `input`, `output`, an optional `system`) and returns the chat messages that ftlab trains on:
# the system message if there is one, then the user, then the assistant. The user's message is the
# instruction, then a blank line and the input when the input is not empty. The check compares your
# messages with `ftlab.formats.convert_row(row, "alpaca")` on every valid row of the shipped `alpaca.json`.

# %% tags=["exercise"]
def alpaca_to_messages(row: dict) -> list[dict]:
    """[{"role": "system", "content": ...} if any, {"role": "user", ...}, {"role": "assistant", ...}]"""
    return None  # your code here


# %% tags=["solution"]
def alpaca_to_messages(row: dict) -> list[dict]:
    """[{"role": "system", "content": ...} if any, {"role": "user", ...}, {"role": "assistant", ...}]"""
    user = row["instruction"]
    if (row.get("input") or "").strip():
        user += "\n\n" + row["input"]
    head = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return head + [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


# %% tags=["check"]
from ftlab.exercises import check_alpaca_to_messages

check_alpaca_to_messages(alpaca_to_messages)

# %% [markdown]
# **Questions**
# 1. Why does `convert` keep rejected rows (with their originals) instead of skipping them?
# 2. ShareGPT says `human`/`gpt`, OpenAI says `user`/`assistant`. Where does that difference disappear?
# 3. Why is the `<|im_end|>` after an answer trained, but the `<|im_end|>` after the user's message not?
# 4. Pad == EOS is harmless when generating. Why does it only bite during training?
#
# <details><summary>Answers</summary>
#
# 1. A skipped row disappears without a trace. You would train on less data than you think, and a systematic
#    error (a misspelled field name in every row) would show up only as a worse model. The rejects file names
#    each row, its reason and the original, so you can fix the source.
# 2. In the conversion to TRL's conversational form: `convert` maps both to `user`/`assistant` messages.
#    After that, the chat template sees only the standard roles.
# 3. The model must learn to produce the assistant's answer and to *stop*: the `<|im_end|>` after the answer
#    is the stop signal it has to generate. The `<|im_end|>` after the user's message belongs to the prompt:
#    the template writes it at inference, and the model never has to produce it.
# 4. When generating, padding sits in the input and the attention mask hides it; the model stops at its
#    own EOS. In training, a collator that masks every pad token from the loss also masks the EOS at the
#    end of each answer when pad == EOS. The model then never learns to stop, and its answers run on.
#
# </details>

# %%
# The lesson's own check: every row is accounted for, on disk too, and the loss covers exactly the answers.
for name, c in conversions.items():
    assert len(c.rows) + len(c.rejects) == c.n_input, name
    out = OUT / (Path(name).stem + ".jsonl")
    on_disk = len(out.read_text().splitlines()) + len(rejects_path(out).read_text().splitlines())
    assert on_disk == c.n_input == written[name].n_input, name
assert {r.row for r in conversions["sharegpt.json"].rejects} == {3, 8, 14, 20}
assert [r.row for r in same] == [18]  # the pair with chosen == rejected
for r in conversions["openai.jsonl"].rows + conversions["sharegpt.json"].rows + conversions["alpaca.json"].rows:
    v = loss_mask(r, tokenizer)
    trained = tokenizer.decode([t for t, m in zip(v.input_ids, v.mask) if m])
    answers = "".join(m["content"] + tokenizer.eos_token for m in r["messages"] if m["role"] == "assistant")
    assert trained == answers, (trained, answers)
assert int((batch["labels"][real_eos] == eos).sum()) == 0 and int(answer_ends.sum()) == len(views)
print("notebook check passed")
