"""Files that ship inside ftlab: the course's data, run configs, model shapes and lm-eval task files.

The repository keeps them where a reader looks for them (`data/`, `configs/`); pyproject.toml packages
those two folders as `ftlab.shipped.data` and `ftlab.shipped.configs`, so the same names resolve in a
checkout (editable install) and in an installed wheel. Everything is found through `importlib.resources`,
never relative to a source file. `config_path("dates_lora")` is how `ftlab train dates_lora` finds a
shipped run config. Leaves out: reading the files (tasks.py, config.py, estimation.py do that).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _folder(package: str) -> Path:
    # installed wheels and editable installs are plain folders on disk, so the Traversable is a Path
    return Path(str(files(package)))


def data_dir() -> Path:
    """The shipped data/ folder: dates/, numbers/, formats/, lm_eval/ (written by data/make_data.py)."""
    return _folder("ftlab.shipped.data")


def configs_dir() -> Path:
    """The shipped configs/ folder: run configs (*.yaml), accelerate/ and shapes/."""
    return _folder("ftlab.shipped.configs")


def config_names() -> list[str]:
    """Names of the shipped run configs, e.g. ['dates_lora', 'dates_smoke']."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def config_path(name: str) -> Path:
    """The shipped run config called `name` ('dates_lora' or 'dates_lora.yaml')."""
    path = configs_dir() / f"{name.removesuffix('.yaml').removesuffix('.yml')}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config file {name!r}, and ftlab ships no config of that name. "
                                f"Shipped configs: {', '.join(config_names())}; a path to a YAML file works too.")
    return path
