"""Every common dataset file in, one validated conversational form out, with every bad row accounted for.

`convert(source)` reads JSON, JSONL, CSV/TSV, Parquet, a `datasets.Dataset` or a list of dicts, detects the
format (formats.py) and converts each row. A row that cannot be used is not dropped silently: it goes to
`Conversion.rejects` with its row number (0-based, counting the rows read; blank JSONL lines are not rows),
a short `kind` and a reason naming the fix, so `len(rows) + len(rejects) == n_input` always. A source
with no rows at all (an empty file, only blank lines, `[]`) is a ValueError naming it: there is nothing to check.
Also: `dedupe`, `split`, `token_stats`, `unpaired` (preference pairs as KTO's desirable/undesirable rows). Leaves out: loading from the Hub, streaming, training-time
tokenization (TRL does that from the conversational form).
"""

from __future__ import annotations

import csv
import json
import math
import random
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict

from ftlab.formats import FORMATS, BadRow, conversations, convert_row, detect_format

_UNREADABLE = "__ftlab_unreadable__"  # marks a row that could not be read; convert() turns it into a reject


@dataclass
class Reject:
    row: int  # 0-based position among the rows read
    kind: str  # missing_field, empty_field, wrong_type, unknown_role, not_ending_with_assistant,
    #            alternation, identical_pair, undecodable, too_long, unparseable
    reason: str  # which field is wrong and how to fix it
    original: object  # the row exactly as read (the raw text for a line that did not parse)


@dataclass
class Conversion:
    format: str  # the detected input format, a key of formats.FORMATS
    rows: list[dict]  # converted rows, in input order
    rejects: list[Reject] = field(default_factory=list)
    n_input: int = 0  # rows read; always len(rows) + len(rejects)
    ignored_fields: list[str] = field(default_factory=list)  # input fields the format does not use


    def dataset(self) -> Dataset:
        return Dataset.from_list(self.rows)

    def summary(self) -> str:
        """Detected format, counts, and the first reason for each kind of reject."""
        lines = [f"format: {self.format}",
                 f"rows: {self.n_input} read, {len(self.rows)} valid, {len(self.rejects)} rejected"]
        if self.ignored_fields:
            lines.append(f"fields not used by the {self.format} format (not carried over): "
                         f"{', '.join(self.ignored_fields)}")
        kinds = Counter(r.kind for r in self.rejects)
        for kind, n in kinds.most_common():
            first = next(r for r in self.rejects if r.kind == kind)
            lines.append(f"  {kind:<26} {n:>5}  e.g. row {first.row}: {first.reason}")
        return "\n".join(lines)


def read_rows(source) -> list[dict]:
    """Rows of a file path (.json .jsonl .ndjson .csv .tsv .parquet .txt), a Dataset or a list of dicts.

    A JSONL line that is not JSON or not UTF-8 becomes a marker row that convert() rejects, not a crash.
    A .txt file is raw text: one {"text": ...} row per paragraph (paragraphs are separated by blank lines).
    """
    if isinstance(source, DatasetDict):
        raise TypeError(f"a DatasetDict has several splits ({', '.join(source)}): pass one, e.g. ds['train']")
    if isinstance(source, Dataset):
        return source.to_list()
    if isinstance(source, list):
        return [r if isinstance(r, dict) else _not_an_object(r, f"item {i}") for i, r in enumerate(source)]
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if suffix == ".txt":
        return _read_text(path)
    raise ValueError(f"can't read {path.name}: ftlab reads .json, .jsonl, .ndjson, .csv, .tsv, .parquet and .txt files")


def _read_text(path: Path) -> list[dict]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path} is not UTF-8 text: byte {e.start} (line {line}) is {raw[e.start:e.start + 1]!r}. "
                         "Fix: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
    return [{"text": p} for p in paragraphs if p]


def _unreadable(raw, kind: str, reason: str) -> dict:
    return {_UNREADABLE: {"raw": raw, "kind": kind, "reason": reason}}


def _not_an_object(value, where: str) -> dict:
    return _unreadable(value, "wrong_type", f"{where} is a {type(value).__name__}, not an object: "
                                            "each row must be one {...} with named fields")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):  # n: 1-based line, as editors show it
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError as e:
            rows.append(_unreadable(raw.decode("utf-8", "backslashreplace"), "undecodable",
                                    f"line {n} is not UTF-8 (byte {e.start}): re-save the file as UTF-8 or fix the line"))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(_unreadable(line, "unparseable", f"line {n} is not valid JSON ({e.msg}, column {e.colno}): "
                                                         "fix or delete that line"))
            continue
        rows.append(row if isinstance(row, dict) else _not_an_object(row, f"line {n}"))
    return rows


