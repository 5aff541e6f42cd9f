"""The generated datasets (data/make_data.py) and their scorer (ftlab/tasks.py)."""

import csv
import importlib.util
import itertools
import json
import re
import subprocess
import sys
from datetime import date, datetime

import pytest

from ftlab.tasks import DATA_DIR, contains, exact_match, load_split, normalize, prompts_and_references

GENERATOR = DATA_DIR / "make_data.py"
spec = importlib.util.spec_from_file_location("make_data", GENERATOR)
make_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_data)

# ---------------------------------------------------------------- generator


def test_generator_is_deterministic_and_matches_committed_files(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len(files) == 15
    for rel in files:
        first = (outs[0] / rel).read_bytes()
        assert first == (outs[1] / rel).read_bytes(), f"{rel} differs between two runs"
        assert first == (DATA_DIR / rel).read_bytes(), f"committed data/{rel} is stale: rerun make_data.py"


def test_split_sizes():
    splits = ("train", "train_varied", "validation", "test", "test_unseen")
    sizes = {s: len(load_split("dates", s)) for s in splits}
    assert sizes == {"train": 2000, "train_varied": 2000, "validation": 100, "test": 100, "test_unseen": 100}
    assert [len(load_split("numbers", s)) for s in ("train", "validation", "test")] == [1000, 50, 100]
    assert [len(load_split("dates", s)) for s in ("preference_train", "preference_test")] == [500, 50]


# ---------------------------------------------------------------- dates: parse each prompt back, independently

WORD_DAYS = {w: i for i, w in enumerate([
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
    "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth",
    "twentieth"], start=1)}
WORD_DAYS |= {f"twenty-{w}": 20 + i for w, i in list(WORD_DAYS.items())[:9]}
WORD_DAYS |= {"thirtieth": 30, "thirty-first": 31}


def parse_prompt(prompt: str) -> date:
    """The date a dates prompt describes, read with strptime and the field order the prompt states."""
    text = prompt.rsplit("\n", 1)[1].split(": ")[-1]  # last line, after "Date: " / "Input: "
    order = re.search(r"(day|month|year)([/.-])(day|month|year)\2(day|month|year)", prompt)
    if "YYYYMMDD" in prompt:
        return datetime.strptime(text, "%Y%m%d").date()
    if order:
        sep = order.group(2)
        fmt = sep.join({"day": "%d", "month": "%m", "year": "%Y"}[order.group(k)] for k in (1, 3, 4))
        if "20xx" in prompt or "2000s" in prompt:
            fmt = fmt.replace("%Y", "%y")  # strptime reads 00..68 as 2000..2068; the data uses 2000..2049
        return datetime.strptime(text, fmt).date()
    words = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", text)
    weekday = re.match(r"(\w+day|Mon|Tue|Wed|Thu|Fri|Sat|Sun)\b,? ", words)
    if weekday:
        words = words[weekday.end():]
    for w, n in sorted(WORD_DAYS.items(), key=lambda kv: -len(kv[0])):  # "twenty-eighth" before "eighth"
        words = re.sub(rf"\b{w}\b", str(n), words)
    words = re.sub(r"\bSept\b", "Sep", words).replace(".", " ")  # "Sept. 5": strptime knows "Sep"
    words = re.sub(r"\b(the|of|day)\b|,", " ", words)
    words = re.sub(r"'(\d\d)$", r"20\1", words) if "20xx" in prompt or "2000s" in prompt else words
    words = " ".join(words.split()).replace("-", " ")
    for fmt in ("%B %d %Y", "%d %B %Y", "%b %d %Y", "%d %b %Y", "%Y %B %d"):
        try:
            parsed = datetime.strptime(words, fmt).date()
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"cannot parse {text!r}")
    if weekday:
        assert parsed.strftime("%A").startswith(weekday.group(1)), f"wrong weekday in {text!r}"
    return parsed


# the one-template requests: "instruction\n<date>"
TEMPLATED = re.compile("|".join(re.escape(i) for i in make_data.DATE_INSTRUCTIONS))
NOTE = r"(?: (?:It is written|Read it as|The date uses|Format of the input|Two-digit years|The year is|Years are).*?\.)*"


def request_date(prompt: str, frames) -> str:
    """A reworded request's date string and field-order note as parse_prompt reads them ("note\ndate"), found
    by matching the request against its frames; the date itself is parsed by parse_prompt, independently."""
    endings = "|".join(re.escape(e) for e in make_data.VARIED_ENDINGS + make_data.UNSEEN_ENDINGS if e)
    for frame in frames:
        pattern = re.escape(frame).replace(r"\{date\}", "(?P<date>.+?)").replace(r"\{n\}", r"\d+")
        pattern = pattern.replace(r"\{town\}", r"\S+")
        m = re.fullmatch(f"{pattern}(?P<note>{NOTE})(?:{endings})?", prompt, flags=re.DOTALL)
        if m:
            return f"{m['note']}\n{m['date']}"
    raise AssertionError(f"no frame matches {prompt!r}")


