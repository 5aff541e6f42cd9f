"""formats.py: each format detected and converted to TRL's form; each kind of bad row named with its fix."""

import pytest

from ftlab.formats import BadRow, conversations, convert_row, detect_format

U, A, S = "user", "assistant", "system"


def m(role, content):
    return {"role": role, "content": content}


def test_alpaca_input_after_blank_line_and_system_first():
    row = {"instruction": "Translate", "input": "chat", "output": "cat", "system": "Be brief."}
    assert detect_format([row]) == "alpaca"
    assert convert_row(row, "alpaca") == {"messages": [m(S, "Be brief."), m(U, "Translate\n\nchat"), m(A, "cat")]}
    assert convert_row({"instruction": "Hi", "input": "", "output": "Hello"}, "alpaca") == {
        "messages": [m(U, "Hi"), m(A, "Hello")]}


def test_sharegpt_role_aliases_and_mixed_keys():
    row = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q1"},
                             {"from": "gpt", "value": "a1"}, {"role": "user", "content": "q2"},
                             {"from": "chatgpt", "value": "a2"}]}
    assert detect_format([row]) == "sharegpt"
    assert convert_row(row, "sharegpt")["messages"] == [m(S, "s"), m(U, "q1"), m(A, "a1"), m(U, "q2"), m(A, "a2")]
    for alias in ("bing", "bard", "model", "assistant"):
        out = convert_row({"conversations": [{"from": "user", "value": "q"}, {"from": alias, "value": "a"}]},
                          "sharegpt")
        assert out["messages"][1]["role"] == A


def test_openai_messages_pass_through():
    row = {"messages": [m(S, "s"), m(U, "q"), m(A, "a")], "id": 7}
    assert detect_format([row]) == "openai"
    assert convert_row(row, "openai") == {"messages": row["messages"]}  # extra fields dropped


def test_prompt_completion_strings_and_lists():
    row = {"prompt": "2+2?", "completion": "4"}
    assert detect_format([row]) == "prompt_completion"
    out = convert_row(row, "prompt_completion")
    assert out == {"prompt": [m(U, "2+2?")], "completion": [m(A, "4")]}
    assert convert_row(out, "prompt_completion") == out  # already conversational: unchanged
    assert conversations(out) == [[m(U, "2+2?"), m(A, "4")]]


def test_preference_strings_and_ultrafeedback_style():
    row = {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}
    assert detect_format([row]) == "preference"  # wins over prompt_completion
    out = convert_row(row, "preference")
    assert out == {"prompt": [m(U, "Sky?")], "chosen": [m(A, "Blue.")], "rejected": [m(A, "Green.")]}
    # chosen/rejected repeating the prompt turns (UltraFeedback): only the answer is kept
    uf = {"prompt": "Sky?", "chosen": [m(U, "Sky?"), m(A, "Blue.")], "rejected": [m(U, "Sky?"), m(A, "Green.")]}
    assert convert_row(uf, "preference") == out
    assert len(conversations(out)) == 2


@pytest.mark.parametrize("row", [
    {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Blue."},  # plain strings
    {"prompt": "Sky?", "chosen": "Blue.", "rejected": "  Blue.\n"},  # the same answer, padded
    {"prompt": [m(U, "Sky?")], "chosen": [m(A, "Blue.")], "rejected": [{"from": "gpt", "value": "Blue."}]},
    # UltraFeedback style on one side only: once the repeated prompt is cut off, the answers are the same
    {"prompt": "Sky?", "chosen": [m(U, "Sky?"), m(A, "Blue.")], "rejected": "Blue."},
])
def test_preference_pair_with_identical_answers_is_rejected(row):
    with pytest.raises(BadRow) as e:
        convert_row(row, "preference")
    assert e.value.kind == "identical_pair"
    assert e.value.reason == ("chosen and rejected are identical (prompt 'Sky?', both answer 'Blue.'): the pair "
                              "carries no preference signal; make 'rejected' a worse answer, or drop the row")


def test_preference_pairs_that_differ_only_in_a_later_turn_are_kept():
    chosen = [m(A, "Blue."), m(U, "Sure?"), m(A, "Yes.")]
    row = {"prompt": [m(U, "Sky?")], "chosen": chosen, "rejected": chosen[:2] + [m(A, "No.")]}
    assert convert_row(row, "preference")["rejected"][-1] == m(A, "No.")
    assert convert_row({"prompt": "Sky?", "chosen": "Blue.", "rejected": "blue."}, "preference")  # case counts


def test_detection_is_by_majority():
    rows = [{"instruction": "a", "output": "b"}] * 3 + [{"prompt": "p", "completion": "c"}]
    assert detect_format(rows) == "alpaca"


def test_unknown_format_lists_formats_and_fields_seen():
    with pytest.raises(ValueError) as e:
        detect_format([{"question": "q", "answer": "a"}, {"question": "q2"}])
    msg = str(e.value)
    for expected in ("alpaca: instruction, output", "sharegpt: conversations", "openai: messages",
                     "prompt_completion: prompt, completion", "preference: prompt, chosen, rejected",
                     "question (2 rows)", "answer (1 rows)"):
        assert expected in msg


@pytest.mark.parametrize("fmt, row, kind, names", [
    ("alpaca", {"instruction": "q"}, "missing_field", "'output'"),
    ("alpaca", {"instruction": "q", "output": None}, "missing_field", "'output'"),
    ("alpaca", {"instruction": "  ", "output": "a"}, "empty_field", "'instruction'"),
    ("alpaca", {"instruction": "q", "output": 42}, "wrong_type", "'output'"),
    ("alpaca", {"instruction": "q", "output": "a\ufffd"}, "undecodable", "'output'"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q\ud800"}, {"from": "gpt", "value": "a"}]},
     "undecodable", "conversations[0].value"),
    ("sharegpt", {"conversations": "q"}, "wrong_type", "'conversations'"),
    ("sharegpt", {"conversations": []}, "empty_field", "'conversations'"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]},
     "unknown_role", "conversations[1]"),
    ("openai", {"messages": [m(U, "q"), m(A, "a"), m(U, "more?")]}, "not_ending_with_assistant", "messages[2]"),
    ("openai", {"messages": [m(U, "q"), m(U, "q again"), m(A, "a")]}, "alternation", "messages[1]"),
    ("openai", {"messages": [m(A, "hello"), m(U, "q"), m(A, "a")]}, "alternation", "messages[0]"),
    ("openai", {"messages": [m(U, "q"), m(S, "late"), m(A, "a")]}, "alternation", "messages[1]"),
    ("openai", {"messages": [m(U, "q"), {"role": A, "content": ""}]}, "empty_field", "messages[1].content"),
    ("openai", {"messages": [m(U, "q"), "a"]}, "wrong_type", "messages[1]"),
    ("prompt_completion", {"prompt": "q", "completion": [m(U, "a")]}, "alternation", "completion[0]"),
    ("preference", {"prompt": "q", "chosen": "a", "rejected": ""}, "empty_field", "'rejected'"),
])
def test_bad_rows_named_with_kind_and_field(fmt, row, kind, names):
    before = repr(row)
    with pytest.raises(BadRow) as e:
        convert_row(row, fmt)
    assert e.value.kind == kind
    assert names in e.value.reason
    assert repr(row) == before  # the original is never modified
