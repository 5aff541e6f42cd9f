"""The lineage record and the markdown report, on synthetic runs (no model needed)."""

import hashlib
import json
import math
import subprocess

import pandas as pd
import pytest

from ftlab.curves import LOSS_PLOT, save_loss_plot
from ftlab.report import (
    config_sha256,
    git_state,
    lineage,
    write_report,
)

HISTORY = [{"step": s, "loss": 2.0 * math.exp(-s / 20), "learning_rate": 2e-4 * (1 - s / 50), "grad_norm": 1.0}
           for s in range(1, 50)] + [{"step": s, "eval_loss": 1.5 - s / 100} for s in (10, 20, 30, 40)]


def test_lineage_records_data_hashes_rows_and_config(tmp_path, monkeypatch):
    train, weights = tmp_path / "train.jsonl", tmp_path / "model.gguf"
    train.write_text('{"q": "1+1", "a": "2"}\n{"q": "2+2", "a": "4"}\n\n')
    weights.write_bytes(b"weights")
    csv = tmp_path / "test.csv"
    csv.write_text('q,a\n"multi\nline",1\nx,2\n')
    config = {"learning_rate": 2e-4, "lora_r": 16}

    monkeypatch.chdir(tmp_path)  # not a git repo
    first = lineage("SmolLM2-135M", str(weights), [train, csv], config)
    assert first["base_sha256"] == hashlib.sha256(b"weights").hexdigest() and first["base_revision"] is None
    assert [d["rows"] for d in first["data_files"]] == [2, 2]
    assert first["data_files"][0]["sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert first["git_commit"] is None
    assert first["versions"]["torch"] and first["versions"]["transformers"] and first["python"]
    canonical = b'{"learning_rate":0.0002,"lora_r":16}'  # sorted keys, no spaces: the JSON written by hand
    assert first["config_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert config_sha256({"lora_r": 16, "learning_rate": 2e-4}) == first["config_sha256"]  # key order is irrelevant
    json.dumps(first)  # the record is plain JSON

    train.write_text('{"q": "1+1", "a": "3"}\n{"q": "2+2", "a": "4"}\n')  # one answer changed
    second = lineage("SmolLM2-135M", "main", [train, csv], {**config, "lora_r": 8})
    assert second["data_files"][0]["sha256"] != first["data_files"][0]["sha256"]
    assert second["data_files"][1]["sha256"] == first["data_files"][1]["sha256"]
    assert second["config_sha256"] != first["config_sha256"]
    assert second["base_revision"] == "main" and second["base_sha256"] is None


def test_lineage_inside_the_repo_has_its_commit():
    commit = lineage("m", "main", [], {})["git_commit"]  # pytest runs from the repository root
    assert commit is not None and len(commit) == 40


def test_git_state_sees_uncommitted_changes(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "training.py").write_text("lr = 1e-4\n")
    git("add", "training.py")
    git("commit", "-qm", "first")
    commit, dirty = git_state(tmp_path)
    assert len(commit) == 40 and dirty is False
    (tmp_path / "training.py").write_text("lr = 1e-3\n")
    assert git_state(tmp_path) == (commit, True)


def full_summary(tmp_path) -> dict:
    return {
        "method": "lora", "base_model": "SmolLM2-135M-Instruct",
        "trainable_params": 921_600, "total_params": 135_436_608,
        "train_time_s": 312.4, "tokens_per_s": 1523.2, "peak_memory_mb": 2048.0,
        "final_train_loss": 0.4123, "final_eval_loss": 0.5234,
        "base_exact_match": 0.12, "tuned_exact_match": 0.645, "n_test": 200,
        "samples": [{"prompt": "a | b\nc?", "reference": "yes", "base": "<think> no", "tuned": "yes"}],
        "diagnosis": ["eval loss was lowest at step 30"],
        "eval_table": pd.DataFrame({"exact_match": [0.12, 0.645]}, index=pd.Index(["base", "tuned"], name="model")),
        "lineage": lineage("SmolLM2-135M-Instruct", "main", [], {"lr": 1e-4}),
    }


def test_write_report_renders_every_section(tmp_path):
    save_loss_plot(HISTORY, tmp_path / LOSS_PLOT)
    text = write_report(tmp_path, full_summary(tmp_path)).read_text()
    assert text.startswith("# Fine-tuning report: lora on SmolLM2-135M-Instruct")
    assert "| trainable parameters | 921,600 (0.68% of all) |" in text
    assert "| training time | 312.4 s (5.2 min) |" in text and "| throughput | 1,523 tokens/s |" in text
    # Wilson 95% intervals, worked by hand: 24/200 -> [8.2%, 17.2%], 129/200 -> [57.7%, 70.8%]
    assert ("exact match on the test split: base 12.0% [8.2%, 17.2%] -> tuned 64.5% [57.7%, 70.8%] "
            "(n=200; Wilson 95% intervals)") in text
    assert f"![loss curves]({LOSS_PLOT})" in text
    assert "- eval loss was lowest at step 30" in text
    assert "| model | exact_match |" in text and "| tuned | 0.645 |" in text  # the index became a column
    # pipes escaped, newlines as <br>, HTML-like text shown literally: the row stays one table row of 4 cells
    assert "| a \\| b<br>c? | yes | &lt;think&gt; no | yes |" in text
    assert "## Lineage" in text and "config sha256" in text


def test_write_report_minimal_and_healthy(tmp_path):
    text = write_report(tmp_path, {"method": "full", "diagnosis": []}).read_text()
    assert "no problems found in the curves" in text
    assert "exact match" not in text and "loss curves" not in text and "## Generations" not in text


def test_write_report_says_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="summary\\['method'\\]"):
        write_report(tmp_path, {})
    with pytest.raises(ValueError, match="fraction in 0..1"):
        write_report(tmp_path, {"method": "lora", "tuned_exact_match": 64.5})


def test_wilson_interval_matches_the_textbook_values():
    from ftlab.evaluation import wilson

    # Wilson (1927) score intervals at 95%, as tabulated by Newcombe (1998): 0/10 and 5/10
    assert [round(v, 4) for v in wilson(0, 10)] == [0.0, 0.2775]
    assert [round(v, 4) for v in wilson(5, 10)] == [0.2366, 0.7634]


def test_accuracy_line_names_the_split_and_warns_when_n_is_small():
    from ftlab.report import accuracy_line

    small = accuracy_line({"base_exact_match": 0.1, "tuned_exact_match": 0.8, "n_test": 20,
                           "test_split": "validation.jsonl"})
    # 2/20 and 16/20, by hand: Wilson [2.8%, 30.1%] and [58.4%, 91.9%]
    assert small.startswith("exact match on `validation.jsonl`: base 10.0% [2.8%, 30.1%] -> tuned 80.0% [58.4%, 91.9%]")
    assert "too few rows" in small and "test_limit" in small
    large = accuracy_line({"base_exact_match": 0.1, "tuned_exact_match": 0.8, "n_test": 400})
    assert large.startswith("exact match on the test split:") and "too few rows" not in large
    assert accuracy_line({"n_test": 20}) is None  # nothing scored, nothing to say


def test_report_shows_the_unseen_split_beside_the_test_split(tmp_path):
    from ftlab.report import write_report

    unseen = {"base_exact_match": 0.0, "tuned_exact_match": 0.5, "n_test": 2, "test_split": "test_unseen.jsonl",
              "samples": [{"prompt": "Quick one: 5 Mar. 1987 in ISO?", "reference": "1987-03-05", "base": "5 March",
                           "tuned": "1987-05-03"}]}
    text = write_report(tmp_path, {"method": "lora", "base_exact_match": 0.1, "tuned_exact_match": 0.9, "n_test": 10,
                                   "test_split": "test.jsonl", "unseen": unseen}).read_text()
    assert "exact match on `test.jsonl`: base 10.0%" in text
    assert "exact match on `test_unseen.jsonl`: base 0.0% [0.0%, 65.8%] -> tuned 50.0%" in text  # 0/2: Wilson by hand
    assert "requests worded unlike any training row" in text
    assert "## Generations on `test_unseen.jsonl`" in text and "1987-05-03" in text
