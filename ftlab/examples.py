"""Training examples from a data file: tokenized SFT chats with their loss mask, or DPO preference rows.

`sft_dataset(path, tokenizer, cfg)` converts the file (ftlab.data), tokenizes each chat with the chat
template and marks the tokens that carry loss (ftlab.lossmask, the same code the loss-mask viewer shows):
the assistant answers only, because SmolLM2's chat template has no {% generation %} markers for TRL's own
`assistant_only_loss`. The examples carry their `labels` (-100 where the mask is 0), which TRL 1.15 and 1.16
leave as they are: the masking does not depend on TRL rebuilding it, nor on Unsloth's runtime probe of TRL's
collator (unsloth_zoo's `trl_collator_applies_masks`), which falls back to loss on every token when it fails.
`dpo_dataset` keeps the conversational prompt/chosen/rejected rows DPOTrainer and ORPOTrainer read; `kto_dataset` turns them into
KTO's answers marked desirable or undesirable (ftlab.data.unpaired). `grpo_dataset` splits each chat into the
prompt GRPOTrainer samples answers for and the reference `answer` the reward functions compare with.
Leaves out: the trainer (training.py).
"""

from __future__ import annotations

from datasets import Dataset

from ftlab.config import PREFERENCE_TASKS, TrainConfig
from ftlab.data import convert, unpaired
from ftlab.lossmask import loss_mask

SFT_FORMATS = ("openai", "sharegpt", "alpaca", "prompt_completion")
GRPO_NEEDS = ("prompts with a reference answer: chat rows whose last turn is the assistant's answer, or "
              "prompt/completion rows (the answer is what the rewards compare with, never a training target)")


def task_rows(path, tokenizer, cfg: TrainConfig) -> list[dict]:
    """The converted rows of a data file for cfg.task; rows over max_length are rejected (it warns)."""
    conv = convert(path, tokenizer=tokenizer, max_length=cfg.max_length)
    want = ("preference",) if cfg.task in PREFERENCE_TASKS else ("text",) if cfg.task == "cpt" else SFT_FORMATS
    if conv.format not in want:
        need = {"grpo": GRPO_NEEDS, "cpt": "raw text (a .txt file, or {\"text\": ...} rows)"}.get(
            cfg.task, "prompt/chosen/rejected rows (both answers to each prompt)"
            if cfg.task in PREFERENCE_TASKS else "chat or prompt/completion rows")
        fix = {"preference": "set task=dpo (or kto, orpo)", "text": "set task=cpt"}.get(conv.format, "set task=sft")
        raise ValueError(f"{path} holds {conv.format} rows, but task={cfg.task} needs {need}. "
                         f"Fix: {fix} or use another file.")
    if not conv.rows:
        raise ValueError(f"{path}: no usable rows ({conv.summary()}). Fix: see ftlab.data.check_file.")
    return conv.rows


def sft_example(row: dict, tokenizer, cfg: TrainConfig) -> dict:
    """{"input_ids", "assistant_masks", "labels"}: a chat's tokens, which carry loss (1), and the labels
    (the token where the mask is 1, -100 where it is 0)."""
    view = loss_mask(row, tokenizer)  # assistant answers + their end-of-turn token
    ids, mask = view.input_ids, view.mask
    if "completion" in row:  # prompt/completion: only the completion's tokens (not earlier assistant turns)
        if cfg.completion_only_loss:
            head = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
            n_prompt = len(tokenizer(head, add_special_tokens=False)["input_ids"])
            mask = [0] * n_prompt + mask[n_prompt:]
        else:
            mask = [1] * len(ids)
    elif not cfg.assistant_only_loss:
        mask = [1] * len(ids)
    return {"input_ids": ids, "assistant_masks": mask, "labels": [t if m else -100 for t, m in zip(ids, mask)]}


def sft_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """Pre-tokenized SFT data with its labels; SFTTrainer truncates and packs it."""
    return Dataset.from_list([sft_example(r, tokenizer, cfg) for r in task_rows(path, tokenizer, cfg)])


def dpo_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """Conversational prompt/chosen/rejected rows, as DPOTrainer reads them."""
    return Dataset.from_list(task_rows(path, tokenizer, cfg))


def cpt_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """Raw text for continued pretraining: each paragraph's tokens + end-of-text, loss on every token; the
    trainer packs them into max_length sequences (wrapped: nothing is cut away)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows = []
    for r in task_rows(path, tokenizer, cfg):
        ids = tokenizer(r["text"], add_special_tokens=False)["input_ids"] + eos
        rows.append({"input_ids": ids, "assistant_masks": [1] * len(ids), "labels": list(ids)})
    return Dataset.from_list(rows)


def kto_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """KTO's unpaired rows from a preference file: prompt, completion, label (True: desirable)."""
    return Dataset.from_list(unpaired(task_rows(path, tokenizer, cfg)))


def grpo_example(row: dict) -> dict:
    """{"prompt": the chat up to the last user turn, "answer": the final assistant turn's text}."""
    if "completion" in row:  # prompt/completion rows
        return {"prompt": row["prompt"], "answer": "".join(m["content"] for m in row["completion"])}
    return {"prompt": row["messages"][:-1], "answer": row["messages"][-1]["content"]}


def grpo_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """Conversational prompts plus an `answer` column, which TRL passes to every reward function."""
    return Dataset.from_list([grpo_example(r) for r in task_rows(path, tokenizer, cfg)])


def training_dataset(path, tokenizer, cfg: TrainConfig) -> Dataset:
    """The dataset cfg.task trains on (sft_dataset, cpt_dataset, dpo_dataset for dpo and orpo, kto_dataset,
    grpo_dataset)."""
    make = {"cpt": cpt_dataset, "dpo": dpo_dataset, "orpo": dpo_dataset, "kto": kto_dataset,
            "grpo": grpo_dataset}.get(cfg.task, sft_dataset)
    return make(path, tokenizer, cfg)