def _read_json(path: Path) -> list[dict]:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")  # bad bytes -> U+FFFD, rejected per row
    if not text.strip():
        return []  # an empty file has no rows; convert() says so
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if len(text.strip().splitlines()) > 1:
            return _read_jsonl(path)  # many ".json" exports (datasets' to_json among them) are JSON lines
        raise ValueError(f"{path.name} is not valid JSON ({e.msg}, line {e.lineno}): fix it, "
                         "or save one object per line as .jsonl so a bad line only costs that row") from None
    if isinstance(data, dict):
        # {"data": [...]}-style wrapper: the one key holding a list of objects that is not a format field
        fields = {f for need, opt in FORMATS.values() for f in need + opt}
        keys = [k for k, v in data.items() if k not in fields and isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(keys) != 1:
            raise ValueError(f"{path.name} holds one object with keys {list(data)}: expected a list of rows, "
                             "or one key holding that list, like {\"data\": [...]}")
        data = data[keys[0]]
    if not isinstance(data, list):
        raise ValueError(f"{path.name} holds a JSON {type(data).__name__}: expected a list of row objects")
    return [r if isinstance(r, dict) else _not_an_object(r, f"item {i}") for i, r in enumerate(data)]


def _read_csv(path: Path, delimiter: str) -> list[dict]:
    csv.field_size_limit(2**31 - 1)  # the default, 128 KiB per cell, is shorter than some answers
    rows = []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:  # bad bytes -> U+FFFD
        reader = csv.DictReader(f, delimiter=delimiter)
        for row in reader:
            if None in row:  # more cells than header columns: the row's quoting is broken
                rows.append(_unreadable(row, "unparseable", f"line {reader.line_num} has more cells than the "
                                                            "header: quote cells that contain the delimiter"))
                continue
            rows.append({k: _cell(v) for k, v in row.items()})
    return rows


def _cell(value):
    # CSV has no lists: conversation columns are stored as JSON text, so decode cells that hold JSON objects/lists.
    if isinstance(value, str) and value[:1] in "[{" and value[-1:] in "]}":
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, dict) or (isinstance(parsed, list) and all(isinstance(m, dict) for m in parsed)):
            return parsed
    return value


def convert(source, *, tokenizer=None, max_length: int | None = None) -> Conversion:
    """Read `source`, detect its format, convert every row; bad rows go to `.rejects` with one warning.

    A source without a single row (empty file, blank lines only, empty list) raises ValueError.

    tokenizer, max_length: when both are given, rows whose chat-template rendering has more than
    max_length tokens are rejected as too_long.
    """
    rows = read_rows(source)
    if not rows:  # nothing to detect a format from, nothing to train on: say so instead of "format: unknown"
        raise ValueError(_no_rows(source))
    readable = [r for r in rows if _UNREADABLE not in r]
    fmt = detect_format(readable) if readable else "unknown"
    good, rejects = [], []
    for i, row in enumerate(rows):
        try:
            if _UNREADABLE in row:
                bad = row[_UNREADABLE]
                raise BadRow(bad["kind"], bad["reason"])
            out = convert_row(row, fmt)
            if tokenizer is not None and max_length is not None and fmt != "text":  # text is packed, never cut
                _check_length(out, tokenizer, max_length)
            good.append(out)
        except BadRow as e:
            rejects.append(Reject(i, e.kind, e.reason, row[_UNREADABLE]["raw"] if _UNREADABLE in row else row))
    need, optional = FORMATS.get(fmt, ((), ()))
    ignored = sorted({k for r in readable for k in r} - set(need) - set(optional))
    result = Conversion(fmt, good, rejects, len(rows), ignored)
    if ignored:  # e.g. an `id` column: say so rather than drop it without a word
        warnings.warn(f"fields not used by the {fmt} format and not carried over: {', '.join(ignored)}",
                      stacklevel=2)
    if rejects:
        kinds = ", ".join(f"{n} {k}" for k, n in Counter(r.kind for r in rejects).most_common())
        warnings.warn(f"skipped {len(rejects)} of {len(rows)} rows ({kinds}); they are in .rejects, "
                      f"first: row {rejects[0].row}: {rejects[0].reason}", stacklevel=2)
    return result


def _no_rows(source) -> str:
    if isinstance(source, (list, Dataset)):
        what = "the list is empty" if isinstance(source, list) else "the Dataset has no rows"
        return f"no rows to convert: {what}; pass at least one row"
    path = Path(source)
    raw = path.read_bytes()
    if not raw.strip():
        what = "holds only blank lines" if raw else "is empty (0 bytes)"
    else:
        what = {".csv": "has a header but no rows", ".tsv": "has a header but no rows",
                ".parquet": "is a table with no rows"}.get(path.suffix.lower(), "holds an empty list of rows")
    return (f"{source} {what}: nothing to check or convert. Add rows, e.g. one JSON object per line like "
            '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}, or check the path')


