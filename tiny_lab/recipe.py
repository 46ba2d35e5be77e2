"""Recipes as data: the phases a checkpoint ran, read from a JSON file (``recipes/*.json``).

A recipe is ``{"description", "phases": [{"name", "note", "config": {TrainConfig field: value}}]}``;
each phase starts from the previous phase's ``state.pt`` where its ``init_from`` says ``{prev}``.
``recipes/tiny-videollm.json`` is the bundled checkpoint's (its last phase's config is the one in
the model card; tests/test_train_tiny.py checks that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple, Union

from .config import RECIPE_FILE, TrainConfig, phase_config


def load_recipe(path: Union[str, Path] = RECIPE_FILE) -> List[dict]:
    """The phases of a recipe file, each checked to build a ``TrainConfig``.

    Raises:
        ValueError: the file is not a recipe, or a phase has an unknown field or a bad value (named).
    """
    path = Path(path)
    doc = json.loads(path.read_text())
    phases = doc.get("phases") if isinstance(doc, dict) else None
    if not isinstance(phases, list) or not all(isinstance(ph, dict) and "name" in ph for ph in phases):
        raise ValueError(f"{path}: expected {{\"phases\": [{{\"name\": ..., \"config\": {{...}}}}, ...]}}")
    for ph in phases:
        try:
            phase_config(ph, "prev.pt")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: phase {ph['name']}: {exc}") from None
    return phases


def recipe_configs(path: Union[str, Path] = RECIPE_FILE, root: Union[str, Path] = "runs") -> List[Tuple[str, TrainConfig]]:
    """``(name, TrainConfig)`` of every phase run under ``root/<name>``, each from the previous phase's
    ``state.pt``."""
    out, prev = [], ""
    for ph in load_recipe(path):
        out.append((ph["name"], phase_config(ph, prev)))
        prev = str(Path(root) / ph["name"] / "state.pt")
    return out
