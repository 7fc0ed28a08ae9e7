"""The import structure of ``src/finecut``: no import cycles, and no import against the layer order of docs/design.md.

The layer table is read from docs/design.md (the table under "## Layers and modules" whose header starts with
``| rank | layer | modules``), so the document and this test cannot drift apart. A module may import modules of its own
layer or of lower layers (smaller rank); every module of the package must belong to a listed layer.

What counts as an import (found with :mod:`ast`, no module is executed):

* every ``import`` / ``from ... import`` statement anywhere in a module: at module level, inside functions (lazy
  imports) and under ``if TYPE_CHECKING:`` — a type annotation is a dependency of the design, even when Python does
  not execute it;
* every string constant that names a finecut module, ``"finecut.x.y"`` or ``"finecut.x.y:attribute"`` (what
  ``importlib.import_module`` and the lazy registries import).

``from package import name`` counts as importing ``package.name`` when that is a module, else ``package``. The parent
packages Python initialises on the way are not counted (a package ``__init__`` importing its own submodules is
normal).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "finecut"
DESIGN = ROOT / "docs" / "design.md"

_MODULE_STRING = re.compile(r"^finecut(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?$")


@dataclass(frozen=True)
class Layer:
    rank: int
    name: str
    units: tuple[str, ...]  # module or package names; "finecut" means the package's __init__ only


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    kind: str  # "import", "function-local import", "TYPE_CHECKING import", "string"


def read_layers(path: Path = DESIGN) -> list[Layer]:
    """The layer table of docs/design.md."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^\|\s*rank\s*\|\s*layer\s*\|\s*modules\s*\|", line)),
                 None)
    assert start is not None, f"{path}: no '| rank | layer | modules |' table"
    layers = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        units = tuple(re.findall(r"`(finecut(?:\.[\w.]+)?)`", cells[2]))
        assert units, f"{path}: layer row without modules: {line}"
        layers.append(Layer(int(cells[0]), cells[1], units))
    return layers


def all_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _existing(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def _function_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for sub in ast.walk(node):
                if hasattr(sub, "lineno"):
                    lines.add(sub.lineno)
    return lines


def module_edges(modules: dict[str, Path]) -> list[Edge]:
    """Every import of a finecut module by a finecut module (see the module docstring for what counts)."""
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        typing_only, local = _type_checking_lines(tree), _function_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def kind(line: int) -> str:
            return ("TYPE_CHECKING import" if line in typing_only else
                    "function-local import" if line in local else "import")

        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
                target = _existing(node.value.partition(":")[0], modules)
                if target is not None and target != "finecut":
                    edges.append(Edge(name, target, node.lineno, "string"))
                continue
            for target in targets:
                if target == "finecut" or target.startswith("finecut."):
                    resolved = _existing(target, modules)
                    if resolved is not None and resolved != name:
                        edges.append(Edge(name, resolved, node.lineno, kind(node.lineno)))
    return edges


def unit_of(module: str, layers: list[Layer]) -> tuple[str, Layer] | None:
    """The listed unit (and its layer) a module belongs to: the longest listed name equal to it or, for a listed
    package other than the root, a prefix of it."""
    best: tuple[str, Layer] | None = None
    for layer in layers:
        for unit in layer.units:
            if module == unit or (unit != "finecut" and module.startswith(unit + ".")):
                if best is None or len(unit) > len(best[0]):
                    best = (unit, layer)
    return best


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def layers() -> list[Layer]:
    return read_layers()


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return all_modules()


@pytest.fixture(scope="module")
def edges(modules: dict[str, Path]) -> list[Edge]:
    return module_edges(modules)


def test_the_layer_table_is_well_formed(layers: list[Layer], modules: dict[str, Path]) -> None:
    assert [layer.rank for layer in layers] == sorted(layer.rank for layer in layers), "ranks must ascend"
    listed = [unit for layer in layers for unit in layer.units]
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert not [u for u in listed if u not in modules], "the table lists modules that do not exist"
    assert not [m for m in modules if unit_of(m, layers) is None], "modules missing from docs/design.md's layer table"


def test_no_import_goes_up_the_layers(layers: list[Layer], edges: list[Edge]) -> None:
    violations = []
    for edge in edges:
        source, target = unit_of(edge.source, layers), unit_of(edge.target, layers)
        assert source is not None and target is not None
        if target[1].rank > source[1].rank:
            violations.append(f"{edge.source}:{edge.line} ({source[1].name}) -> {edge.target} ({target[1].name}), "
                              f"{edge.kind}")
    assert not violations, "imports against the layer order of docs/design.md:\n" + "\n".join(violations)


def test_no_import_cycles_between_modules(edges: list[Edge]) -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.source].add(edge.target)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles between modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_between_packages(layers: list[Layer], edges: list[Edge]) -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        source, target = unit_of(edge.source, layers), unit_of(edge.target, layers)
        assert source is not None and target is not None
        if source[0] != target[0]:
            graph[source[0]].add(target[0])
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles between packages: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checks_catch_what_they_should() -> None:
    """The walker on a small synthetic tree: a TYPE_CHECKING import and a lazy string import both count."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from finecut.predictor import Prediction\n"
        "def f():\n    import finecut.pipelines.common\n    return 'finecut.engines.grabcut:GrabCutEngine'\n"
    )
    tree = ast.parse(source)
    assert 3 in _type_checking_lines(tree) and 5 in _function_lines(tree)
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _MODULE_STRING.match("finecut.engines.grabcut:GrabCutEngine")
    assert not _MODULE_STRING.match("see finecut.engines for details")
