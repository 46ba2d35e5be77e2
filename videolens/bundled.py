"""The bundled tiny VideoLLM, by name: ``vl.bundled_model_path()`` and
``HookedVideoLLM.from_pretrained("tiny-videollm")``."""

from __future__ import annotations

from pathlib import Path
from typing import Union

__all__ = ["BUNDLED_NAME", "bundled_model_path", "resolve_checkpoint"]

BUNDLED_NAME = "tiny-videollm"


def bundled_model_path() -> Path:
    """Folder of the bundled tiny VideoLLM shipped inside the package (``videolens/assets``).

    Raises:
        FileNotFoundError: this install has no bundled model.
    """
    p = Path(__file__).resolve().parent / "assets" / BUNDLED_NAME
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"the bundled model is missing at {p}; pass a checkpoint folder")
    return p


def resolve_checkpoint(path: Union[str, Path]) -> Path:
    """A local checkpoint folder for ``path``: the folder itself, or the bundled model for
    ``"tiny-videollm"``.

    Raises:
        FileNotFoundError: no such folder; for a Hugging Face hub id (``org/name``) the message says
            that hub download is not supported and a local folder is needed.
    """
    p = Path(path)
    if p.is_dir():
        return p
    if str(path) == BUNDLED_NAME:
        return bundled_model_path()
    text = str(path)
    if not p.is_absolute() and text.count("/") == 1 and not text.startswith((".", "~")):
        raise FileNotFoundError(f"checkpoint folder not found: {text} (it reads like a hub id; hub download is not "
                                "supported here: download it and pass the local folder)")
    raise FileNotFoundError(f"checkpoint folder not found: {text}")
