"""Checkpoint families -> (HookedTransformerConfig, TransformerLens weights, vision front end).

Supported families are registered by importing their modules below; ``FAMILIES`` maps a
config.json ``model_type`` to its family.
"""

from .checkpoint import CheckpointError, MissingWeightsError, UnexpectedWeightsError, Weights
from .registry import FAMILIES, ConvertedModel, Family, UnknownFamilyError, convert_checkpoint, family_for_config, register
from . import pllava, llava_next_video, llava_onevision, internvl, internvl_hf, qwen_vl, videollama3  # noqa: F401  (registers the families)

__all__ = [
    "CheckpointError",
    "MissingWeightsError",
    "UnexpectedWeightsError",
    "UnknownFamilyError",
    "Weights",
    "FAMILIES",
    "ConvertedModel",
    "Family",
    "convert_checkpoint",
    "family_for_config",
    "register",
]
