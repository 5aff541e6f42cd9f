"""Generate every dataset the course writes itself: `python data/make_data.py [--out DIR]`.

Tasks (OpenAI-chat JSONL, one {"messages": [user, assistant]} per line, the assistant turn is the answer):
  dates/    a date in one of ~25 written forms -> ISO `YYYY-MM-DD`; train/validation/test + DPO preference pairs
  numbers/  a number in English words -> digits ("three hundred and twelve" -> "312")
  formats/  30 dates rows in five input formats, with malformed rows on purpose (see MALFORMED and README.md)

Deterministic: one seeded `random.Random`, stdlib only, except pyarrow for the one parquet file.
Every prompt determines its answer: numeric dates state their field order, two-digit years say 20xx.
Underlying dates, and date strings, never repeat across splits; numbers never repeat either.
"""

from __future__ import annotations

import argparse
import calendar
import csv
import io
import json
import random
from datetime import date, timedelta
from pathlib import Path

SEED = 20240303
SIZES = {"train": 2000, "validation": 100, "test": 100}  # dates rows per split
PREF_SIZES = {"preference_train": 500, "preference_test": 50}
NUMBER_SIZES = {"train": 1000, "validation": 50, "test": 100}
N_FORMAT_ROWS = 30  # valid rows per formats/ file, before the malformed ones are inserted

FIRST_DAY, LAST_DAY = date(1950, 1, 1), date(2049, 12, 31)  # two-digit-year forms only for 2000..2049

MONTHS = list(calendar.month_name)[1:]  # "January".."December"; English names whatever the locale
MONTHS_ABBR = [m[:3] for m in MONTHS]  # "Jan".."Dec"
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]  # date.weekday() order

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ORD_ONES = ["", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
            "eighteenth", "nineteenth"]
ORD_TENS = {20: "twentieth", 30: "thirtieth"}

# ---------------------------------------------------------------- dates: written forms


def suffix(d: int) -> str:
    """English ordinal suffix: 1 -> "st", 2 -> "nd", 11 -> "th", 23 -> "rd"."""
    if 10 <= d % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")


def ordinal_words(d: int) -> str:
    """1..31 in ordinal words: 3 -> "third", 21 -> "twenty-first", 30 -> "thirtieth"."""
    if d < 20:
        return ORD_ONES[d]
    if d % 10 == 0:
        return ORD_TENS[d]
    return f"{TENS[d // 10]}-{ORD_ONES[d % 10]}"


def numeric(d: date, order: str, sep: str, pad: bool, year_digits: int = 4) -> str:
    """`order` is a permutation of "dmy", e.g. "mdy" with sep "/" -> "03/07/2021" (pad) or "3/7/2021"."""
    year = f"{d.year % 100:02d}" if year_digits == 2 else str(d.year)
    fields = {"d": f"{d.day:02d}" if pad else str(d.day), "m": f"{d.month:02d}" if pad else str(d.month), "y": year}
    return sep.join(fields[c] for c in order)


def order_note(rng: random.Random, order: str, sep: str) -> str:
    """A sentence that fixes the field order: "It is written month/day/year (US style)."."""
    words = sep.join({"d": "day", "m": "month", "y": "year"}[c] for c in order)
    style = {"mdy": " (US style)", "dmy": " (European style)", "ymd": ""}[order]
    return rng.choice([f"It is written {words}{style}.", f"Read it as {words}{style}.",
                       f"The date uses {words} order.", f"Format of the input: {words}."])


def short_year_note(rng: random.Random) -> str:
    return rng.choice(["Two-digit years mean 20xx.", "The year is in the 2000s.", "Years are 20xx."])


# Each form: (name, needs a two-digit 20xx year, function (date, rng) -> (date string, note or "")).
def _written(d, rng):
    m = rng.choice([MONTHS[d.month - 1], MONTHS[d.month - 1].upper(), MONTHS[d.month - 1].lower()])
    return rng.choice([f"{m} {d.day}, {d.year}", f"{m} {d.day} {d.year}"]), ""


