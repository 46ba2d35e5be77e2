"""The registry from a checkpoint's config.json to its family's converter.

A family is data plus one ``convert`` function; adding one is a new module that calls
``register`` and one import line in ``weights_conversion/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from transformer_lens import HookedTransformerConfig

from .checkpoint import CheckpointError, Weights, read_config

__all__ = ["Family", "ConvertedModel", "FAMILIES", "register", "family_for_config", "convert_checkpoint", "UnknownFamilyError"]


class UnknownFamilyError(CheckpointError):
    """config.json names a model type no family handles."""


@dataclass
class ConvertedModel:
    """What a family's converter returns: everything HookedVideoLLM needs.

    Attributes:
        cfg: the language backbone's HookedTransformerConfig.
        state_dict: TransformerLens weights of the backbone.
        rope: (sin, cos) tables ``[n_ctx, d_head]`` to write into every block, or None.
        vision: the vision front end (``videolens.vision.VisionFrontEnd``).
        placeholder_id: token id of the video placeholder in the prompt.
        template: name of the prompt template (``videolens.prompts.TEMPLATES``).
        family: the family's name.
        config: the checkpoint's config.json.
    """

    cfg: HookedTransformerConfig
    state_dict: Dict[str, torch.Tensor]
    rope: Optional[Tuple[torch.Tensor, torch.Tensor]]
    vision: torch.nn.Module
    placeholder_id: int
    template: str
    family: str
    config: dict


@dataclass(frozen=True)
class Family:
    """A checkpoint family: the config.json ``model_type`` values it claims and its converter
    ``convert(path, config, weights, dtype, device) -> ConvertedModel``."""

    name: str
    model_types: Tuple[str, ...]
    convert: Callable[[Path, dict, Weights, torch.dtype, str], ConvertedModel]
    description: str = ""


FAMILIES: Dict[str, Family] = {}


def register(family: Family) -> Family:
    for mt in family.model_types:
        if mt in FAMILIES:
            raise ValueError(f"model type {mt!r} is already registered to {FAMILIES[mt].name}")
        FAMILIES[mt] = family
    return family


def family_for_config(config: dict, path: Path | str = "checkpoint") -> Family:
    """The family that handles this config.json.

    Raises:
        UnknownFamilyError: no ``model_type``, or one no family handles (lists the supported ones).
    """
    mt = config.get("model_type")
    if mt not in FAMILIES:
        raise UnknownFamilyError(
            f"{path}/config.json: model_type {mt!r} is not a supported VideoLLM family; supported: "
            + ", ".join(f"{k} ({FAMILIES[k].name})" for k in sorted(FAMILIES))
        )
    return FAMILIES[mt]


def convert_checkpoint(path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> ConvertedModel:
    """Read a checkpoint folder and convert it with its family's converter.

    Every tensor in the checkpoint must be used: leftovers raise ``UnexpectedWeightsError`` and
    absent tensors ``MissingWeightsError``, both naming the keys.
    """
    path = Path(path)
    config = read_config(path)
    family = family_for_config(config, path)
    weights = Weights.from_folder(path)
    converted = family.convert(path, config, weights, dtype, device)
    weights.check_all_used()
    return converted
