"""ftlab.examples for GRPO: chats and prompt/completion rows give prompt + answer; other files say why not."""

from pathlib import Path

import pytest

from ftlab.config import TrainConfig
from ftlab.examples import grpo_dataset

DATA = Path(__file__).resolve().parent.parent / "data"


def test_chat_rows_give_the_prompt_and_the_reference_answer(tokenizer):
    ds = grpo_dataset(DATA / "dates" / "test.jsonl", tokenizer, TrainConfig(task="grpo"))
    assert ds.column_names == ["prompt", "answer"] and len(ds) == 100
    assert ds[0]["prompt"][-1]["role"] == "user" and len(ds[0]["answer"]) == 10  # YYYY-MM-DD
    assert all(m["role"] != "assistant" for m in ds[0]["prompt"])  # the answer is never in the prompt


def test_prompt_completion_rows_work_too(tokenizer):
    with pytest.warns(UserWarning):  # the shipped CSV has two bad rows on purpose
        ds = grpo_dataset(DATA / "formats" / "prompt_completion.csv", tokenizer, TrainConfig(task="grpo"))
    assert ds[0]["answer"] == "2028-06-18" and ds[0]["prompt"][0]["role"] == "user"


def test_preference_rows_say_what_grpo_needs(tokenizer):
    with pytest.raises(ValueError, match="holds preference rows, but task=grpo needs prompts with a reference"):
        grpo_dataset(DATA / "dates" / "preference_test.jsonl", tokenizer, TrainConfig(task="grpo"))
