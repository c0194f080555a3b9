"""The import graph of adaptlib: no cycles, and every layer imports only from the ones below.

Layers, bottom to top: ``losses``, ``kernels`` and ``representations`` (with the shared helpers ``_checks``,
``_streams``, ``labels``), ``methods``, ``models`` and ``backbones`` (pretrained networks a
model is built from), ``trainer``, then ``compare``, ``studies``,
``validation``, ``distributed`` and ``datasets`` on top of the trainer, and ``cli`` last.
Imports are read with :mod:`ast` (also those inside functions, which Python resolves lazily),
so no module is executed.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1] / "adaptlib"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> Dict[str, Set[str]]:
    """``{module: {adaptlib modules it imports}}``; ``from pkg import name`` counts as an
    import of ``pkg.name`` when that is a module, else of ``pkg``."""
    mods = _modules()
    graph: Dict[str, Set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                if not t.startswith("adaptlib"):
                    continue
                while t and t not in mods:  # ``import adaptlib.x.y`` of a name inside a module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _is_init_edge(a: str, b: str) -> bool:
    """A package's ``__init__`` importing its own submodules, or a module importing a name
    from its enclosing package's ``__init__``: not a design cycle between files (Python runs
    the package first), so the edge to a parent package is left out of the cycle check."""
    return a.startswith(b + ".")


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if _is_init_edge(v, w):
                continue
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


GRAPH = import_graph()


def test_graph_sees_known_edges():
    assert "adaptlib.losses.mmd" in GRAPH["adaptlib.losses.modules"]
    assert "adaptlib.methods.base" in GRAPH["adaptlib.methods.dann"]
    assert "adaptlib.kernels" in GRAPH["adaptlib.losses.mmd"]


def test_no_import_cycles():
    assert find_cycles(GRAPH) == []


def _layer_of(mod: str, prefixes: Dict[str, str]) -> str:
    for prefix, layer in prefixes.items():
        if mod == prefix or mod.startswith(prefix + "."):
            return layer
    return ""


FORBIDDEN = {
    # importer layer: layers it must not import from
    "losses": ["methods", "trainer", "compare", "studies", "cli", "models"],
    "kernels": ["losses", "methods", "trainer", "compare", "studies", "cli", "models"],
    # closed-form representations (mSDA): stateless functions of tensors, like the losses
    "representations": ["methods", "trainer", "compare", "studies", "cli", "models", "datasets"],
    "methods": ["trainer", "compare", "studies", "cli"],
    "backbones": ["losses", "kernels", "methods", "trainer", "compare", "studies", "cli", "datasets", "validation",
                  "estimator"],
    "trainer": ["compare", "studies", "cli", "estimator"],
    "estimator": ["compare", "studies", "cli"],
    "compare": ["studies", "cli"],
    "studies": ["cli"],
}
LAYERS = {f"adaptlib.{name}": name for name in FORBIDDEN}
LAYERS.update({"adaptlib.cli": "cli", "adaptlib.datasets": "datasets", "adaptlib.validation": "validation"})


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    bad = []
    for mod, deps in GRAPH.items():
        if _layer_of(mod, LAYERS) != layer:
            continue
        for dep in deps:
            if _layer_of(dep, LAYERS) in FORBIDDEN[layer]:
                bad.append(f"{mod} -> {dep}")
    assert bad == []
