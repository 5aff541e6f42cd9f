"""Build `notebooks/NN_topic.ipynb` from `notebooks/src/NN_topic.py` (percent format).

Why sources in .py: they diff and review like code; the .ipynb files are what learners open and what
CI executes. `python notebooks/build.py` rebuilds all; a test checks that they are in sync.
Cell markers: `# %% [markdown]`, `# %%`, and `# %% tags=["skip-execution"]` for Colab-only cells
(nbmake/nbclient skip cells with that tag).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).parent
GITHUB_REPO = "ftlab-course/ftlab"  # where the course is published: the badges point here
BRANCH = "main"
MARKER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def badges(name: str) -> str:
    path = f"notebooks/{name}"
    colab = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/{BRANCH}/{path}"
    kaggle = f"https://kaggle.com/kernels/welcome?src=https://github.com/{GITHUB_REPO}/blob/{BRANCH}/{path}"
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle})")


def parse(source: str, name: str) -> nbformat.NotebookNode:
    cells, kind, tags, lines = [], None, [], []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in text.splitlines())
            text = text.replace("{badges}", badges(name))
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "code" and text:
            # jupytext's convention: shell and magic lines are commented out in the .py source
            # (also indented, inside an `if`: IPython runs `!cmd` and `%magic` there too)
            text = "\n".join(re.sub(r"^(\s*)# ([!%])", r"\1\2", ln) for ln in text.splitlines())
            cell = nbformat.v4.new_code_cell(text)
            if tags:
                cell.metadata["tags"] = tags
            cells.append(cell)

    for line in source.splitlines():
        m = MARKER.match(line)
        if m:
            flush()
            kind, tags, lines = ("markdown" if m["md"] else "code"), json.loads(m["tags"] or "[]"), []
        elif kind is not None:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids, so a rebuild diffs cleanly
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"
    return nb


def build(src: Path) -> tuple[Path, str]:
    name = src.stem + ".ipynb"
    return HERE / name, nbformat.writes(parse(src.read_text(), name)) + "\n"


def main() -> int:
    for src in sorted((HERE / "src").glob("[0-9][0-9]_*.py")):
        out, text = build(src)
        out.write_text(text)
        print(f"wrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
