"""Import paths of modules that moved into the layer folders keep working: ``videolens.video`` is
``videolens.sources.video`` (the same module object), ``videolens.runs`` is
``videolens.running.records``, and so on (``MOVED``). A meta-path finder answers the old names; code
written against them, and results pickled with them, load unchanged.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Dict

__all__ = ["MOVED", "install"]

MOVED: Dict[str, str] = {
    "video": "sources.video", "data": "sources.data", "formats": "sources.formats", "datasets": "sources.datasets",
    "hub": "sources.hub", "synthetic": "sources.synthetic", "scenes": "sources.scenes",
    "prompts": "prompting.prompts", "tokenizers": "prompting.tokenizers", "layout": "prompting.layout",
    "inputs": "prompting.inputs",
    "vision": "frontend.vision", "preprocess": "frontend.preprocess", "tensor_preprocess": "frontend.tensor_preprocess",
    "navit": "frontend.navit", "qwen_vl": "frontend.qwen_vl",
    "model": "hooked.model", "loading": "hooked.loading", "embed": "hooked.embed", "attention": "hooked.attention",
    "rope": "hooked.rope", "generation": "hooked.generation", "conventions": "hooked.conventions",
    "preparing": "hooked.preparing", "edges": "hooked.edges",
    "runner": "running.samples", "runs": "running.records", "distributed": "running.distributed",
    "corruptions": "patching.corruptions",
}
"""Old module name (under ``videolens.``) -> where it lives now."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``videolens.<old name>`` and hands back the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        if head == "videolens" and rest in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module("videolens." + MOVED[spec.name.split(".", 1)[1]])
        self._spec = module.__spec__  # importlib sets the alias spec on the module: put the real one back
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
