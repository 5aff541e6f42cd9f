"""Build `notebooks/NN_topic.ipynb` from `notebooks/src/NN_topic.py` (percent format).

Why sources in .py: they diff and review like code; the .ipynb files are what learners open and what
CI executes. `python notebooks/build.py` rebuilds all; a test checks that they are in sync.
Cell markers: `# %% [markdown]`, `# %%`, and `# %% tags=[...]` for cell tags.
Checked exercises: a cell tagged "exercise" (the task, and a stub to replace), one tagged "solution" and one
tagged "check" (ends with a `check_...(...)` call from ftlab.exercises). A notebook gets the exercise and the
check, not the solution; notebooks/solutions.ipynb gets, for every notebook, the exercise's markdown, the
solution and the check, which must pass there.
Placeholders: `{badges}` (Colab and Kaggle badges) and `{runtime}` (which runtime to pick) in the first
markdown cell; a code cell `# {install}` becomes the install cell, the same in every notebook:
notebooks/install_cell.py with the install source below (FTLAB_INSTALL_SOURCE overrides it at run time).
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
# What the install cell installs on Colab and Kaggle: "ftlab" (PyPI), a git URL or a wheel's path.
# FTLAB_INSTALL_SOURCE overrides it when the cell runs (CI: the wheel it just built, tests/test_course_from_wheel.py)
INSTALL_SOURCE = f"git+https://github.com/{GITHUB_REPO}"
MULTI_PROCESS = {"08_scaling_out"}  # notebooks that launch one process per GPU (torchrun): they keep every GPU
RUNTIME = ("**Runtime**: on Colab, *Runtime > Change runtime type > T4 GPU*; on Kaggle, *Settings > Accelerator "
           "> GPU T4 x2* (not P100) and *Internet* on. A CPU runtime works too, slowly, in the small profile.")
INSTALL_NOTE = ("- Run this cell first. On Colab or Kaggle it installs ftlab (with Unsloth on a GPU); elsewhere it "
                "uses the ftlab the README's set-up installed. It checks the GPU and picks the profile, and "
                "running it again does no harm.")
MARKER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def badges(name: str) -> str:
    path = f"notebooks/{name}"
    colab = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/{BRANCH}/{path}"
    kaggle = f"https://kaggle.com/kernels/welcome?src=https://github.com/{GITHUB_REPO}/blob/{BRANCH}/{path}"
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle})")


def install_cell(name: str) -> str:
    """notebooks/install_cell.py, with this course's install source and the notebook's GPU setting."""
    code = (HERE / "install_cell.py").read_text().strip("\n").replace('"INSTALL_SOURCE"', json.dumps(INSTALL_SOURCE))
    code = code.replace('NOTEBOOK = "NOTEBOOK"', f"NOTEBOOK = {json.dumps(Path(name).stem)}")
    if Path(name).stem in MULTI_PROCESS:
        code, n = re.subn(r"^ONE_GPU = True .*$", "ONE_GPU = False  # this notebook launches one process per GPU: "
                          "it keeps them all", code, flags=re.MULTILINE)
        assert n == 1, "install_cell.py has no `ONE_GPU = True` line"
    return code


def raw_cells(source: str) -> list[tuple[str, list[str], str]]:
    """(kind, tags, text) per cell marker of a percent-format source: kind 'markdown' or 'code'."""
    cells, kind, tags, lines = [], None, [], []
    for line in source.splitlines() + ["# %%"]:
        m = MARKER.match(line)
        if m:
            if kind is not None:
                cells.append((kind, tags, "\n".join(lines).strip("\n")))
            kind, tags, lines = ("markdown" if m["md"] else "code"), json.loads(m["tags"] or "[]"), []
        elif kind is not None:
            lines.append(line)
    return cells


def notebook(cells: list[tuple[str, list[str], str]], name: str) -> nbformat.NotebookNode:
    out = []
    for kind, tags, text in cells:
        if kind == "markdown":
            text = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in text.splitlines())
            text = text.replace("{badges}", badges(name)).replace("{runtime}", RUNTIME)
            out.append(nbformat.v4.new_markdown_cell(text))
        elif text == "# {install}":
            out.append(nbformat.v4.new_markdown_cell(INSTALL_NOTE))
            out.append(nbformat.v4.new_code_cell(install_cell(name)))
        elif text:
            # jupytext's convention: shell and magic lines are commented out in the .py source
            # (also indented, inside an `if`: IPython runs `!cmd` and `%magic` there too)
            text = "\n".join(re.sub(r"^(\s*)# ([!%])", r"\1\2", ln) for ln in text.splitlines())
            cell = nbformat.v4.new_code_cell(text)
            if tags:
                cell.metadata["tags"] = tags
            out.append(cell)
    nb = nbformat.v4.new_notebook(cells=out)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    # so that the badges open on a GPU runtime: Colab's keys, and Kaggle's as its own notebooks carry them
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["colab"] = {"gpuType": "T4", "provenance": []}
    nb.metadata["kaggle"] = {"accelerator": "nvidiaTeslaT4", "isGpuEnabled": True, "isInternetEnabled": True,
                             "language": "python", "sourceType": "notebook"}
    for i, cell in enumerate(nb.cells):  # stable ids, so a rebuild diffs cleanly
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"
    return nb


def parse(source: str, name: str) -> nbformat.NotebookNode:
    """The learner's notebook: every cell but the solutions."""
    return notebook([c for c in raw_cells(source) if "solution" not in c[1]], name)


SOLUTIONS = "solutions.ipynb"
SOLUTIONS_INTRO = """# Solutions to the checked exercises
{badges}

- Each notebook has one exercise that `ftlab.exercises` checks: you replace a stub with your own function,
  and its check runs it against the library (PEFT, torch, TRL's logs, ftlab's own scorers).
- Here: the exercise as the notebook states it, a solution, and the same check, which must pass (CI runs
  this notebook). Try each exercise in its notebook first.
- {runtime}"""


def solutions(sources: list[Path]) -> nbformat.NotebookNode:
    """notebooks/solutions.ipynb: per notebook, its exercise's markdown, the solution and the check, asserted."""
    cells = [("markdown", [], "\n".join("# " + ln for ln in SOLUTIONS_INTRO.splitlines())), ("code", [], "# {install}")]
    for src in sources:
        mine = [c for c in raw_cells(src.read_text()) if {"exercise", "solution", "check"} & set(c[1])]
        if not mine:
            continue
        cells.append(("markdown", [], f"# ## [{src.stem}]({src.stem}.ipynb)"))
        for kind, tags, text in mine:
            if kind == "code" and "exercise" in tags:
                continue  # the stub: the solution replaces it
            if "check" in tags:
                *head, call = text.splitlines()
                assert call.startswith("check_"), f"{src.name}: a check cell must end with its check_...() call"
                text = "\n".join(head + [f"result = {call}", "print(result)",
                                          'assert result, "this solution fails its own check"'])
            cells.append((kind, tags, text))
    return notebook(cells, SOLUTIONS)


def build(src: Path) -> tuple[Path, str]:
    name = src.stem + ".ipynb"
    return HERE / name, nbformat.writes(parse(src.read_text(), name)) + "\n"


def build_solutions() -> tuple[Path, str]:
    return HERE / SOLUTIONS, nbformat.writes(solutions(sources())) + "\n"


def sources() -> list[Path]:
    return sorted((HERE / "src").glob("[0-9][0-9]_*.py"))


def main() -> int:
    for out, text in [build(src) for src in sources()] + [build_solutions()]:
        out.write_text(text)
        print(f"wrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
