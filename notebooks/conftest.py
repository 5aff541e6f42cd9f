"""nbmake runs each notebook as a test: small profile, offline, and marked slow for the quick loop."""

import os

import pytest

os.environ.setdefault("FTLAB_PROFILE", "small")  # the kernels inherit this environment
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.path).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.notebook)
