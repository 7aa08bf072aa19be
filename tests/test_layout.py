"""The package's layout, read from the source with `ast`: imports run downhill (README, "Layout"), no module imports
itself back through others, few modules at the top, no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import modules of its own package and of packages in lower layers, never higher or
# beside it; the top-level modules (layer 0) import only each other. `cli` finds the commands by name at run time.
LAYERS = [
    {"__init__", "__main__", "cli", "errors", "sources", "kernels"},
    {"audio", "text", "loss"},
    {"model", "corpus", "runtime"},
    {"shards"},
    {"data"},
    {"training", "inference"},
    {"commands"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
MAX_TOP_MODULES = 8
MAX_LINES = 400


def package_files() -> dict[str, Path]:
    """Module name → file, for fastasr/ and kernels/ (installed as fastasr.kernels)."""
    files = {}
    for base, prefix in ((ROOT / "fastasr", ("fastasr",)), (ROOT / "kernels", ("fastasr", "kernels"))):
        for path in sorted(base.rglob("*.py")):
            parts = prefix + path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The fastasr modules `name` imports anywhere in its file (function-level imports too: a circle through a
    lazy import is still a circle)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def graph() -> dict[str, set[str]]:
    files = package_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def unit(module: str) -> str:
    """The layout unit of a module: its package under fastasr/, or the top-level module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_unit_has_a_layer():
    units = {unit(m) for m in package_files()}
    assert units <= set(LAYER), f"not placed in LAYERS: {sorted(units - set(LAYER))}"


def test_no_import_circle():
    assert cycles(graph()) == []


def test_imports_run_downhill():
    upward = []
    for a, targets in graph().items():
        for b in targets:
            ua, ub = unit(a), unit(b)
            if ua == ub:
                continue
            if LAYER[ua] == 0 and LAYER[ub] == 0:
                continue  # the shared top-level modules among themselves
            if LAYER[ub] >= LAYER[ua]:
                upward.append(f"{a} (layer {LAYER[ua]}) imports {b} (layer {LAYER[ub]})")
    assert upward == []


def test_the_checkers_see_a_circle_and_an_upward_import():
    # The checks above would pass on nothing: show them what they must catch.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    g = graph()
    assert "fastasr.data.loader" in g["fastasr.training.tokenizer"]  # an edge the layout allows (downhill)
    assert "fastasr.text.tokenizer" in g["fastasr.data.loader"]


def test_few_modules_at_the_top_and_none_too_long():
    top = [p.name for p in (ROOT / "fastasr").glob("*.py")]
    assert len(top) <= MAX_TOP_MODULES, sorted(top)
    long = {str(p.relative_to(ROOT)): n for p in package_files().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
