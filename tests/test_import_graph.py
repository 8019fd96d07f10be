"""No import cycles among edgecomp's own modules (edgecomp.*, with edgecomp.runtime and edgecomp.exporters).

The graph is read from the source with `ast`, not by importing: an edge A -> B for every `import B`
/ `from B import x` (x a module or a name in B) in A, where B is one of edgecomp's modules. Two
graphs are checked:

* module-level imports (those run when A is imported, class bodies and `try:` blocks included):
  no cycle at all;
* every import, function-level ones too (run when the function is called): no cycle except the
  ones listed in KNOWN_FUNCTION_LEVEL_CYCLES, which are in modules this test's author does not own
  and are left to their owners. The list must match exactly, so a new cycle fails, and so does a
  listed one that was removed (then delete it from the list).

Not counted: imports under `if TYPE_CHECKING:` (never run), and the parent packages that importing
A.B.C implicitly runs (A, A.B), which would make every package __init__ that re-exports its
submodules look cyclic.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT_PACKAGES = ("edgecomp", "edgecomp.runtime", "edgecomp.exporters")  # pyproject's package-dir roots

# data.fit imports finetune.evaluate's eval_mode inside a function, and finetune.evaluate imports
# data.fit at module level (fix: eval_mode to a module both can import, e.g. edgecomp.data.fit itself).
KNOWN_FUNCTION_LEVEL_CYCLES: set = set()


def package_modules(roots: dict[str, Path]) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (source file, is a package)} for every .py file under each root folder."""
    modules = {}
    for package, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join((package, *(parts[:-1] if is_package else parts)))
            modules[name] = (path, is_package)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, *, function_level: bool):
    """(module, names) of each import statement run at import time (and in functions if asked)."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend((n, in_function) for n in child.orelse)
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if inner and not function_level:
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append((child, inner))


def import_graph(modules: dict[str, tuple[Path, bool]], *, function_level: bool) -> dict[str, set[str]]:
    """{module: the modules of `modules` it imports} (see the module docstring for what counts)."""

    def resolve(name: str) -> str | None:  # the innermost known module a dotted name lies in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")), function_level=function_level):
            if isinstance(node, ast.Import):
                targets.update(resolve(alias.name) for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                package = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{package}.{base}" if base else package
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name`, mod itself
            targets.update(resolve(f"{base}.{alias.name}") for alias in node.names)
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def modules():
    roots = {}
    for package in ROOT_PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
        roots[package] = Path(list(spec.submodule_search_locations)[0])
    found = package_modules(roots)
    assert len(found) > 50 and "edgecomp.pipeline.rounds" in found and "edgecomp.runtime.harness" in found
    return found


def test_no_cycle_among_module_level_imports(modules):
    assert cycles(import_graph(modules, function_level=False)) == set()


def test_function_level_imports_add_only_the_known_cycles(modules):
    graph = import_graph(modules, function_level=True)
    assert "edgecomp.pipeline.rounds" in graph["edgecomp.pipeline.export"]  # function-level edges are counted
    assert cycles(graph) == KNOWN_FUNCTION_LEVEL_CYCLES


def test_rounds_and_latency_table_import_one_way(modules):
    graph = import_graph(modules, function_level=True)
    assert "edgecomp.pipeline.latency_table" in graph["edgecomp.pipeline.rounds"]
    assert "edgecomp.pipeline.rounds" not in graph["edgecomp.pipeline.latency_table"]


def test_the_checker_finds_cycles_through_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
                              "def later():\n    from .sub.d import x\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "d.py").write_text("from ..a import name\n")
    found = package_modules({"pkg": pkg})
    assert cycles(import_graph(found, function_level=False)) == set()  # b -> c only under TYPE_CHECKING
    assert cycles(import_graph(found, function_level=True)) == {("pkg.a", "pkg.b", "pkg.sub.d")}