@pytest.mark.parametrize("split", ["train", "train_varied", "validation", "test", "test_unseen"])
def test_answers_are_the_dates_the_prompts_describe(split):
    prompts, refs = prompts_and_references(load_split("dates", split))
    frames = make_data.UNSEEN_FRAMES if split == "test_unseen" else make_data.VARIED_FRAMES
    for messages, ref in zip(prompts, refs):
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ref) and date.fromisoformat(ref)
        prompt = messages[-1]["content"]
        if not (split != "test_unseen" and TEMPLATED.match(prompt)):  # reworded: find the date in the sentence
            prompt = request_date(prompt, frames)
        assert parse_prompt(prompt).isoformat() == ref, messages[-1]["content"]


def test_most_training_rows_are_reworded_and_the_unseen_split_shares_no_wording():
    train, varied = (load_split("dates", s) for s in ("train", "train_varied"))
    assert [r["messages"][-1] for r in train] == [r["messages"][-1] for r in varied]  # same days, same answers
    assert all(TEMPLATED.match(r["messages"][0]["content"]) for r in train)
    reworded = [r["messages"][0]["content"] for r in varied if not TEMPLATED.match(r["messages"][0]["content"])]
    assert len(reworded) == 1600  # 80% of 2,000 (make_data.VARIED_SHARE)
    unseen = [m[-1]["content"] for m in prompts_and_references(load_split("dates", "test_unseen"))[0]]
    assert not any(TEMPLATED.match(p) for p in unseen)
    for prompt in unseen:  # no training frame words an unseen request, and vice versa
        with pytest.raises(AssertionError, match="no frame matches"):
            request_date(prompt, make_data.VARIED_FRAMES)
    for prompt in reworded[:200]:
        with pytest.raises(AssertionError, match="no frame matches"):
            request_date(prompt, make_data.UNSEEN_FRAMES)
    answers = {r["messages"][-1]["content"] for r in load_split("dates", "test_unseen")}
    for split in ("train", "validation", "test", "preference_train", "preference_test"):  # no day twice
        rows = load_split("dates", split)
        days = {r["messages"][-1]["content"] if "messages" in r else r["chosen"][0]["content"] for r in rows}
        assert not answers & days, split


def test_preference_pairs_chosen_is_right_rejected_is_wrong():
    for split in ("preference_train", "preference_test"):
        for row in load_split("dates", split):
            chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
            assert parse_prompt(row["prompt"][0]["content"]).isoformat() == chosen
            assert rejected and not exact_match(rejected, chosen)


def test_many_written_forms_are_used():
    texts = [m[0]["content"].rsplit("\n", 1)[1] for m in prompts_and_references(load_split("dates", "train"))[0]
             if not request_date_or_none(m[0]["content"])]
    shapes = {re.sub(r"[A-Za-z]+", "a", re.sub(r"\d+", "9", t)) for t in texts}
    assert len(shapes) >= 15


def request_date_or_none(prompt: str) -> str | None:
    """The date string of a reworded training request; None for an "instruction\n<date>" one."""
    return None if TEMPLATED.match(prompt) else request_date(prompt, make_data.VARIED_FRAMES).rsplit("\n", 1)[1]


def _date_strings(task, split):
    prompts = [m[-1]["content"] for m in prompts_and_references(load_split(task, split))[0]]
    if task == "dates":
        return {request_date_or_none(p) or p.rsplit("\n", 1)[1].split(": ")[-1] for p in prompts}
    return {p.rsplit("\n", 1)[1].split(": ")[-1] for p in prompts}


def test_no_overlap_between_train_and_test():
    train, test = load_split("dates", "train"), load_split("dates", "test")
    assert not _date_strings("dates", "train") & _date_strings("dates", "test")
    assert not _date_strings("dates", "train_varied") & (_date_strings("dates", "test") | _date_strings("dates", "validation"))
    answers = {r["messages"][-1]["content"] for r in train}
    assert not answers & {r["messages"][-1]["content"] for r in test}  # not even the same day
    numbers = {r["messages"][-1]["content"] for r in load_split("numbers", "train")}
    assert not numbers & {r["messages"][-1]["content"] for r in load_split("numbers", "test")}


def test_number_words_round_trip():
    for row in load_split("numbers", "test"):
        words = row["messages"][0]["content"].rsplit("\n", 1)[1].split(": ")[-1]
        assert words[0].lower() + words[1:] in (make_data.number_words(int(row["messages"][1]["content"]), b)
                                                for b in (True, False))
    assert make_data.number_words(312, british=True) == "three hundred and twelve"
    assert make_data.number_words(1_000_005, british=False) == "one million five"
    assert make_data.number_words(40_070, british=True) == "forty thousand and seventy"


