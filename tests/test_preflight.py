"""preflight: what the machine, the libraries and the files say about a config, every problem at once;
and validate stays pure (no transformers, no file system, no mutation)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import ftlab.preflight
from ftlab.config import TrainConfig, validate
from ftlab.preflight import PreflightError, preflight, problems

ROOT = Path(__file__).resolve().parent.parent
TRAIN = str(ROOT / "data" / "dates" / "train.jsonl")


def test_a_runnable_config_has_no_problems():
    assert problems(TrainConfig(train_file=TRAIN)) == []
    preflight(TrainConfig(train_file=TRAIN))


@pytest.mark.parametrize("changes, words", [
    ({"lr_scheduler_type": "cosin"}, ["lr_scheduler_type='cosin'", "did you mean 'cosine'", "Fix"]),
    ({"optim": "adamw"}, ["optim='adamw'", "Fix"]),
    ({"train_file": "no/such.jsonl"}, ["train_file", "no such file"]),
    ({"train_file": None}, ["train_file", "ftlab train dates_smoke"]),
    ({"test_file": "nope.jsonl"}, ["test_file", "test_file=null"]),
    ({"benchmark_tasks": ["mmlu"], "test_file": TRAIN}, ["benchmark_tasks", "ftlab_dates_mc"]),
])
def test_each_problem_names_the_setting_and_the_fix(changes, words):
    found = problems(TrainConfig(**{"train_file": TRAIN, **changes}))
    assert len(found) == 1, found
    for word in words:
        assert word in found[0]


def test_every_problem_is_reported_at_once():
    cfg = TrainConfig(train_file="missing.jsonl", optim="adamw", lr_scheduler_type="cosin")
    with pytest.raises(PreflightError) as err:
        preflight(cfg)
    message = str(err.value)
    assert message.startswith("3 problems before training")
    assert "(1)" in message and "(3)" in message and "\n" not in message  # one line: the CLI prints one
    for word in ("train_file", "optim", "lr_scheduler_type"):
        assert word in message


def test_qlora_without_bitsandbytes_says_so(monkeypatch):
    monkeypatch.setattr(ftlab.preflight, "bitsandbytes_usable", lambda: (False, "bitsandbytes is not installed"))
    [found] = problems(TrainConfig(train_file=TRAIN, method="qlora"))
    assert "bitsandbytes is not installed" in found and "Fix: install bitsandbytes" in found


def test_tensorboard_missing_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "tensorboard" in name else real(name, *a))
    [found] = problems(TrainConfig(train_file=TRAIN, report_to="tensorboard"))
    assert "pip install tensorboard" in found


PURE = """
import sys
from ftlab.config import TrainConfig, validate
cfg = TrainConfig(train_file="no/such/file.jsonl", target_modules="q_proj", optim="nonsense")
before = repr(cfg)
assert validate(cfg) is cfg and repr(cfg) == before, "validate changed the config"
heavy = sorted(m for m in ("transformers", "torch", "peft", "trl") if m in sys.modules)
assert not heavy, f"validate imported {heavy}"
print("pure")
"""


def test_validate_is_pure():
    """No transformers (or torch) import, no file-system check, no mutation of the config."""
    out = subprocess.run([sys.executable, "-c", PURE], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "pure" in out.stdout, out.stderr[-2000:]
    with pytest.raises(ValueError, match="r=0"):
        validate(TrainConfig(r=0))  # still checks the config's own values


def test_grpo_reward_names_are_checked_before_loading_anything():
    cfg = TrainConfig(train_file=TRAIN, task="grpo", reward_funcs=["exact_dates"])
    (found,) = problems(cfg)
    assert "did you mean 'exact_date'" in found and "date_shape" in found and "date_fields" in found
    (found,) = problems(TrainConfig(train_file=TRAIN, task="grpo"))
    assert "reward_funcs" in found and "train(cfg, reward_funcs=" in found
    assert problems(cfg, own_rewards=True) == []  # train(cfg, reward_funcs=[fn]) replaces the names
    (found,) = problems(TrainConfig(train_file=TRAIN, init_adapter=str(ROOT)))
    assert "init_adapter" in found and "adapter_config.json" in found


def test_two_gpus_in_one_process_are_refused_with_the_fix(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    [found] = problems(TrainConfig(train_file=TRAIN))
    assert "2 GPUs" in found and "CUDA_VISIBLE_DEVICES=0" in found and "torchrun" in found
    monkeypatch.setenv("LOCAL_RANK", "0")  # under torchrun each process has its own GPU: fine
    assert problems(TrainConfig(train_file=TRAIN)) == []


def test_trl_1_15_on_a_p100_is_refused(monkeypatch):
    import torch
    import trl

    from ftlab.preflight import trl_problem

    monkeypatch.setattr(trl, "__version__", "1.15.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))
    assert "6.0" in trl_problem() and "T4" in trl_problem()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert trl_problem() is None


def test_orpo_needs_a_trl_that_has_it(monkeypatch):
    import importlib.util

    import trl

    assert problems(TrainConfig(train_file=TRAIN, task="orpo")) == []  # TRL 1.16: trl.experimental.orpo
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "orpo" in name else real(name, *a))
    monkeypatch.delattr(trl, "ORPOTrainer", raising=False)
    (found,) = problems(TrainConfig(train_file=TRAIN, task="orpo"))
    assert "no ORPOTrainer" in found and "trl>=1.16" in found and "task=dpo" in found
