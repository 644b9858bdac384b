"""The shape of the house (docs/architecture.md), checked from the source text.

* no import circle between the modules of ``clevr_remv`` (imports inside functions count too:
  a lazy import hides a circle, it does not remove it);
* no module over 600 lines;
* the Blender side (``blender_scripts/``) reaches only the pure ``clevr_remv.scene`` modules,
  and none of pyoidn, h5py, click or jinja2, directly or through them;
* ``clevr_remv`` never imports bpy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "clevr_remv"
MAX_LINES = 600
HEAVY = {"pyoidn", "h5py", "click", "jinja2", "torch", "PIL"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path, name: str) -> set[str]:
    """Every module name that ``path`` imports, absolute, anywhere in the file."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            for a in node.names:  # `from pkg import module`
                if f"{mod}.{a.name}" in MODULES:
                    out.add(f"{mod}.{a.name}")
    return out


def _internal(mods: set[str]) -> set[str]:
    """The clevr_remv modules among ``mods``, with the packages whose __init__ each import runs."""
    out = set()
    for m in mods:
        if m == "clevr_remv" or m.startswith("clevr_remv."):
            parts = m.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in MODULES:
                    out.add(prefix)
    return out


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


# A module's own ancestor packages are not edges: they are imported before the module is.
GRAPH = {name: _internal(_imports(path, name)) - {name} - _ancestors(name) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_graph() -> dict[str, set[str]]:
    def pkg(m):
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else m

    g: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        # a package's __init__ importing its own modules is not an edge between packages;
        # the top-level package's __init__ (version constants) is imported by everyone
        g.setdefault(pkg(m), set()).update(pkg(d) for d in deps if pkg(d) != pkg(m) and d != "clevr_remv")
    return g


def test_the_walk_finds_the_package():
    # guards the checks below against walking an empty or wrong tree
    assert {"clevr_remv.scene.lightfield", "clevr_remv.read.reader", "clevr_remv.cli"} <= set(MODULES)
    assert "clevr_remv.scene.catalogue" in GRAPH["clevr_remv.scene.layout"]


def test_no_import_circle_between_modules():
    assert _cycles(GRAPH) == []


def test_no_import_circle_between_packages():
    assert _cycles(_package_graph()) == []


def test_the_circle_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_600_lines(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines"


def _reach(start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(GRAPH.get(m, ()))
    return seen


def test_blender_side_reaches_only_the_scene_package():
    direct: set[str] = set()
    third_party: set[str] = set()
    for script in (ROOT / "blender_scripts").glob("*.py"):
        mods = _imports(script, script.stem)
        direct |= _internal(mods)
        third_party |= {m.split(".")[0] for m in mods}
    reached = _reach(direct)
    assert direct, "blender_scripts/ imports nothing from clevr_remv: the walk is broken"
    outside = {m for m in reached if m not in ("clevr_remv", "clevr_remv.scene")
               and not m.startswith("clevr_remv.scene.")}
    assert outside == set()
    for m in reached:
        third_party |= {i.split(".")[0] for i in _imports(MODULES[m], m)}
    assert third_party & HEAVY == set()


def test_clevr_remv_never_imports_bpy():
    users = [m for m, p in MODULES.items() if {"bpy", "mathutils"} & {i.split(".")[0] for i in _imports(p, m)}]
    assert users == []


# The floors of docs/architecture.md, top to bottom: a package imports only floors below its own.
FLOORS = [("__main__", "data", "metrics"), ("cli",), ("tools",), ("farm",), ("read",), ("run",), ("gpu",),
          ("store",), ("render",), ("language",), ("config",), ("scene",), ("errors", "progress", "resources")]


def test_every_import_goes_down_the_floors_of_the_architecture_doc():
    floor = {f"clevr_remv.{name}": i for i, names in enumerate(FLOORS) for name in names}
    graph = _package_graph()
    assert set(graph) - {"clevr_remv"} == set(floor), "a package is missing from FLOORS and docs/architecture.md"
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() if a in floor
                    for b in deps if floor[b] <= floor[a])
    assert upward == []
