"""TrainConfig: YAML round trip, typed key=value overrides, and errors that name the key and the fix."""

import dataclasses
from pathlib import Path

import pytest

from ftlab.config import TrainConfig, load_config, resolve, save_config

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_use_trl_names_and_auto_choices():
    cfg = load_config()
    assert (cfg.method, cfg.task, cfg.lr_scheduler_type, cfg.target_modules) == ("lora", "sft", "cosine", "all-linear")
    assert cfg.gradient_checkpointing is None and cfg.optim is None  # None: decided by resolve()
    from trl import SFTConfig

    trl_names = {f.name for f in dataclasses.fields(SFTConfig)}
    for name in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_length", "lr_scheduler_type", "weight_decay",
                 "max_grad_norm", "seed", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
                 "packing", "gradient_checkpointing", "optim", "report_to", "resume_from_checkpoint"):
        assert name in trl_names and hasattr(cfg, name)


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["method=dora", "r=4", "target_modules=q_proj,v_proj", "learning_rate=3e-4",
                             "max_steps=20", "eval_steps=null", "resume_from_checkpoint=true"])
    path = save_config(cfg, tmp_path / "c.yaml", versions={"torch": "x"})
    again = load_config(path)  # the versions record is skipped on load
    assert again == cfg
    assert again.target_modules == ["q_proj", "v_proj"] and again.learning_rate == 3e-4


def test_overrides_are_coerced_from_the_field_type():
    cfg = load_config(None, ["learning_rate=1e-4", "max_steps=1e3", "num_train_epochs=2", "packing=true",
                             "gradient_checkpointing=none", "resume_from_checkpoint=runs/x/checkpoint-5",
                             "early_stopping_patience=null", "target_modules=q_proj"])
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.max_steps == 1000 and isinstance(cfg.max_steps, int)
    assert cfg.num_train_epochs == 2.0 and cfg.packing is True and cfg.gradient_checkpointing is None
    assert cfg.resume_from_checkpoint == "runs/x/checkpoint-5"
    assert cfg.target_modules == "q_proj"  # one layer name, as given (adapters.resolve_target_modules lists it)


def test_yaml_numbers_pyyaml_reads_as_strings_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-4\nwarmup_ratio: 0.1\n")  # PyYAML (YAML 1.1) reads 1e-4 as a string
    assert load_config(path).learning_rate == 1e-4


@pytest.mark.parametrize("override, words", [
    ("lerning_rate=1e-4", ["'lerning_rate'", "did you mean 'learning_rate'"]),
    ("method=lorra", ["method='lorra'", "did you mean 'lora'", "Fix"]),
    ("r=abc", ["r='abc'", "expected int"]),
    ("r=1.5", ["expected int"]),
    ("learning_rate=0", ["learning_rate", "must be positive"]),
    ("lora_dropout=1.5", ["lora_dropout", "[0, 1)"]),
    ("packing", ["not key=value"]),
    ("report_to=wandb", ["not one of none, tensorboard"]),
    ("early_stopping_patience=2", ["eval_file", "Fix"]),
    ("train_file=no/such.jsonl", ["train_file", "no such file"]),
])
def test_bad_values_name_the_key_and_the_fix(override, words):
    with pytest.raises(ValueError) as err:
        load_config(None, [override])
    for word in words:
        assert word in str(err.value)


def test_bad_combinations():
    with pytest.raises(ValueError, match="prefix/prompt tuning with DPO"):
        load_config(None, ["task=dpo", "method=prefix"])
    with pytest.raises(ValueError, match="prefix/prompt tuning with ORPO"):
        load_config(None, ["task=orpo", "method=prompt"])
    with pytest.raises(ValueError, match="packing.*KTO scores whole chosen/rejected answers"):
        load_config(None, ["task=kto", "packing=true"])
    with pytest.raises(ValueError, match="packing"):
        load_config(None, ["method=prompt", "packing=true"])
    with pytest.raises(ValueError, match="Unsloth"):
        load_config(None, ["backend=unsloth", "method=ia3"])
    evals = str(ROOT / "data/dates/validation.jsonl")
    with pytest.raises(ValueError, match="multiple of eval_steps"):
        load_config(None, [f"eval_file={evals}", "early_stopping_patience=2", "eval_steps=10", "save_steps=15"])
    load_config(None, [f"eval_file={evals}", "early_stopping_patience=2", "eval_steps=10", "save_steps=20"])
    with pytest.raises(ValueError, match="unseen_test_file.*scored with the test evaluation.*set test_file too"):
        load_config(None, [f"unseen_test_file={evals}"])
    with pytest.raises(ValueError, match="unseen_test_file.*task=dpo reports its own test figures"):
        load_config(None, ["task=dpo", f"test_file={evals}", f"unseen_test_file={evals}"])


