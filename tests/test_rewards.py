"""ftlab.rewards: the shipped reward functions score fixed completions as documented; checked() stops
with the function's name and the completion that broke it."""

import pytest

from ftlab.rewards import REWARDS, RewardError, checked, date_fields, date_shape, exact_date, reward_functions

CHAT = [[{"role": "assistant", "content": "2021-03-03"}], [{"role": "assistant", "content": "The date is 2021-03-04."}]]


def test_exact_date_is_the_evaluations_exact_match():
    assert exact_date(["2021-03-03", " `2021-03-03`. ", "2021-3-3", "2021-03-03 is it"], ["2021-03-03"] * 4) == \
        [1.0, 1.0, 0.0, 0.0]
    assert exact_date(CHAT, ["2021-03-03", "2021-03-04"]) == [1.0, 0.0]  # chat completions: their content


def test_date_shape_needs_a_real_date_and_nothing_else():
    assert date_shape(["2021-03-03", "1999-12-31.", "2021-02-30", "2021/03/03", "Date: 2021-03-03"]) == \
        [1.0, 1.0, 0.0, 0.0, 0.0]


def test_date_fields_gives_a_third_per_field():
    refs = ["2021-03-03"] * 5
    got = date_fields(["2021-03-03", "2021-03-04", "It is 2020-03-04 I think", "2020-04-04", "March 3rd"], refs)
    assert got == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0])
    with pytest.raises(ValueError, match="not YYYY-MM-DD"):
        date_fields(["2021-03-03"], ["268217"])


def test_names_resolve_and_unknown_names_list_the_shipped_ones():
    funcs = reward_functions(["exact_date", date_shape])
    assert [f.__name__ for f in funcs] == ["exact_date", "date_shape"]  # TRL logs rewards/<__name__>/mean
    assert funcs[0](prompts=None, completions=["2021-03-03"], answer=["2021-03-03"], trainer_state=None) == [1.0]
    with pytest.raises(ValueError) as err:
        reward_functions(["exact_dates"])
    assert all(n in str(err.value) for n in REWARDS)


def test_checked_names_the_function_and_the_completion_that_broke_it():
    def picky(completions, **kwargs):
        return [1.0 / (len(c) - 3) for c in completions]  # divides by zero on a 3-character answer

    with pytest.raises(RewardError, match=r"picky raised ZeroDivisionError.*completion 'abc'"):
        checked(picky)(prompts=["p", "q"], completions=["2021-01-01", "abc"])

    def short(completions, **kwargs):
        return [1.0]

    with pytest.raises(RewardError, match="short returned 1 scores for 2 completions"):
        checked(short)(completions=["a", "b"])

    def wrong_type(completions, **kwargs):
        return ["yes" for _ in completions]

    with pytest.raises(RewardError, match="wrong_type returned 'yes'"):
        checked(wrong_type)(completions=["a"])
    assert checked(lambda completions, **kw: [None, 0.5])(completions=["a", "b"]) == [None, 0.5]