# ---------------------------------------------------------------- formats/: exactly the planned malformed rows


def _bad_alpaca(r):
    return not isinstance(r.get("output"), str) or not r["output"] or len(r["input"]) > 1000


def _bad_turns(turns, roles):
    if any(not isinstance(t[1], str) or not t[1] for t in turns) or any(t[0] not in roles for t in turns):
        return True
    speakers = [t[0] for t in turns if t[0] != "system"]
    return speakers[-1] != roles[-1] or any(a == b for a, b in itertools.pairwise(speakers))


def _openai_bad(line):
    try:
        msgs = json.loads(line)["messages"]
    except json.JSONDecodeError:
        return True
    return _bad_turns([(m["role"], m["content"]) for m in msgs], ("system", "user", "assistant"))


def test_formats_have_exactly_the_planned_malformed_rows():
    fmt = DATA_DIR / "formats"
    found = {
        "alpaca.json": [_bad_alpaca(r) for r in json.loads((fmt / "alpaca.json").read_text())],
        "sharegpt.json": [_bad_turns([(t["from"], t["value"]) for t in r["conversations"]], ("human", "gpt"))
                          for r in json.loads((fmt / "sharegpt.json").read_text())],
        "openai.jsonl": [_openai_bad(line) for line in (fmt / "openai.jsonl").read_text().splitlines()],
        "prompt_completion.csv": [len(r) != 2 or not r[1] or len(r[0]) > 1000
                                  for r in list(csv.reader((fmt / "prompt_completion.csv").open()))[1:]],
    }
    pq = pytest.importorskip("pyarrow.parquet")
    pref = pq.read_table(fmt / "preference.parquet").to_pylist()
    found["preference.parquet"] = [not r["chosen"] or not r["rejected"] or r["chosen"] == r["rejected"] for r in pref]
    for name, flags in found.items():
        assert len(flags) == make_data.N_FORMAT_ROWS + len(make_data.MALFORMED[name]), name
        assert {i for i, bad in enumerate(flags) if bad} == set(make_data.MALFORMED[name]), name
    readme = (DATA_DIR / "README.md").read_text()
    for name, rows in make_data.MALFORMED.items():
        for i in rows:
            assert re.search(rf"{re.escape(name)}.*\| {i} \|", readme), f"README.md does not list {name} row {i}"


# ---------------------------------------------------------------- scorer


@pytest.mark.parametrize("text, expected", [
    ("  2021-03-03\n", "2021-03-03"),
    ("`2021-03-03`", "2021-03-03"),
    ('"2021-03-03".', "2021-03-03"),
    ("'`312`'", "312"),
    ("2021-03-03..", "2021-03-03"),  # one period per round, rounds repeat
    ("\"2021-03-03'", "\"2021-03-03'"),  # quotes that do not match are kept
    ("The date is 2021-03-03.", "The date is 2021-03-03"),
    ("March", "March"),  # case is kept
    ("", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_exact_match_is_strict_about_content():
    assert exact_match(" `2021-03-03`. ", "2021-03-03")
    assert not exact_match("2021-3-3", "2021-03-03")
    assert not exact_match("2021-03-03 (YYYY-MM-DD)", "2021-03-03")
    assert not exact_match("1,234", "1234")
    assert not exact_match("", "1234")


def test_contains_needs_word_boundaries():
    assert contains("Sure! The date is 2021-03-03.", "2021-03-03")
    assert not contains("1312", "312")
    assert not contains("2021-03-031", "2021-03-03")
    with pytest.raises(ValueError, match="empty reference"):
        contains("anything", "  ")


def test_load_split_names_the_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "dates" / "nope.jsonl"))):
        load_split("dates", "nope", data_dir=tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "s.jsonl").write_text('{"messages": [{"role": "user", "content": "a"}]}\n\n')
    rows = load_split("t", "s", data_dir=str(tmp_path))
    assert len(rows) == 1
    with pytest.raises(ValueError, match="row 0 does not end with an assistant"):
        prompts_and_references(rows)


def test_prompts_and_references_drop_the_answer():
    prompts, refs = prompts_and_references(load_split("dates", "test")[:3])
    assert [p[-1]["role"] for p in prompts] == ["user"] * 3
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", r) for r in refs)


@pytest.mark.slow
def test_base_model_does_badly_on_dates(model_and_tokenizer):
    from ftlab.evaluation import evaluate

    model, tok = model_and_tokenizer
    table, answers = evaluate({"base": (model, tok)}, load_split("dates", "test")[:20], metrics=("exact_match",))
    assert len(answers) == 20
    assert table.loc["base", "exact_match"] < 0.5  # measured 0.0x on all 100 rows; fine-tuning reaches ~0.9
