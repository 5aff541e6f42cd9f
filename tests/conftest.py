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
