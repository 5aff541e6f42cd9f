"""Write dates_mc.jsonl: data/dates/preference_test.jsonl as multiple choice (question, choices, gold).

Why a copy: `datasets` reads a JSON column whose every value looks like a date ("1976-02-22") as
timestamps, which is what the preference file's `chosen` column is; a `choices` list that mixes the
right date with the mistake stays text. Deterministic: run it again and the file is the same.
    python data/lm_eval/make_dates_mc.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "dates" / "preference_test.jsonl"


def rows() -> list[dict]:
    out = []
    for line in SOURCE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out.append({"question": row["prompt"][-1]["content"],
                    "choices": [row["chosen"][-1]["content"], row["rejected"][-1]["content"]], "gold": 0})
    return out


if __name__ == "__main__":
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows())
    (HERE / "dates_mc.jsonl").write_text(text, encoding="utf-8")
