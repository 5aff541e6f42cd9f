"""data.py: every file kind read, every bad row accounted for (valid + rejected == input), helpers."""

import csv
import json
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from ftlab.data import check_file, convert, convert_file, dedupe, read_rows, rejects_path, split, token_stats

GOOD = [{"instruction": f"Say {i}", "output": f"{i}"} for i in range(5)]
BAD = [{"instruction": "Say x"}, {"instruction": "", "output": "y"}, {"instruction": "z", "output": "bad \ufffd"}]


def quiet_convert(source, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert(source, **kw)
    return result, caught


def test_list_of_dicts_counts_and_one_warning():
    result, caught = quiet_convert(GOOD[:2] + BAD + GOOD[2:])
    assert result.format == "alpaca"
    assert (len(result.rows), len(result.rejects), result.n_input) == (5, 3, 8)
    assert [(r.row, r.kind) for r in result.rejects] == [(2, "missing_field"), (3, "empty_field"), (4, "undecodable")]
    assert [r.original for r in result.rejects] == BAD  # kept unchanged
    assert len(caught) == 1 and "skipped 3 of 8 rows" in str(caught[0].message)
    assert "missing_field" in result.summary() and "row 2" in result.summary()
    ds = result.dataset()
    assert isinstance(ds, Dataset) and len(ds) == 5 and ds.column_names == ["messages"]


def test_no_warning_when_all_rows_are_good():
    result, caught = quiet_convert(GOOD)
    assert len(result.rows) == 5 and not result.rejects and not caught


def test_jsonl_bad_line_and_bad_bytes_become_rejects(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(GOOD[0]).encode(), b'{"instruction": "broken", ', b"",
             json.dumps(GOOD[1]).encode(), b'{"instruction": "caf\xe9", "output": "x"}', b"[1, 2]"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result, _ = quiet_convert(path)
    assert result.n_input == 5 and len(result.rows) == 2  # the blank line is not a row
    kinds = [(r.row, r.kind) for r in result.rejects]
    assert kinds == [(1, "unparseable"), (3, "undecodable"), (4, "wrong_type")]
    assert "line 2 " in result.rejects[0].reason and "line 5 " in result.rejects[1].reason  # 1-based lines
    assert result.rejects[0].original == '{"instruction": "broken", '


def test_json_list_wrapper_and_json_lines_with_json_suffix(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "b.json").write_text(json.dumps({"data": GOOD, "version": 1}))
    (tmp_path / "c.json").write_text("\n".join(json.dumps(r) for r in GOOD))
    for name in ("a.json", "b.json", "c.json"):
        assert read_rows(tmp_path / name) == GOOD


def test_csv_with_json_cells_and_a_broken_row(tmp_path):
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["conversations", "id"])
        w.writerow([json.dumps([{"from": "human", "value": "hi, you"}, {"from": "gpt", "value": "hello"}]), "1"])
        w.writerow(["not json", "2", "extra cell"])
    result, _ = quiet_convert(path)
    assert result.format == "sharegpt" and result.n_input == 2
    assert result.rows[0]["messages"][0] == {"role": "user", "content": "hi, you"}
    assert [(r.row, r.kind) for r in result.rejects] == [(1, "unparseable")]


def test_csv_alpaca_empty_input_cell(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("instruction,input,output\nAdd,,4\nAdd,2 and 2,4\n")
    result, _ = quiet_convert(path)
    assert [r["messages"][0]["content"] for r in result.rows] == ["Add", "Add\n\n2 and 2"]


def test_parquet_and_dataset(tmp_path):
    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"}, {"prompt": "q2", "chosen": "x", "rejected": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for source in (tmp_path / "d.parquet", Dataset.from_list(rows)):
        result, _ = quiet_convert(source)
        assert result.format == "preference"
        assert result.rows == [{"prompt": [{"role": "user", "content": "q"}],
                                "chosen": [{"role": "assistant", "content": "good"}],
                                "rejected": [{"role": "assistant", "content": "bad"}]}]
        assert [(r.row, r.kind) for r in result.rejects] == [(1, "missing_field")]


def test_identical_preference_pair_goes_to_the_rejects_with_its_row():
    rows = [{"prompt": "q", "chosen": "good", "rejected": "bad"}, {"prompt": "q2", "chosen": "same", "rejected": "same"}]
    result, caught = quiet_convert(rows)
    assert len(result.rows) == 1 and [(r.row, r.kind) for r in result.rejects] == [(1, "identical_pair")]
    assert result.rejects[0].original == rows[1]
    assert "e.g. row 1: chosen and rejected are identical (prompt 'q2', both answer 'same')" in result.summary()
    assert "first: row 1: chosen and rejected are identical" in str(caught[0].message)


@pytest.mark.parametrize("name, text, what", [
    ("d.jsonl", "", "is empty (0 bytes)"),
    ("d.jsonl", "\n  \n\n", "holds only blank lines"),
    ("d.json", "", "is empty (0 bytes)"),
    ("d.json", "[]", "holds an empty list of rows"),
    ("d.csv", "instruction,output\n", "has a header but no rows"),
])
def test_a_file_without_rows_is_an_error_naming_it(tmp_path, name, text, what):
    path = tmp_path / name
    path.write_text(text)
    expected = f"{path} {what}: nothing to check or convert. Add rows"
    for call in (lambda: convert(path), lambda: check_file(path), lambda: convert_file(path, tmp_path / "out.jsonl")):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value).startswith(expected), str(e.value)
    assert not (tmp_path / "out.jsonl").exists()  # nothing written for a file that holds nothing
    with pytest.raises(ValueError, match="no rows to convert: the list is empty"):
        convert([])
    with pytest.raises(ValueError, match="no rows to convert: the Dataset has no rows"):
        convert(Dataset.from_list([]))


def test_unknown_format_and_suffix(tmp_path):
    with pytest.raises(ValueError, match="Fields seen: question"):
        convert([{"question": "q", "answer": "a"}])
    (tmp_path / "d.xml").write_text("<x/>")
    with pytest.raises(ValueError, match=r"\.jsonl"):
        read_rows(tmp_path / "d.xml")


def test_convert_file_writes_rows_and_rejects_that_round_trip(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([json.dumps(r, ensure_ascii=False).encode() for r in GOOD + BAD] + [b"{oops"]) + b"\n")
    out = tmp_path / "out" / "train.jsonl"
    with pytest.warns(UserWarning):
        result = convert_file(src, out)
    assert rejects_path(out) == tmp_path / "out" / "train.rejects.jsonl"
    written = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = [json.loads(line) for line in rejects_path(out).read_text().splitlines()]
    assert written == result.rows and len(written) == 5
    assert len(written) + len(rejects) == 9
    assert [r["original"] for r in rejects] == BAD + ["{oops"]
    assert [r["row"] for r in rejects] == [5, 6, 7, 8] and all(r["kind"] and r["reason"] for r in rejects)
    # no rejects: the rejects file is still there, empty, so it can be counted
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in GOOD))
    convert_file(good, out)
    assert rejects_path(out).read_text() == ""


