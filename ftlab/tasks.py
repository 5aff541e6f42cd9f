"""Score a model on the course's own tasks (data/dates, data/numbers): one exactly checkable answer per row.

`load_split("dates", "test")` reads the rows; `exact_match` and `contains` check an answer (ftlab.evaluation
generates the answers and scores them with these). Answer checking is deliberately strict: `normalize` forgives only wrapping (whitespace,
quotes, backticks, one trailing period), never content ("2021-3-3" is wrong for "2021-03-03").
Not here: the generator of the data (data/make_data.py) and loss-based metrics (training reports).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ftlab.shipped import data_dir

DATA_DIR = data_dir()  # the shipped data/ folder (ftlab.shipped): inside the wheel, or data/ in a checkout
QUOTES = "\"'`"


def normalize(text: str) -> str:
    """Strip whitespace, then repeatedly one trailing "." and one pair of matching surrounding ", ' or `.

    Case, inner spaces and everything else are kept: '  "`2021-03-03`." ' -> '2021-03-03'.
    """
    prev = None
    while text != prev:
        prev = text
        text = text.strip().removesuffix(".")
        if len(text) >= 2 and text[0] == text[-1] and text[0] in QUOTES:
            text = text[1:-1]
    return text


def exact_match(prediction: str, reference: str) -> bool:
    """normalize(prediction) == normalize(reference)."""
    return normalize(prediction) == normalize(reference)


def contains(prediction: str, reference: str) -> bool:
    """The normalized reference occurs in the prediction, not glued to a letter or digit on either side.

    "The date is 2021-03-03." contains "2021-03-03"; "1312" does not contain "312".
    """
    ref = normalize(reference)
    if not ref:
        raise ValueError("empty reference: every row needs a non-empty answer; check the dataset")
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(ref)}(?![0-9A-Za-z])", prediction) is not None


def load_split(task: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """Rows of data/<task>/<split>.jsonl, e.g. load_split("dates", "test") -> 100 {"messages": [...]} dicts."""
    path = Path(data_dir or DATA_DIR) / task / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no split file at {path}: the shipped tasks are "
                                f"{sorted(p.name for p in DATA_DIR.iterdir() if (p / 'train.jsonl').is_file())}; "
                                f"or pass data_dir= the folder holding {task}/{split}.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prompts_and_references(rows: list[dict]) -> tuple[list[list[dict]], list[str]]:
    """(each row's messages without the final assistant turn, that turn's content)."""
    prompts, refs = [], []
    for i, row in enumerate(rows):
        messages = row["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError(f"row {i} does not end with an assistant message: it has no reference answer")
        prompts.append(messages[:-1])
        refs.append(messages[-1]["content"])
    return prompts, refs