def test_resolve_fills_the_automatic_choices(monkeypatch):
    import torch

    from ftlab.hardware import choose_backend

    cfg = resolve(load_config(None, ["method=qlora"]))
    assert cfg.gradient_checkpointing is True
    assert cfg.backend == choose_backend("auto")[0]  # Unsloth on a GPU that has it
    assert resolve(load_config()).gradient_checkpointing is False
    assert resolve(load_config()).optim == ("adamw_8bit" if torch.cuda.is_available() else "adamw_torch")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # any machine, acting as a CPU one
    assert resolve(load_config(None, ["method=qlora"])).backend == "transformers"
    assert resolve(load_config()).optim == "adamw_torch"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("ftlab.hardware.unsloth_importable", lambda: False)
    assert resolve(load_config()).optim == "adamw_8bit"
    assert resolve(load_config(None, ["optim=adamw_torch"])).optim == "adamw_torch"  # asked for: kept


def test_auto_backend_runs_grpo_on_peft_and_says_why(monkeypatch, capsys):
    """Where auto would pick Unsloth (a CUDA GPU with it installed), GRPO goes to transformers + PEFT with one line;
    SFT on the same machine keeps Unsloth."""
    monkeypatch.setattr("ftlab.hardware.choose_backend", lambda asked: ("unsloth", "a CUDA GPU with Unsloth"))
    assert resolve(load_config("dates_grpo")).backend == "transformers"
    line = capsys.readouterr().out
    assert "GRPO runs on transformers + PEFT" in line and "backend=transformers" in line, line
    assert resolve(load_config("dates_smoke")).backend == "unsloth"
    assert "GRPO" not in capsys.readouterr().out


def test_eval_steps_default_follows_logging_steps():
    evals = str(ROOT / "data/dates/validation.jsonl")
    assert resolve(load_config(None, [f"eval_file={evals}", "logging_steps=4"])).eval_steps == 20


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # their data paths are relative to the repo root, as `ftlab train` runs there
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig) and cfg.train_file


@pytest.mark.parametrize("overrides, words", [
    (["task=grpo", "per_device_train_batch_size=6"], ["multiple of num_generations=4", "set per_device_train_batch_size to 4"]),
    (["task=grpo", "num_generations=1"], ["num_generations", "no relative advantage"]),
    (["task=grpo", "temperature=0"], ["temperature", "positive"]),
    (["task=grpo", "method=prompt"], ["prefix/prompt tuning with GRPO"]),
    (["task=grpo", "backend=unsloth"], ["backend", "TRL's own generation"]),
    (["warm_start_steps=5"], ["warm_start_steps", "part of grpo"]),
    (["task=grpo", "warm_start_steps=5", f"init_adapter={Path(__file__).parent}"], ["init_adapter already gives"]),
])
def test_grpo_combinations_fail_with_the_fix(overrides, words):
    with pytest.raises(ValueError) as err:
        load_config(None, overrides)
    for word in words:
        assert word in str(err.value)


def test_shipped_grpo_config_loads_with_trl_names():
    cfg = load_config("dates_grpo")
    assert cfg.task == "grpo" and cfg.reward_funcs == ["exact_date", "date_fields"] and cfg.warm_start_steps > 0
    assert cfg.per_device_train_batch_size % cfg.num_generations == 0 and cfg.beta == 0.0
