"""Shared fixtures: the real embedded model, loaded once per test session, offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub

import pytest


@pytest.fixture(scope="session")
def model_and_tokenizer():
    from ftlab import load_model

    return load_model(verbose=False)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from ftlab import DEFAULT_MODEL, embedded

    embedded.build()  # no-op once the embedded model is in the HF cache
    return AutoTokenizer.from_pretrained(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """configs/dates_smoke.yaml trained ONCE per session into a tmp dir: an ftlab.training.TrainResult.

    Shared by every test that needs a finished run (its folder is `.run_dir`); a few LoRA steps, ~1 min.
    """
    from pathlib import Path

    from ftlab.config import load_config
    from ftlab.preflight import trl_problem
    from ftlab.training import train

    if trl_problem():  # TRL 1.15 on a CPU (DEVELOPERS.md, lower ends): tests/test_training.py checks the error
        pytest.skip(trl_problem())
    root = Path(__file__).resolve().parent.parent
    data = root / "data" / "dates"
    cfg = load_config(root / "configs" / "dates_smoke.yaml", [
        f"output_dir={tmp_path_factory.mktemp('dates_smoke')}", f"train_file={data / 'train.jsonl'}",
        f"eval_file={data / 'validation.jsonl'}", f"test_file={data / 'test.jsonl'}"])
    return train(cfg)
