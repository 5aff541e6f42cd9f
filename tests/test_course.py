"""ftlab.course: the profile, and what a notebook's install cell announces (its measured time)."""

import re
from pathlib import Path

import pytest

from ftlab import course

README = Path(__file__).resolve().parent.parent / "README.md"


def test_profile_rejects_a_misspelled_value(monkeypatch):
    monkeypatch.setenv("FTLAB_PROFILE", "tiny")
    with pytest.raises(ValueError, match="use 'small'"):
        course.profile()


def test_expected_time_says_what_was_measured_and_what_was_not(monkeypatch):
    monkeypatch.setattr(course.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(course, "SMALL_CPU_SECONDS", {"02_lora": 330})
    monkeypatch.setenv("FTLAB_PROFILE", "small")
    assert course.expected_time("02_lora").startswith("expected time: about 6 min in the small profile on ")
    assert "not measured for 99_new" in course.expected_time("99_new")
    monkeypatch.setattr(course, "SMALL_CPU_SECONDS", {"02_lora": 330, "01_formatting_data": 16})
    assert course.expected_time("01_formatting_data").startswith("expected time: about 16 s in")  # not "0 min"
    monkeypatch.setenv("FTLAB_PROFILE", "full")
    assert "the full profile on a CPU is not measured yet (about 6 min in the small profile" in \
        course.expected_time("02_lora")
    monkeypatch.setattr(course.torch.cuda, "is_available", lambda: True)
    assert "on a GPU is not measured yet" in course.expected_time("02_lora")


def test_announce_names_the_notebook_profile_device_and_dtype(monkeypatch):
    monkeypatch.setenv("FTLAB_PROFILE", "small")
    text = course.announce("00_setup_and_tour")
    assert re.match(r"00_setup_and_tour: profile small \| device (CPU, \d+ cores|.+GiB) \| training in "
                    r"(fp32|bf16|fp16) \(", text), text


def test_readme_table_of_expected_times_is_the_measured_one():
    """The README's "Expected time per notebook" table shows course.SMALL_CPU_SECONDS (one measurement)."""
    text = README.read_text()
    rows = dict(re.findall(r"^\| \[(\d\d_\w+|solutions)\]\(notebooks/[^)]+\) \| (\d+) s \|", text, re.MULTILINE))
    assert rows and {k: int(v) for k, v in rows.items()} == course.SMALL_CPU_SECONDS
    assert "AMD EPYC, 2 cores, AVX2 only" in text and "AMD EPYC" in course.MEASURED_ON  # the same machine named