def test_too_long_rows_and_token_stats(tokenizer):
    rows = [{"prompt": "hi", "completion": "hello"}, {"prompt": "word " * 200, "completion": "ok"}]
    result, _ = quiet_convert(rows, tokenizer=tokenizer, max_length=64)
    assert len(result.rows) == 1 and result.rejects[0].kind == "too_long" and result.rejects[0].row == 1
    assert "max_length=64" in result.rejects[0].reason
    n = int(result.rejects[0].reason.split(" tokens")[0].split()[-1])
    assert 200 < n < 260  # ~200 words plus the template's default system prompt
    stats = token_stats(quiet_convert(rows)[0].rows, tokenizer)
    assert stats["count"] == 2 and stats["min"] < 64 < stats["max"] == n
    assert stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert stats["mean"] == (stats["min"] + stats["max"]) / 2


def test_check_file_report(tmp_path, tokenizer):
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in GOOD + BAD))
    report = check_file(src, tokenizer=tokenizer, max_length=512)
    assert "format: alpaca" in report and "8 read, 5 valid, 3 rejected" in report
    assert "row 5 [missing_field]" in report and "tokens per row: count 5" in report


def test_dedupe_after_conversion():
    rows = convert(GOOD + [GOOD[0], dict(GOOD[1], id=99)]).rows  # extra fields vanish, so that is a duplicate too
    kept, removed = dedupe(rows)
    assert (len(kept), removed) == (5, 2) and kept == rows[:5]


def test_split_is_seeded_and_covers_every_row():
    rows = [{"i": i} for i in range(103)]
    parts = split(rows, validation=0.1, test=0.2, seed=3)
    assert {k: len(v) for k, v in parts.items()} == {"train": 72, "validation": 10, "test": 21}
    assert sorted(r["i"] for p in parts.values() for r in p) == list(range(103))
    assert split(rows, validation=0.1, test=0.2, seed=3) == parts
    assert split(rows, validation=0.1, test=0.2, seed=4) != parts
    assert set(split(rows, test=0)) == {"train", "validation"}
    with pytest.raises(ValueError):
        split(rows, validation=0.5, test=0.5)


def test_fields_the_format_does_not_use_are_named():
    rows = [{"instruction": "Say hi", "output": "hi", "id": 1, "source": "x"}]
    with pytest.warns(UserWarning, match="id, source"):
        result = convert(rows)
    assert result.ignored_fields == ["id", "source"]
    assert "(not carried over): id, source" in result.summary()


def test_text_files_are_paragraphs_and_bad_text_is_named(tmp_path):
    from ftlab.shipped import data_dir

    corpus = convert(data_dir() / "text" / "train.txt")
    assert corpus.format == "text" and len(corpus.rows) == 300 and corpus.rows[0]["text"].startswith("Noted for")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("first line\nna\xefve caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: byte 13 \(line 2\).*iconv"):
        convert(latin1)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n")
    with pytest.raises(ValueError, match="blank.txt holds only blank lines"):
        convert(blank)
    rows = convert([{"text": "one"}, {"text": "  "}, {"text": 3}])
    assert [r["text"] for r in rows.rows] == ["one"] and [r.kind for r in rows.rejects] == ["empty_field", "wrong_type"]
