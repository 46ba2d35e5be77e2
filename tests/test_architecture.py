"""Structure checks: no import cycle inside the package, every library error derives from
VideolensError, every extension point is one Registry type (layers: tests/test_layering.py)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("videolens", "weights_conversion", "tiny_lab")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set:
    """Modules of this project a file imports, lazily inside functions too (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return out


def _graph() -> dict:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    names = {_module_name(p): p for p in files}
    graph = {}
    for n, p in names.items():
        deps = set()
        for t in _imports(p):
            while t and t not in names:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != n and not n.startswith(t + ".") and t != n.rsplit(".", 1)[0]:
                deps.add(t)
        graph[n] = deps
    return graph


def _find_cycles(graph: dict) -> list:
    """Import cycles of a ``module -> imported modules`` graph (depth-first search)."""
    state: dict = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return cycles


def test_no_import_cycle():
    graph = _graph()
    assert "videolens.viz.render" in graph and "videolens.viz.pooling" in graph["videolens.viz.render"]
    assert _find_cycles(graph) == []


def test_the_cycle_check_finds_cycles():
    assert _find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _find_cycles({"a": {"b"}, "b": set()}) == []


def test_every_library_error_is_a_videolens_error():
    import importlib

    from videolens.errors import VideolensError

    modules = [importlib.import_module(n) for n in sorted(_graph()) if not n.endswith("__main__")]
    found = []
    for m in modules:
        for _, cls in inspect.getmembers(m, inspect.isclass):
            if cls.__module__ == m.__name__ and issubclass(cls, Exception) and not issubclass(cls, Warning):
                found.append(cls)
                assert issubclass(cls, VideolensError), f"{cls.__module__}.{cls.__name__}"
    assert len(found) >= 10


def test_every_registry_is_one_registry_type():
    import importlib

    from videolens import edges, layout, prompts, synthetic
    from videolens.knockout import engine, targets
    from videolens.lens import core
    from videolens.pathways import spec
    from videolens.patching import activation
    from videolens.registry import Registry, UnknownNameError
    from weights_conversion import registry, text_backbones

    evaluate = importlib.import_module("videolens.pathways.evaluate")

    regs = [targets.TARGETS, engine.ENGINES, layout.GROUP_RESOLVERS, edges.RELATIONS, prompts.TEMPLATES,
            core.LENS_MODES, activation.ACTIVATIONS, evaluate.RANDOM_MATCH, spec.EDGE_TYPES, synthetic.TASKS,
            registry.FAMILIES, text_backbones.TEXT_BACKBONES]
    assert all(isinstance(r, Registry) and len(r) for r in regs)
    with pytest.raises(UnknownNameError, match="unknown knockout target 'nope'; known: cross-frame"):
        targets.TARGETS["nope"]
    r = Registry("thing", {"a": 1})
    assert r.register("b", 2) == 2 and sorted(r) == ["a", "b"]
    with pytest.raises(ValueError, match="a thing named 'a' exists"):
        r.register("a", 3)
    assert r.register("a", 3, overwrite=True) == 3
    with pytest.raises(KeyError):  # still a KeyError for callers that catch one
        r["zzz"]
