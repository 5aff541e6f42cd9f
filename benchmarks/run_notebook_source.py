"""Run a notebook's source (notebooks/src/NN_topic.py, percent format) cell by cell, without Jupyter.

For a machine that has no nbclient, nbformat or ipykernel (the lent GPU machine, benchmarks/gpu_smoke.sh): the
code cells run in order in one namespace, as a learner's kernel runs the built notebook: the `# {install}` cell
is left out (ftlab is installed already), cells tagged "solution" too (the learner's notebook has the exercise
stub instead). A cell whose last statement is an expression prints its value, as Jupyter shows it. Stops at
the first cell that raises, with its traceback; prints each cell's number, first line and seconds.

  MPLBACKEND=Agg python benchmarks/run_notebook_source.py notebooks/src/03_qlora_with_unsloth.py [--cwd DIR]

Leaves out: IPython syntax (`!cmd`, `%magic`, `obj??`; a cell that uses it fails here), widgets, rich display.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
import traceback
from pathlib import Path

MARKER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")  # as notebooks/build.py


def code_cells(source: str) -> list[tuple[list[str], str]]:
    """(tags, code) for each code cell of a percent-format source, in order."""
    cells, current = [], None  # current: (is_markdown, tags, lines)
    for line in source.splitlines():
        m = MARKER.match(line)
        if m:
            if current and not current[0]:
                cells.append((current[1], "\n".join(current[2]).strip("\n")))
            current = (bool(m["md"]), ast.literal_eval(m["tags"]) if m["tags"] else [], [])
        elif current is not None:
            current[2].append(line)
    if current and not current[0]:
        cells.append((current[1], "\n".join(current[2]).strip("\n")))
    return cells


def run_cell(code: str, namespace: dict, name: str) -> None:
    """exec the cell; a final expression is evaluated and its repr printed (None prints nothing)."""
    tree = ast.parse(code, filename=name)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, name, "exec"), namespace)  # noqa: S102 - running the notebook is the point
    if last is not None:
        value = eval(compile(ast.Expression(last.value), name, "eval"), namespace)
        if value is not None:
            print(repr(value))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="notebooks/src/NN_topic.py")
    p.add_argument("--cwd", help="run here (runs/ and Unsloth's compiled cache are written into it)")
    args = p.parse_args(argv)
    source = Path(args.source).resolve()
    if args.cwd:
        Path(args.cwd).mkdir(parents=True, exist_ok=True)
        os.chdir(args.cwd)
    namespace = {"__name__": "__main__"}
    cells = code_cells(source.read_text())
    start = time.perf_counter()
    for i, (tags, code) in enumerate(cells, 1):
        first = code.splitlines()[0] if code else ""
        if "solution" in tags or first.strip() == "# {install}":
            print(f"--- cell {i}/{len(cells)} left out ({'solution' if 'solution' in tags else 'install'})")
            continue
        print(f"--- cell {i}/{len(cells)}: {first[:70]}", flush=True)
        t = time.perf_counter()
        try:
            run_cell(code, namespace, f"{source.name}, cell {i}")
        except BaseException:  # noqa: BLE001 - report which cell, then stop like a notebook run does
            traceback.print_exc()
            print(f"FAILED at cell {i}/{len(cells)} after {time.perf_counter() - start:.0f} s", flush=True)
            return 1
        print(f"    ({time.perf_counter() - t:.1f} s)", flush=True)
    print(f"ALL {len(cells)} cells ran in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