FORMS = [
    ("month_d_y", False, _written),
    ("month_dth_y", False, lambda d, r: (f"{MONTHS[d.month - 1]} {d.day}{suffix(d.day)}, {d.year}", "")),
    ("d_month_y", False, lambda d, r: (f"{d.day} {MONTHS[d.month - 1]} {d.year}", "")),
    ("dth_month_y", False, lambda d, r: (f"{d.day}{suffix(d.day)} {MONTHS[d.month - 1]} {d.year}", "")),
    ("the_dth_of_month_y", False,
     lambda d, r: (f"the {d.day}{suffix(d.day)} of {MONTHS[d.month - 1]}, {d.year}", "")),
    ("mon_d_y", False, lambda d, r: (f"{MONTHS_ABBR[d.month - 1]} {d.day}, {d.year}", "")),
    ("d_mon_y", False, lambda d, r: (f"{d.day} {MONTHS_ABBR[d.month - 1]} {d.year}", "")),
    ("dd-mon-y", False, lambda d, r: (f"{d.day:02d}-{MONTHS_ABBR[d.month - 1]}-{d.year}", "")),
    ("month_the_ordword_y", False,
     lambda d, r: (f"{MONTHS[d.month - 1]} the {ordinal_words(d.day)}, {d.year}", "")),
    ("the_ordword_of_month_y", False,
     lambda d, r: (f"the {ordinal_words(d.day)} of {MONTHS[d.month - 1]} {d.year}", "")),
    ("weekday_month_d_y", False,
     lambda d, r: (f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}", "")),
    ("wkd_d_mon_y", False,
     lambda d, r: (f"{WEEKDAYS[d.weekday()][:3]} {d.day} {MONTHS_ABBR[d.month - 1]} {d.year}", "")),
    ("weekday_the_dth_of_month_y", False,
     lambda d, r: (f"{WEEKDAYS[d.weekday()]} the {d.day}{suffix(d.day)} of {MONTHS[d.month - 1]}, {d.year}", "")),
    ("mon_d_'yy", True, lambda d, r: (f"{MONTHS_ABBR[d.month - 1]} {d.day} '{d.year % 100:02d}", short_year_note(r))),
    ("d_month_'yy", True, lambda d, r: (f"{d.day} {MONTHS[d.month - 1]} '{d.year % 100:02d}", short_year_note(r))),
    ("mdy_slash", False, lambda d, r: (numeric(d, "mdy", "/", r.random() < 0.5), order_note(r, "mdy", "/"))),
    ("dmy_slash", False, lambda d, r: (numeric(d, "dmy", "/", r.random() < 0.5), order_note(r, "dmy", "/"))),
    ("mdy_dash", False, lambda d, r: (numeric(d, "mdy", "-", True), order_note(r, "mdy", "-"))),
    ("dmy_dash", False, lambda d, r: (numeric(d, "dmy", "-", True), order_note(r, "dmy", "-"))),
    ("dmy_dot", False, lambda d, r: (numeric(d, "dmy", ".", r.random() < 0.5), order_note(r, "dmy", "."))),
    ("ymd_dot", False, lambda d, r: (numeric(d, "ymd", ".", True), order_note(r, "ymd", "."))),
    ("ymd_slash", False, lambda d, r: (numeric(d, "ymd", "/", True), order_note(r, "ymd", "/"))),
    ("compact", False, lambda d, r: (numeric(d, "ymd", "", True), "It is written YYYYMMDD.")),
    ("mdy_slash_yy", True,
     lambda d, r: (numeric(d, "mdy", "/", True, 2), order_note(r, "mdy", "/") + " " + short_year_note(r))),
    ("dmy_slash_yy", True,
     lambda d, r: (numeric(d, "dmy", "/", True, 2), order_note(r, "dmy", "/") + " " + short_year_note(r))),
]

# The date always ends the prompt, on its own line, after "Date: ", "Input: " or nothing.
DATE_INSTRUCTIONS = [
    "Convert this date to ISO 8601 format (YYYY-MM-DD).",
    "Rewrite the date as YYYY-MM-DD. Reply with the date only.",
    "What is this date in YYYY-MM-DD form?",
    "Normalize the date to ISO format (YYYY-MM-DD).",
    "Give the ISO date for the following.",
    "Output the date below as YYYY-MM-DD and nothing else.",
    "Turn this into an ISO 8601 date.",
]
DATE_LEADS = ["", "Date: ", "Input: "]


def date_prompt(d: date, rng: random.Random, used: set[str]) -> tuple[str, str]:
    """(user message, date string) for `d` in a random form whose date string is not in `used`."""
    forms = [f for f in FORMS if not f[1] or d.year >= 2000]
    for _ in range(50):
        _, _, make = rng.choice(forms)
        text, note = make(d, rng)
        if text not in used:
            break
    else:
        raise RuntimeError(f"no unused written form left for {d}")  # never happens with ~25 forms
    used.add(text)
    instruction = rng.choice(DATE_INSTRUCTIONS)
    head = f"{instruction} {note}" if note else instruction
    return f"{head}\n{rng.choice(DATE_LEADS)}{text}", text


def chat_row(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def draw_dates(rng: random.Random, n: int) -> list[date]:
    """n distinct days between FIRST_DAY and LAST_DAY, uniformly."""
    span = (LAST_DAY - FIRST_DAY).days + 1
    return [FIRST_DAY + timedelta(days=k) for k in rng.sample(range(span), n)]


# ---------------------------------------------------------------- dates: requests worded every which way
# A model that has only seen "instruction\n<date>" learns the template, not the task: on requests worded
# otherwise (the date inside a sentence, other spellings, no "date only") it slipped day and month. So
# train_varied.jsonl is train.jsonl with 80% of its rows reworded (the main job trains on it; the notebooks'
# short runs keep train.jsonl), and a second test split uses wordings and spellings that no training row
# uses. Both draw from their own seeded random.Random, so every other file stays byte for byte the same.

VARIED_SHARE = 0.8  # of the training rows, in train_varied.jsonl (half of them: 94% on test.jsonl, 88% unseen)
N_UNSEEN = 100  # rows of dates/test_unseen.jsonl
TOWNS = ["Ghent", "Tromsø", "Valparaíso", "Kraków", "Hobart", "Nairobi", "Osaka", "Leeds", "Quito", "Tartu"]


def _abbr(m: int, rng: random.Random) -> str:
    """An abbreviated month as people write it: "Mar", "Mar.", "Sept", "Sept."; May stays "May"."""
    short = "Sept" if m == 9 and rng.random() < 0.5 else MONTHS_ABBR[m - 1]
    return short + ("." if m != 5 and rng.random() < 0.5 else "")


# Spellings the training rows use beside FORMS: (name, function (date, rng) -> date string)
EXTRA_FORMS = [
    ("abbr_d_y", lambda d, r: f"{_abbr(d.month, r)} {d.day}, {d.year}"),
    ("d_abbr_y", lambda d, r: f"{d.day} {_abbr(d.month, r)} {d.year}"),
    ("MON_d_y", lambda d, r: f"{MONTHS_ABBR[d.month - 1].upper()} {d.day} {d.year}"),
    ("dth_of_month_y", lambda d, r: f"{d.day}{suffix(d.day)} of {MONTHS[d.month - 1]} {d.year}"),
    ("month_dth_y", lambda d, r: f"{MONTHS[d.month - 1]} {d.day}{suffix(d.day)} {d.year}"),
    ("month_0d_y", lambda d, r: f"{MONTHS[d.month - 1]} {d.day:02d}, {d.year}"),
    ("y_month_d", lambda d, r: f"{d.year} {MONTHS[d.month - 1]} {d.day}"),
    ("the_dth_day_of_month_y", lambda d, r: f"the {d.day}{suffix(d.day)} day of {MONTHS[d.month - 1]}, {d.year}"),
    ("d_month_lower_y", lambda d, r: f"{d.day} {MONTHS[d.month - 1].lower()}, {d.year}"),
]
# Spellings only the unseen split uses: pieces the training rows have, put together in new ways
UNSEEN_FORMS = [
    ("dth_abbr_y", lambda d, r: f"{d.day}{suffix(d.day)} {_abbr(d.month, r)} {d.year}"),
    ("abbr_dth_y", lambda d, r: f"{_abbr(d.month, r)} {d.day}{suffix(d.day)} {d.year}"),
    ("d_month_comma_y", lambda d, r: f"{d.day} {MONTHS[d.month - 1]}, {d.year}"),
    ("weekday_month_dth_y", lambda d, r: f"{WEEKDAYS[d.weekday()]} {MONTHS[d.month - 1]} {d.day}{suffix(d.day)} {d.year}"),
]

# {date} is the date string; {n} a number and {town} a place, so that other numbers stand beside the date
VARIED_FRAMES = [
    "Please convert {date} to YYYY-MM-DD.",
    "Can you write {date} in ISO 8601 format?",
    "What's {date} as an ISO date?",
    "{date}: give me this date in YYYY-MM-DD.",
    "Express {date} in the form YYYY-MM-DD.",
    "I need {date} formatted as year-month-day (YYYY-MM-DD).",
    "Reformat the date {date} as YYYY-MM-DD.",
    "The meeting was moved to {date}. Write that date in YYYY-MM-DD form.",
    "My grandmother was born on {date}. What is her birth date in ISO format?",
    "The invoice is dated {date}. Give the date as YYYY-MM-DD.",
    "We signed the lease on {date}. Convert that date to ISO 8601.",
    "Order #{n} shipped on {date}. What is the shipping date in YYYY-MM-DD?",
    "Deadline: {date}. Restate the deadline as an ISO date.",
    'The photo is labelled "{date}". Which ISO date (YYYY-MM-DD) is that?',
    "In {town}, bridge {n} opened on {date}. Give the opening date as YYYY-MM-DD.",
    "{date}\nWhat is that in ISO 8601 (YYYY-MM-DD)?",
    "Here is a date: {date}. Please give the ISO version.",
]
VARIED_ENDINGS = ["", "", " Answer with the date only.", " Only the date, please.", " Reply with just the date."]
UNSEEN_FRAMES = [
    "Could you turn {date} into the YYYY-MM-DD format?",
    "How would {date} look written the ISO way (year-month-day)?",
    "Standardize this date for a DATE column (YYYY-MM-DD): {date}",
    "Our records say the warranty started {date}. I need it as YYYY-MM-DD for the form.",
    "She moved to {town} on {date} and never came back. Give that day in ISO 8601.",
    "Quick one: {date} in ISO?",
    "Log entry from {date}: pump {n} failed. Put the entry's date in YYYY-MM-DD format.",
    "Translate the date {date} into a machine-readable ISO 8601 date.",
    "When is {date} in YYYY-MM-DD notation? No explanation needed.",
    "The ceremony is on {date}, in the afternoon. Write the day of the ceremony as YYYY-MM-DD.",
    'date = "{date}"  # convert to ISO (YYYY-MM-DD)',
    "Room {n} is booked for {date}. Which ISO date is the booking?",
]
UNSEEN_ENDINGS = ["", "", " Just the date.", " Output only YYYY-MM-DD."]


def varied_prompt(d: date, rng: random.Random, used: set[str], unseen: bool = False) -> str:
    """A request for `d` worded by VARIED_FRAMES (or UNSEEN_FRAMES), its date in a FORMS or EXTRA_FORMS spelling
    (the unseen split: half in UNSEEN_FORMS) not in `used`; a numeric date keeps its field-order note."""
    forms = [(make, True) for _, short, make in FORMS if not short or d.year >= 2000]
    forms += [(make, False) for _, make in EXTRA_FORMS]
    for _ in range(50):
        if unseen and rng.random() < 0.5:
            text, note = rng.choice(UNSEEN_FORMS)[1](d, rng), ""
        else:
            make, with_note = rng.choice(forms)
            text, note = make(d, rng) if with_note else (make(d, rng), "")
        if text not in used:
            break
    else:
        raise RuntimeError(f"no unused spelling left for {d}")
    used.add(text)
    frame = rng.choice(UNSEEN_FRAMES if unseen else VARIED_FRAMES)
    request = frame.format(date=text, n=rng.randint(2, 9999), town=rng.choice(TOWNS))
    ending = rng.choice(UNSEEN_ENDINGS if unseen else VARIED_ENDINGS)
    return f"{request}{' ' + note if note else ''}{ending}"


# ---------------------------------------------------------------- dates: DPO preference pairs


def rejected_answer(d: date, rng: random.Random) -> str:
    """A plausible wrong answer for `d`: swapped day/month, another format, year off by one, wrong day, chat."""
    iso = d.isoformat()
    kinds = ["format", "year", "day", "chatty"] + (["swap", "swap"] if d.day <= 12 and d.day != d.month else [])
    kind = rng.choice(kinds)
    if kind == "swap":
        return f"{d.year}-{d.day:02d}-{d.month:02d}"
    if kind == "format":
        return rng.choice([numeric(d, "mdy", "/", True), numeric(d, "dmy", ".", True),
                           f"{MONTHS[d.month - 1]} {d.day}, {d.year}", numeric(d, "ymd", "/", True)])
    if kind == "year":
        return d.replace(year=d.year + rng.choice([-1, 1])).isoformat() if (d.month, d.day) != (2, 29) \
            else f"{d.year + 1}-03-01"
    if kind == "day":
        return (d + timedelta(days=rng.choice([-1, 1]))).isoformat()
    return rng.choice([f"Sure! The date in ISO format is {iso}.", f"The ISO 8601 form of that date is {iso}.",
                       f"{iso} (YYYY-MM-DD)", f"Here is the converted date: {iso}"])


def preference_row(user: str, d: date, rng: random.Random) -> dict:
    return {"prompt": [{"role": "user", "content": user}],
            "chosen": [{"role": "assistant", "content": d.isoformat()}],
            "rejected": [{"role": "assistant", "content": rejected_answer(d, rng)}]}


# ---------------------------------------------------------------- numbers


def number_words(n: int, british: bool) -> str:
    """0 <= n < 10**9 in English words; british adds "and" before the last tens ("one hundred and five")."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            words = f"{number_words(head, british)} {name}"
            if rest == 0:
                return words
            joiner = " and " if british and rest < 100 else " "
            return words + joiner + number_words(rest, british)
    raise AssertionError(n)


NUMBER_INSTRUCTIONS = [
    "Write this number in digits only (no commas or spaces).",
    "Convert the number to digits. Answer with the digits only, no separators.",
    "What is this number as digits? Reply with just the digits, no commas.",
    "Spell this number with digits only.",
]


def draw_number(rng: random.Random) -> int:
    """Mostly 4..7 digit numbers, where the base model stumbles; some small ones for variety."""
    digits = rng.choices([2, 3, 4, 5, 6, 7], weights=[1, 2, 3, 3, 3, 2])[0]
    return rng.randrange(10 ** (digits - 1), 10**digits)


def number_row(n: int, rng: random.Random) -> dict:
    words = number_words(n, british=rng.random() < 0.5)
    if rng.random() < 0.15:  # sentence-initial capital, as numbers appear in prose
        words = words[0].upper() + words[1:]
    return chat_row(f"{rng.choice(NUMBER_INSTRUCTIONS)}\n{rng.choice(['', 'Number: '])}{words}", str(n))


# ---------------------------------------------------------------- formats/ (with malformed rows on purpose)

LONG_FILLER = "Please read carefully. " * 300  # ~6,900 characters: a row far over any sensible max_length

# Row index (0-based, after insertion) -> why it is malformed. README.md lists the same rows.
MALFORMED = {
    "alpaca.json": {4: "no 'output' key", 9: "empty output", 15: "output is a number, not a string",
                    22: "very long input (~7,000 characters)"},
    "sharegpt.json": {3: "unknown role 'bot'", 8: "conversation ends with the human",
                      14: "broken alternation: human, human, gpt", 20: "empty gpt value"},
    "openai.jsonl": {5: "line is not JSON (truncated)", 11: "unknown role 'robot'", 17: "ends with the user",
                     24: "assistant content is a number, not a string"},
    "prompt_completion.csv": {6: "empty completion", 13: "very long prompt (~7,000 characters)",
                              19: "only one field: the completion column is missing"},
    "preference.parquet": {2: "chosen is null", 10: "rejected is empty", 18: "chosen equals rejected"},
}
VALID_SYSTEM_ROW = 2  # openai.jsonl row 2 has a system message: valid, shows that system turns are allowed


def _insert(valid: list, bad: dict[int, object]) -> list:
    """valid rows with each bad row placed at its index in the result."""
    rows, it = [], iter(valid)
    for i in range(len(valid) + len(bad)):
        rows.append(bad[i] if i in bad else next(it))
    return rows


def format_files(examples: list[tuple[str, str, date]], rng: random.Random) -> dict[str, bytes]:
    """The same dates examples (instruction, date string, date) in each input format, as file bytes."""
    def iso(i: int) -> str:
        return examples[i][2].isoformat()
    inst = [e[0] for e in examples]
    text = [e[1] for e in examples]
    user = [f"{a}\n{b}" for a, b in zip(inst, text)]
    files = {}

    alpaca = [{"instruction": a, "input": b, "output": iso(i)} for i, (a, b) in enumerate(zip(inst, text))]
    # malformed rows reuse the first examples' content
    bad = {4: {"instruction": inst[0], "input": text[0]},
           9: {"instruction": inst[1], "input": text[1], "output": ""},
           15: {"instruction": inst[2], "input": text[2], "output": int(iso(2).replace("-", ""))},
           22: {"instruction": inst[3], "input": LONG_FILLER + text[3], "output": iso(3)}}
    files["alpaca.json"] = _dump_json(_insert(alpaca, bad))

    def conv(*turns):
        return {"conversations": [{"from": f, "value": v} for f, v in turns]}
    sharegpt = [conv(("human", u), ("gpt", iso(i))) for i, u in enumerate(user)]
    bad = {3: conv(("human", user[0]), ("bot", iso(0))), 8: conv(("human", user[1])),
           14: conv(("human", inst[2]), ("human", text[2]), ("gpt", iso(2))),
           20: conv(("human", user[3]), ("gpt", ""))}
    files["sharegpt.json"] = _dump_json(_insert(sharegpt, bad))

    openai = [json.dumps(chat_row(u, iso(i)), ensure_ascii=False) for i, u in enumerate(user)]
    system = {"role": "system", "content": "You convert dates to ISO 8601."}
    openai[VALID_SYSTEM_ROW] = json.dumps({"messages": [system] + chat_row(user[2], iso(2))["messages"]})
    bad = {5: json.dumps(chat_row(user[0], iso(0)))[:-7],
           11: json.dumps({"messages": [{"role": "user", "content": user[1]},
                                        {"role": "robot", "content": iso(1)}]}),
           17: json.dumps({"messages": [{"role": "user", "content": user[2]}]}),
           24: json.dumps({"messages": [{"role": "user", "content": user[3]},
                                        {"role": "assistant", "content": int(iso(3).replace("-", ""))}]})}
    files["openai.jsonl"] = "".join(line + "\n" for line in _insert(openai, bad)).encode()

    rows = [[u, iso(i)] for i, u in enumerate(user)]
    bad = {6: [user[0], ""], 13: [LONG_FILLER + user[1], iso(1)], 19: [user[2]]}
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([["prompt", "completion"]] + _insert(rows, bad))
    files["prompt_completion.csv"] = buf.getvalue().encode()

    pref = [{"prompt": u, "chosen": iso(i), "rejected": rejected_answer(examples[i][2], rng)}
            for i, u in enumerate(user)]
    bad = {2: {"prompt": user[0], "chosen": None, "rejected": rejected_answer(examples[0][2], rng)},
           10: {"prompt": user[1], "chosen": iso(1), "rejected": ""},
           18: {"prompt": user[2], "chosen": iso(2), "rejected": iso(2)}}
    files["preference.parquet"] = _parquet_bytes(_insert(pref, bad))
    return files


def _dump_json(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode()


def _parquet_bytes(rows: list[dict]) -> bytes:
    """rows -> parquet bytes; pyarrow is the generator's only non-stdlib import, and only here."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("formats/preference.parquet needs pyarrow: pip install pyarrow") from e
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in ("prompt", "chosen", "rejected")})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------- main


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def build() -> dict[str, bytes]:
    """Every generated file: relative path -> bytes. Same seed, same bytes."""
    rng = random.Random(SEED)
    files = {}

    # dates: one pool of distinct days, cut into splits, so no day (and no date string) repeats anywhere
    counts = {**SIZES, **PREF_SIZES, "formats": N_FORMAT_ROWS}
    pool = draw_dates(rng, sum(counts.values()))
    used: set[str] = set()  # date strings already written: "03/04/2021" could otherwise be two days
    start, train_rows = 0, []
    for name, n in counts.items():
        days, start = pool[start:start + n], start + n
        if name in SIZES:
            rows = [chat_row(date_prompt(d, rng, used)[0], d.isoformat()) for d in days]
            files[f"dates/{name}.jsonl"] = _jsonl(rows)
            if name == "train":
                train_rows = rows
        elif name in PREF_SIZES:
            files[f"dates/{name}.jsonl"] = _jsonl([preference_row(date_prompt(d, rng, used)[0], d, rng)
                                                   for d in days])
        else:
            examples = []
            for d in days:
                user, text = date_prompt(d, rng, used)
                examples.append((user.rsplit("\n", 1)[0], text, d))
            for fname, data in format_files(examples, rng).items():
                files[f"formats/{fname}"] = data

    # the unseen split first, on days no other file uses, so that it does not move when train_varied's share
    # changes; then train_varied: the training rows with VARIED_SHARE of them reworded (each from its own rng)
    unseen = random.Random(SEED + 2)
    taken = set(pool)
    span = (LAST_DAY - FIRST_DAY).days + 1
    days = [d for d in (FIRST_DAY + timedelta(days=k) for k in unseen.sample(range(span), 4 * N_UNSEEN))
            if d not in taken][:N_UNSEEN]
    files["dates/test_unseen.jsonl"] = _jsonl([chat_row(varied_prompt(d, unseen, used, unseen=True), d.isoformat())
                                               for d in days])
    varied, train_varied = random.Random(SEED + 1), list(train_rows)
    train_days = pool[:SIZES["train"]]
    for i in sorted(varied.sample(range(SIZES["train"]), int(VARIED_SHARE * SIZES["train"]))):
        train_varied[i] = chat_row(varied_prompt(train_days[i], varied, used), train_days[i].isoformat())
    files["dates/train_varied.jsonl"] = _jsonl(train_varied)

    numbers: set[int] = set()
    for split, n in NUMBER_SIZES.items():
        rows = []
        while len(rows) < n:
            x = draw_number(rng)
            if x not in numbers:
                numbers.add(x)
                rows.append(number_row(x, rng))
        files[f"numbers/{split}.jsonl"] = _jsonl(rows)
    return files


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder to write dates/, numbers/, formats/ into (default: this data/ folder)")
    args = parser.parse_args(argv)
    for rel, data in build().items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path}  {len(data):,} bytes")


if __name__ == "__main__":
    main()
