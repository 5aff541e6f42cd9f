"""ftlab's modules import one way: no cycles, counting the imports inside functions (still dependencies).

`python tests/test_layers.py` prints the module graph (each module's ftlab imports), any cycles, and the
longest functions - the figures issue notes quote.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ftlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def ftlab_imports(tree: ast.Module, here: str) -> set[str]:
    """The ftlab modules `tree` imports anywhere (top level or inside a function): `from ftlab import x`
    counts as ftlab.x when x is a module, else as ftlab (the package's lazy re-exports)."""
    names = set(modules_cache())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ftlab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ftlab"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in names else node.module)
    return {m for m in out if m != here and m in names}


_CACHE = {}


def modules_cache() -> dict[str, ast.Module]:
    if not _CACHE:
        _CACHE.update(modules())
    return _CACHE


def graph() -> dict[str, set[str]]:
    # the package's own lazy table (ftlab/__init__.py) is a front door, not a dependency of the modules
    return {name: ftlab_imports(tree, name) - {"ftlab"} for name, tree in modules_cache().items()
            if name != "ftlab"}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def longest_functions(n: int = 5) -> list[tuple[int, str]]:
    rows = []
    for name, tree in modules_cache().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(rows, reverse=True)[:n]


def test_no_import_cycles():
    found = cycles(graph())
    assert found == [], f"import cycles (imports inside functions count): {found}"


def layers() -> dict[str, int]:
    """{module: layer index} from the table in ftlab/__init__.py's docstring (0 = core)."""
    doc = ast.get_docstring(modules_cache()["ftlab"])
    table = doc.split("tests/test_layers.py checks every edge against this table):\n", 1)[1]
    out = {}
    for depth, line in enumerate(ln for ln in table.splitlines() if ln.strip()):
        for name in line[12:].split():
            out[f"ftlab.{name}"] = depth
    return out


def test_every_module_sits_in_a_layer():
    assert sorted(layers()) == sorted(graph())


def test_imports_point_down_the_layers():
    depth = layers()
    upward = [f"{a} -> {b}" for a, targets in graph().items() for b in targets if depth[b] > depth[a]]
    assert upward == [], f"imports from a higher layer (see the table in ftlab/__init__.py): {upward}"


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_count():
    tree = ast.parse("def f():\n    from ftlab.config import TrainConfig\n")
    assert ftlab_imports(tree, "ftlab.x") == {"ftlab.config"}


if __name__ == "__main__":
    edges = graph()
    for name in sorted(edges):
        print(f"{name:<24} -> {', '.join(sorted(m.removeprefix('ftlab.') for m in edges[name])) or '-'}")
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} import edges, cycles: {cycles(edges) or 'none'}")
    print("longest functions:", ", ".join(f"{name} ({n} lines)" for n, name in longest_functions()))
    sys.exit(1 if cycles(edges) else 0)