def n_tokens(row: dict, tokenizer) -> int:
    """Tokens of a converted row rendered by the chat template (the longer of chosen/rejected); a text row's
    own tokens."""
    if "text" in row:
        return len(tokenizer(row["text"], add_special_tokens=False)["input_ids"])
    if tokenizer.chat_template is None:
        raise ValueError("the tokenizer has no chat template, so rows can't be rendered: use an instruct "
                         "model's tokenizer or set tokenizer.chat_template")
    return max(len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False))
               for chat in conversations(row))


def _check_length(row: dict, tokenizer, max_length: int) -> None:
    n = n_tokens(row, tokenizer)
    if n > max_length:
        raise BadRow("too_long", f"the row is {n} tokens after the chat template, over max_length={max_length}: "
                                 "training would cut its end (the answer); shorten it or raise max_length")


def _dumps(obj) -> str:
    text = json.dumps(obj, ensure_ascii=False, default=str)
    # lone surrogates can't be written as UTF-8; \u escapes keep them, so the original still round-trips
    return json.dumps(obj, default=str) if any("\ud800" <= c <= "\udfff" for c in text) else text


def rejects_path(out) -> Path:
    """Where convert_file puts the rejects of `out`: train.jsonl -> train.rejects.jsonl."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".rejects.jsonl")


def convert_file(path, out, **kw) -> Conversion:
    """convert(path, **kw), then write the rows to `out` (JSONL) and the rejects beside it (always, maybe empty).

    Each rejects line is {"row", "kind", "reason", "original"}, the original exactly as read.
    """
    result = convert(path, **kw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(_dumps(r) + "\n" for r in result.rows), encoding="utf-8")
    rejects_path(out).write_text("".join(_dumps(vars(r)) + "\n" for r in result.rejects), encoding="utf-8")
    return result


def check_file(path, tokenizer=None, max_length: int | None = None) -> str:
    """The report `ftlab data check` prints: format, counts, reasons, every reject (up to 50), token stats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report itself lists the rejects
        result = convert(path, tokenizer=tokenizer, max_length=max_length)
    lines = [f"{path}", result.summary()]
    if result.rejects:
        lines.append("rejected rows (0-based):")
        lines += [f"  row {r.row} [{r.kind}] {r.reason}" for r in result.rejects[:50]]
        if len(result.rejects) > 50:
            lines.append(f"  ... and {len(result.rejects) - 50} more (convert_file writes them all)")
    if tokenizer is not None and result.rows:
        s = token_stats(result.rows, tokenizer)
        lines.append("tokens per row: " + ", ".join(f"{k} {v:.0f}" if k == "mean" else f"{k} {v}" for k, v in s.items()))
    return "\n".join(lines)


def dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    """Drop exact duplicates (same converted content), keeping the first. Returns (rows, n_removed)."""
    seen, kept = set(), []
    for row in rows:
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def split(rows: list, validation: float = 0.1, test: float = 0.1, seed: int = 0) -> dict[str, list]:
    """Shuffle with `seed` and cut into train/validation/test; each row lands in exactly one split.

    validation, test: fractions of the rows; a nonzero fraction gets at least one row (from 3 rows up).
    Splits that get no rows are left out of the dict.
    """
    if validation < 0 or test < 0 or validation + test >= 1:
        raise ValueError(f"validation={validation} and test={test} must be >= 0 and sum to less than 1")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    sizes = {name: max(1, round(len(rows) * frac)) if frac and len(rows) > 2 else 0
             for name, frac in (("validation", validation), ("test", test))}
    n_train = len(rows) - sum(sizes.values())
    cuts = {"train": order[:n_train], "validation": order[n_train:n_train + sizes["validation"]],
            "test": order[n_train + sizes["validation"]:]}
    return {name: [rows[i] for i in idx] for name, idx in cuts.items() if name == "train" or sizes[name]}


def token_stats(rows: list[dict], tokenizer) -> dict:
    """count, min, mean, median, p95, max of the chat-template token counts of converted rows."""
    counts = sorted(n_tokens(r, tokenizer) for r in rows)
    if not counts:
        raise ValueError("no rows to measure: convert() kept none (see its rejects)")
    return {"count": len(counts), "min": counts[0], "mean": statistics.fmean(counts),
            "median": statistics.median(counts), "p95": counts[math.ceil(0.95 * len(counts)) - 1],
            "max": counts[-1]}


def unpaired(rows: list[dict]) -> list[dict]:
    """Preference pairs as KTO reads them: each pair becomes two rows, {"prompt", "completion", "label"},
    the chosen answer with label True (desirable) and the rejected one with label False (undesirable).

    KTO needs no pairs, only answers marked good or bad; from pairs, each kind is half of the rows, which
    suits KTOConfig's default desirable_weight = undesirable_weight = 1.
    """
    out = []
    for i, row in enumerate(rows):
        if not {"prompt", "chosen", "rejected"} <= set(row):
            raise ValueError(f"row {i} has {sorted(row)}, not prompt/chosen/rejected: KTO's rows are made from "
                             "preference pairs. Fix: convert() a preference file first")
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out
