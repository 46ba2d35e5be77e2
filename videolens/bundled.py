"""The bundled tiny VideoLLM, by name: ``vl.bundled_model_path()`` and
``HookedVideoLLM.from_pretrained("tiny-videollm")``. (The untrained stand-in ``videolens demo`` uses
when an install has no bundled model is ``weights_conversion.writers.write_demo_standin``.)"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED_NAME", "bundled_model_path", "bundled_sae_path"]

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



def bundled_sae_path() -> Path:
    """Folder of the SAE shipped beside the bundled model (``videolens/assets/tiny-videollm-sae``: SAELens'
    ``cfg.json`` and weights, plus the ``run.json`` and ``training.json`` of ``videolens sae train``
    that made it; ``sae_lens.SAE.load_from_disk(str(path))``).

    Raises:
        FileNotFoundError: this install has no bundled SAE.
    """
    p = Path(__file__).resolve().parent / "assets" / f"{BUNDLED_NAME}-sae"
    if not (p / "cfg.json").exists():
        raise FileNotFoundError(f"the bundled SAE is missing at {p}")
    return p
