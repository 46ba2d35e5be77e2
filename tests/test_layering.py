"""The library's folders are its layers: every module imports only its own layer and the layers
below it, imports inside functions included; nothing in the library imports the test fixtures."""

from __future__ import annotations

import re

import pytest

from test_architecture import ROOT, _imports, _module_name

LAYERS = [
    ("shared", r"videolens\.(_moved|errors|registry|layers|stats|fingerprint|_tl_compat|bundled|argtypes)"),
    ("sources", r"videolens\.sources(\..*)?"),
    ("prompting", r"videolens\.prompting(\..*)?"),
    ("frontend", r"videolens\.frontend(\..*)?"),
    ("weights_conversion", r"weights_conversion(\..*)?"),
    ("hooked", r"videolens\.hooked(\..*)?"),
    ("running", r"videolens\.running(\..*)?"),
    ("analyses", r"videolens\.(knockout|lens|pathways|patching|saes)(\..*)?"),
    ("presentation", r"videolens\.(plots|viz)(\..*)?"),
    ("command line", r"videolens\.(commands(\..*)?|cli|__main__)"),
    ("test fixtures", r"videolens\.testing"),
]
"""Layers from the bottom up; a module may import its own layer and those listed before it."""


def layer_of(module: str) -> int:
    """Index of a module's layer in ``LAYERS``.

    Raises:
        KeyError: a module no layer claims (a new module must be placed in a layer).
    """
    for i, (_, pattern) in enumerate(LAYERS):
        if re.fullmatch(pattern, module):
            return i
    raise KeyError(module)


def _canonical(target: str, modules: set) -> str:
    """An imported name -> the library module it loads (old paths of moved modules mapped)."""
    from videolens._moved import MOVED

    head, _, rest = target.partition(".")
    if head == "videolens" and rest.split(".")[0] in MOVED:
        first = rest.split(".")[0]
        target = "videolens." + MOVED[first] + rest[len(first):]
    while target and target not in modules:
        target = target.rsplit(".", 1)[0] if "." in target else ""
    return target


UPWARD_ALLOWED = {
    ("videolens.patching.activation", "videolens.plots.patching"):
        "PatchResult.plot(), a convenience as pandas' DataFrame.plot (imported when called); the figure "
        "code lives in plots/",
}
"""The one upward import, each with its reason."""


def violations(edges) -> list:
    """``(importer, imported)`` pairs that import upwards (``edges``: module -> imported modules), or
    import the ``videolens`` facade, which imports every layer."""
    out = []
    for src, targets in edges.items():
        for t in targets:
            if t == "videolens" or (layer_of(t) > layer_of(src) and (src, t) not in UPWARD_ALLOWED):
                out.append((src, t))
    return sorted(out)


def _library_edges() -> dict:
    files = [p for pkg in ("videolens", "weights_conversion") for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    edges = {}
    for p in files:
        name = _module_name(p)
        if name == "videolens":  # the package's __init__: the public facade over every layer
            continue
        deps = {_canonical(t, modules) for t in _imports(p)} - {"", name}
        edges[name] = {d for d in deps if not name.startswith(d + ".") or d == "videolens"}
    return edges


def test_every_module_has_a_layer_and_imports_only_downwards():
    edges = _library_edges()
    assert len(edges) > 90
    for name in edges:
        layer_of(name)  # a KeyError names a module placed in no layer
    assert violations(edges) == []


def test_nothing_in_the_library_imports_the_test_fixtures_or_the_facade():
    edges = _library_edges()
    users = sorted(src for src, targets in edges.items() for t in targets if t in ("videolens.testing", "videolens"))
    assert users == []


def test_weights_conversion_imports_only_the_front_end_and_what_is_below_it():
    edges = _library_edges()
    allowed = {n for n, _ in LAYERS[:5]}
    for src, targets in edges.items():
        if src.startswith("weights_conversion"):
            assert {LAYERS[layer_of(t)][0] for t in targets} <= allowed, src


def test_the_layer_check_finds_an_upward_import():
    assert violations({"videolens.sources.video": {"videolens.hooked.model"}}) == [
        ("videolens.sources.video", "videolens.hooked.model")]
    assert violations({"videolens.hooked.model": {"videolens.sources.video", "videolens.errors"}}) == []
    assert violations({"weights_conversion.pllava": {"videolens.running.records"}}) != []
    with pytest.raises(KeyError):
        layer_of("videolens.somewhere_new")
