"""ftlab.shipped and named configs: what the course reads ships inside the wheel and is found from any folder."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ftlab.cli import main
from ftlab.config import load_config
from ftlab.shipped import config_names, config_path, configs_dir, data_dir

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SUFFIXES = {".jsonl", ".json", ".yaml", ".csv", ".parquet"}


def _repo_files(folder: str) -> set[str]:
    """The data/config files under the checkout's folder, as paths relative to it."""
    return {str(p.relative_to(ROOT / folder)) for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in SHIPPED_SUFFIXES}


def test_the_wheel_carries_every_data_and_config_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("ftlab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("data", "configs"):
        expected = {f"ftlab/shipped/{folder}/{rel}" for rel in _repo_files(folder)}
        assert expected <= names, sorted(expected - names)
    # the ones the course names, spelled out (the set above would be empty if the checkout had none)
    for rel in ("data/dates/train.jsonl", "data/dates/test.jsonl", "data/dates/preference_train.jsonl",
                "data/numbers/validation.jsonl", "data/formats/sharegpt.json", "data/formats/preference.parquet",
                "data/lm_eval/ftlab_dates_mc.yaml", "data/lm_eval/dates_mc.jsonl", "configs/dates_lora.yaml",
                "configs/dates_smoke.yaml", "configs/accelerate/ddp.yaml", "configs/shapes/llama-3.2-1b.json"):
        assert f"ftlab/shipped/{rel}" in names, rel


def test_the_package_finds_no_file_relative_to_its_source():
    """Shipped files are read through importlib.resources (ftlab.shipped), never next to a .py file."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "ftlab").rglob("*.py") if "__file__" in p.read_text()]
    assert offenders == []


def test_shipped_folders_hold_the_checkout_files():
    assert _repo_files("data") == {str(p.relative_to(data_dir())) for p in data_dir().rglob("*")
                                   if p.is_file() and p.suffix in SHIPPED_SUFFIXES}
    assert (configs_dir() / "dates_smoke.yaml").read_bytes() == (ROOT / "configs" / "dates_smoke.yaml").read_bytes()
    assert config_names() == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))


def test_a_shipped_config_by_name_finds_shipped_data_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here
    for name in ("dates_smoke", "dates_smoke.yaml"):
        cfg = load_config(name, ["max_steps=2"])
        assert Path(cfg.train_file).is_absolute()
        assert Path(cfg.train_file).read_bytes() == (ROOT / "data" / "dates" / "train.jsonl").read_bytes()
        assert Path(cfg.test_file).read_bytes() == (ROOT / "data" / "dates" / "test.jsonl").read_bytes()
        assert cfg.max_steps == 2
    main_job = load_config("dates_lora")  # the second test split is found the same way
    assert Path(main_job.unseen_test_file).read_bytes() == (ROOT / "data" / "dates" / "test_unseen.jsonl").read_bytes()
    assert Path(main_job.train_file).read_bytes() == (ROOT / "data" / "dates" / "train_varied.jsonl").read_bytes()
    assert cfg.output_dir == "runs/dates_smoke"  # outputs stay relative: they land where you run


def test_an_unknown_config_name_lists_the_shipped_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="dates_lora.*dates_smoke.*path to a YAML file"):
        load_config("nosuch")
    with pytest.raises(FileNotFoundError, match="dates_smoke"):
        config_path("nosuch")
    assert main(["train", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "'nosuch'" in err and "dates_lora" in err and "path" in err


def test_relative_files_resolve_beside_the_config_then_in_the_working_directory(tmp_path, monkeypatch):
    src = (ROOT / "data" / "dates" / "train.jsonl").read_text()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "run").mkdir()
    cfg_file = tmp_path / "jobs" / "mine.yaml"
    cfg_file.write_text("train_file: rows.jsonl\n")
    monkeypatch.chdir(tmp_path / "run")

    (tmp_path / "run" / "rows.jsonl").write_text(src)  # only in the working directory
    assert load_config(cfg_file).train_file == str(tmp_path / "run" / "rows.jsonl")
    (tmp_path / "jobs" / "rows.jsonl").write_text(src)  # beside the config too: that one wins
    assert load_config(cfg_file).train_file == str(tmp_path / "jobs" / "rows.jsonl")
    # an override typed on the command line is relative to where you run
    assert load_config(cfg_file, ["train_file=rows.jsonl"]).train_file == str(tmp_path / "run" / "rows.jsonl")

    cfg_file.write_text("train_file: missing.jsonl\n")
    with pytest.raises(ValueError) as err:
        load_config(cfg_file)
    assert str(tmp_path / "jobs" / "missing.jsonl") in str(err.value)
    assert str(tmp_path / "run" / "missing.jsonl") in str(err.value)
    assert "train_file" in str(err.value)


def test_a_saved_run_config_reloads_from_another_folder(tmp_path, monkeypatch):
    from ftlab.config import save_config

    saved = save_config(load_config("dates_smoke"), tmp_path / "a" / "finetune_config.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_config(saved).train_file == load_config("dates_smoke").train_file


PUBLIC_API = """
import importlib, inspect, pkgutil, types
import ftlab
for info in pkgutil.walk_packages(ftlab.__path__, "ftlab."):
    if not info.name.startswith("ftlab.shipped."):
        importlib.import_module(info.name)  # every submodule first: each import binds ftlab.<module>
from ftlab import _WHERE
for name, module in _WHERE.items():
    value = getattr(ftlab, name)
    exec(f"from ftlab import {name} as imported")
    assert imported is value, name
    assert not isinstance(value, types.ModuleType), f"ftlab.{name} is the module {value.__name__}"
    assert value is getattr(importlib.import_module("ftlab." + module), name), name
print("checked", len(_WHERE))
"""


def test_every_public_name_is_what_its_docstring_promises_whatever_was_imported_first():
    out = subprocess.run([sys.executable, "-c", PUBLIC_API], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "checked" in out.stdout
