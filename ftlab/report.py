"""What a fine-tuning run leaves behind: the lineage record and finetune_report.md (the plot: curves.py).

`lineage(...)` records what went in (model, data files, config, code, library versions),
`write_report(run_dir, summary)` turns a summary dict into a markdown report, and `write_run_folder`
writes all of it (plus finetune_config.yaml and loss_curve.png) at the end of a run.
Leaves out: computing the numbers (training in `training.py`, the curves' reading in `monitor.diagnose`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from ftlab.config import save_config
from ftlab.curves import LOSS_PLOT, save_loss_plot
from ftlab.evaluation import wilson
from ftlab.fingerprint import file_sha256, library_versions
from ftlab.monitor import diagnose


def count_rows(path) -> int | None:
    """Rows in a .jsonl / .json (list) / .csv / .tsv / .parquet / .txt data file; None for other formats."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    if suffix == ".txt":  # raw text: one row per paragraph, as ftlab.data reads it
        return sum(1 for p in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n\n") if p.strip())
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return len(data) if isinstance(data, list) else None
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:  # csv.reader: quoted fields may span lines
            return max(sum(1 for _ in csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")) - 1, 0)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def config_sha256(config) -> str:
    """sha256 of the config's canonical JSON (sorted keys, no spaces): equal configs, equal hashes."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def git_state(cwd=".") -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git working tree holding `cwd`; (None, None) outside one or without git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=False)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def lineage(base_model: str, base_revision_or_hash, data_files: list, config_dict) -> dict:
    """What went into a run, enough to reproduce it or tell two runs apart.

    base_revision_or_hash: a hub revision (branch, tag, commit) or the path of the weights file
        (a GGUF, a safetensors), which is hashed.
    data_files: paths of the training/eval files; each is recorded with its sha256 and row count.
    config_dict: the run's config (a dict or a dataclass), recorded as the sha256 of its canonical JSON.
    """
    is_file = base_revision_or_hash is not None and Path(base_revision_or_hash).is_file()
    commit, dirty = git_state()
    return {
        "base_model": base_model,
        "base_revision": None if is_file else base_revision_or_hash,
        "base_file": str(base_revision_or_hash) if is_file else None,
        "base_sha256": file_sha256(base_revision_or_hash) if is_file else None,
        "data_files": [{"path": str(p), "sha256": file_sha256(p), "rows": count_rows(p)} for p in data_files],
        "config_sha256": config_sha256(config_dict),
        "git_commit": commit,
        "git_dirty": dirty,  # True: the commit alone does not reproduce the code that ran
        "versions": library_versions(installed_only=False),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _cell(value) -> str:
    """Text safe inside a markdown table cell: HTML escaped, pipes escaped, newlines as <br>."""
    text = html.escape(str(value), quote=False).replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def md_table(rows: list[dict]) -> str:
    """A markdown table from a list of dicts (columns: every key, in first-seen order)."""
    if not rows:
        return "_(empty)_"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(_fmt(row.get(c, ""))) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rows(table) -> list[dict]:
    if hasattr(table, "to_dict"):  # a pandas DataFrame; keep a meaningful index as a column
        if type(table.index).__name__ != "RangeIndex":
            table = table.reset_index()
        return table.to_dict("records")
    return list(table)


def _percent(summary: dict, key: str) -> str:
    value = summary[key]
    if not 0 <= value <= 1:
        raise ValueError(f"{key} must be a fraction in 0..1 (0.42 for 42%), got {value}")
    return f"{100 * value:.1f}%"


def _metrics(s: dict) -> list[dict]:
    rows = [("method", s.get("method")), ("base model", s.get("base_model"))]
    if s.get("trainable_params") is not None:
        share = f" ({100 * s['trainable_params'] / s['total_params']:.2f}% of all)" if s.get("total_params") else ""
        rows.append(("trainable parameters", f"{s['trainable_params']:,}{share}"))
    if s.get("total_params") is not None:
        rows.append(("total parameters", f"{s['total_params']:,}"))
    if s.get("base_dtype"):
        rows.append(("frozen weights dtype", s["base_dtype"]))
    if s.get("train_time_s") is not None:
        rows.append(("training time", f"{s['train_time_s']:.1f} s ({s['train_time_s'] / 60:.1f} min)"))
    for key, label, fmt in (("tokens_per_s", "throughput", "{:,.0f} tokens/s"),
                            ("peak_memory_mb", "peak memory", "{:,.0f} MB"),
                            ("final_train_loss", "final train loss", "{:.4f}"),
                            ("final_eval_loss", "final eval loss", "{:.4f}")):
        if s.get(key) is not None:
            rows.append((label, fmt.format(s[key])))
    return [{"metric": k, "value": v} for k, v in rows if v is not None]


def accuracy_line(s: dict) -> str | None:
    """'exact match on the test split: base 12.0% [8.2%, 17.2%] -> tuned 64.5% [...] (n=200; ...)' from a
    run's metrics; the split is named by its file when the metrics carry it (test_split), and a small n
    says that its intervals are too wide to read differences between runs."""
    names = ("before GRPO (starting policy)", "after GRPO") if s.get("task") == "grpo" else ("base", "tuned")
    keys = [(who, key) for who, key in zip(names, ("base_exact_match", "tuned_exact_match")) if s.get(key) is not None]
    if not keys:
        return None
    n = s.get("n_test")
    intervals = {key: wilson(round(s[key] * n), n) for _, key in keys} if n else {}
    parts = [f"{who} {_percent(s, key)}" + (" [{:.1%}, {:.1%}]".format(*intervals[key]) if n else "")
             for who, key in keys]
    split = f"`{s['test_split']}`" if s.get("test_split") else "the test split"
    line = f"exact match on {split}: {' -> '.join(parts)}" + (f" (n={n}; Wilson 95% intervals)" if n else "")
    widest = max((high - low for low, high in intervals.values()), default=0)
    if widest > 0.3:
        line += (f". With n={n} an interval spans up to {widest:.0%}: too few rows to tell runs apart by less "
                 "than that (score more rows: test_limit)")
    return line


def perplexity_line(s: dict) -> str | None:
    """task=cpt: 'perplexity on `test.txt`: base 12.3 -> tuned 4.5 (30 texts, 2,100 tokens)'."""
    if s.get("tuned_perplexity") is None:
        return None
    return (f"perplexity on `{s.get('test_split', 'the test text')}`: base {s['base_perplexity']:.2f} -> tuned "
            f"{s['tuned_perplexity']:.2f} ({s['n_test']} texts, {s['n_test_tokens']:,} tokens)")


def _lineage_md(lin: dict) -> list[str]:
    base = lin.get("base_revision") or (f"{lin.get('base_file')} sha256 {lin.get('base_sha256')}")
    lines = [f"- base model: {lin.get('base_model')} @ {base}",
             f"- config sha256: `{lin.get('config_sha256')}`",
             f"- git commit: `{lin.get('git_commit')}`" + (" (uncommitted changes)" if lin.get("git_dirty") else ""),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in (lin.get("versions") or {}).items() if v),
             f"- python {lin.get('python')} on {lin.get('platform')}, recorded {lin.get('timestamp')}"]
    if lin.get("data_files"):
        lines += ["", md_table(lin["data_files"])]
    return lines


def write_report(run_dir, summary: dict) -> Path:
    """Write <run_dir>/finetune_report.md from `summary` and return its path.

    summary keys (all optional but `method`):
      method            "lora", "qlora", "full", ...
      base_model        name or path of the base model
      trainable_params, total_params   ints
      train_time_s, tokens_per_s, peak_memory_mb   floats
      final_train_loss, final_eval_loss            floats
      base_exact_match, tuned_exact_match          fractions in 0..1; n_test: test rows they were scored on
      unseen            the same keys (and test_split, samples) for unseen_test_file
      reward_table      GRPO: list of {model, reward, mean, low, high, n} (evaluation.reward_table)
      samples           list of {prompt, reference, base, tuned} dicts (generations side by side)
      diagnosis         list[str] from monitor.diagnose; [] prints "no problems found in the curves"
      eval_table        a pandas DataFrame or a list of dicts, shown as a table
      benchmark_table   the same, for lm-evaluation-harness results (base and tuned columns)
      lineage           dict from `lineage(...)`
    The loss plot is linked when <run_dir>/loss_curve.png exists (see `save_loss_plot`).
    """
    if "method" not in summary:
        raise ValueError("write_report needs summary['method'] (e.g. 'lora'): the report is titled by it")
    run_dir = Path(run_dir)
    s = summary
    title = f"# Fine-tuning report: {s['method']}" + (f" on {s['base_model']}" if s.get("base_model") else "")
    out = [title, "", f"Run directory `{run_dir}`, written {datetime.now().strftime('%Y-%m-%d %H:%M')}.", "",
           "## Metrics", "", md_table(_metrics(s)), ""]
    accuracy = accuracy_line(s) or perplexity_line(s)
    if accuracy:
        out += [accuracy, ""]
    if s.get("unseen"):  # the second test split, worded unlike the training rows
        out += [accuracy_line(s["unseen"]) + " (requests worded unlike any training row)", ""]
    if (run_dir / LOSS_PLOT).exists():
        out += ["## Loss curves", "", f"![loss curves]({LOSS_PLOT})", ""]
    if "diagnosis" in s:
        out += ["## Diagnosis", ""]
        out += [f"- {d}" for d in s["diagnosis"]] or ["no problems found in the curves"]
        out.append("")
    if s.get("reward_table"):
        why = ("Mean reward of the greedy answers per reward function (sum: what GRPO maximises), with "
               "normal-approximation 95% intervals.")
        out += ["## Rewards on the test split", "", why, "", md_table(_rows(s["reward_table"])), ""]
    if s.get("eval_table") is not None:
        out += ["## Evaluation", "", md_table(_rows(s["eval_table"])), ""]
    if s.get("benchmark_table") is not None:
        out += ["## Benchmarks (lm-evaluation-harness)", "", md_table(_rows(s["benchmark_table"])), ""]
    columns = ("prompt", "reference", "base", "tuned")
    if s.get("samples"):
        out += ["## Generations", "", md_table([{c: row.get(c, "") for c in columns} for row in s["samples"]]), ""]
    if s.get("unseen", {}).get("samples"):
        out += [f"## Generations on `{s['unseen']['test_split']}`", "",
                md_table([{c: row.get(c, "") for c in columns} for row in s["unseen"]["samples"]]), ""]
    if s.get("lineage"):
        out += ["## Lineage", ""] + _lineage_md(s["lineage"]) + [""]
    path = run_dir / "finetune_report.md"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def base_weights(model_name: str, model) -> str | None:
    """What identifies the base weights in the lineage: the cached safetensors file (hashed) or revision."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = Path(model_name) / "model.safetensors" if Path(model_name).is_dir() else \
            try_to_load_from_cache(model_name, "model.safetensors")
        if isinstance(path, (str, Path)) and Path(path).is_file():
            return str(path)
    except Exception:  # noqa: BLE001, S110 - a sharded or unusual checkpoint: record the revision instead
        pass
    return getattr(model.config, "_commit_hash", None)


def write_run_folder(cfg, model, run_dir, history: list[dict], metrics: dict) -> None:
    """Everything a run leaves beside its adapter: finetune_config.yaml (fully resolved, with the library
    versions), loss_curve.png, lineage.json and finetune_report.md (with monitor.diagnose's reading)."""
    run_dir = Path(run_dir)
    save_config(cfg, run_dir / "finetune_config.yaml", versions=library_versions())
    save_loss_plot(history, run_dir / LOSS_PLOT)
    data_files = [p for p in (cfg.train_file, cfg.eval_file, cfg.test_file, cfg.unseen_test_file) if p]
    record = lineage(cfg.model, base_weights(cfg.model, model), data_files, cfg)
    (run_dir / "lineage.json").write_text(json.dumps(record, indent=2))
    metrics["diagnosis"] = diagnose(history)
    write_report(run_dir, {**metrics, "lineage": record})
