"""The .ipynb files are built from notebooks/src/*.py; an edit to one side only is caught here."""

import importlib.util
from pathlib import Path

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def _builder():
    spec = importlib.util.spec_from_file_location("build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_built_from_its_source():
    build = _builder()
    sources = sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py"))
    assert sources, "no notebook sources found"
    for src in sources:
        out, text = build.build(src)
        assert out.exists(), f"{out.name} missing: run python notebooks/build.py"
        assert out.read_text() == text, f"{out.name} differs from {src.name}: run python notebooks/build.py"
    assert {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")} == {s.stem for s in sources}
    out, text = build.build_solutions()
    assert out.exists() and out.read_text() == text, f"{out.name} differs from the sources: run python notebooks/build.py"


def test_each_notebook_has_badges_objectives_exercise_questions_and_a_check():
    build = _builder()
    for src in sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py")):
        nb = build.parse(src.read_text(), src.stem + ".ipynb")
        text = "\n".join(c.source for c in nb.cells)
        assert "colab.research.google.com" in nb.cells[0].source and "kaggle.com" in nb.cells[0].source
        for needed in ("You will learn", "Exercise", "Easy", "Medium", "Hard", "Questions"):
            assert needed in text, f"{src.name}: no '{needed}' section"
        assert nb.cells[-1].cell_type == "code" and "assert" in nb.cells[-1].source, f"{src.name}: no final check"


def test_readme_lists_every_notebook_with_its_badges():
    build = _builder()
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        assert f"[{nb.stem}](notebooks/{nb.name})" in readme, f"README's course table lacks {nb.name}"
        assert build.badges(nb.name) in readme, f"README's badges for {nb.name} are missing or stale"


def test_executed_copies_match_their_notebooks_and_hold_outputs():
    """notebooks/executed/ (notebooks/refresh_executed.py, from the CI run) has every notebook, cell for
    cell the same source, and outputs in every notebook: what a reader on GitHub or nbviewer sees."""
    import json

    executed = NOTEBOOKS / "executed"
    for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        copy = executed / nb.name
        assert copy.exists(), f"notebooks/executed/{nb.name} missing: run python notebooks/refresh_executed.py"
        cells = [("".join(c["source"]), c["cell_type"]) for c in json.loads(nb.read_text())["cells"]]
        ran = json.loads(copy.read_text())["cells"]
        assert [("".join(c["source"]), c["cell_type"]) for c in ran] == cells, \
            f"notebooks/executed/{nb.name} is stale: run python notebooks/refresh_executed.py -k {nb.stem}"
        assert sum(bool(c.get("outputs")) for c in ran if c["cell_type"] == "code") >= 3, f"{copy.name}: no outputs"


def test_random_and_grid_tensors_in_notebooks_name_their_device():
    """A tensor made on the CPU and multiplied with a model's weights fails on a GPU (issue 14, H3/H4):
    every torch.randn / rand / linspace in a notebook says where it goes (device=...)."""
    import re

    made = re.compile(r"torch\.(randn|rand|linspace)\((?P<args>[^\n]*)")
    found = []
    for src in sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py")):
        for number, line in enumerate(src.read_text().splitlines(), 1):
            match = made.search(line)
            if match and "device=" not in match["args"]:
                found.append(f"{src.name}:{number}: {line.strip()}")
    assert not found, "add device=<the model's device> to:\n" + "\n".join(found)
