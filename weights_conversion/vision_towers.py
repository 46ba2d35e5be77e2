"""Building a transformers vision tower from a vision_config dict and checkpoint tensors."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from videolens.frontend.vision import FramePreprocessor, PllavaPreResize, Projector

from .checkpoint import CheckpointError, Weights, materialize_meta_buffers, read_json_object

__all__ = ["build_vision_tower", "build_preprocessor", "feature_layer", "load_projector"]


def build_vision_tower(vision_config: dict, weights: Weights, prefix: str, dtype: torch.dtype) -> torch.nn.Module:
    """A transformers vision model (CLIP, SigLIP, ... by ``model_type``) loaded from ``prefix``.

    Accepts both the classic layout (``prefix + "vision_model.embeddings..."``) and the flat one
    transformers 5 writes (``prefix + "embeddings..."``).
    """
    from transformers import AutoConfig, AutoModel

    d = dict(vision_config)
    model_type = d.pop("model_type", "clip_vision_model")
    cfg = AutoConfig.for_model(model_type, **d)
    cfg._attn_implementation = "sdpa"  # as transformers' default; the same numbers as eager up to rounding
    with torch.device("meta"):  # no random init of weights the checkpoint replaces (a CLIP-L: seconds)
        tower = AutoModel.from_config(cfg)
    own = next(iter(tower.state_dict()))
    if not own.startswith("vision_model.") and weights.has_prefix(prefix + "vision_model."):
        weights.rename([("^" + re.escape(prefix + "vision_model."), prefix)])
    weights.load_module(tower, prefix)  # assigns the checkpoint's tensors
    materialize_meta_buffers(tower, "vision tower")
    return tower.to(dtype).eval()


def build_preprocessor(path: Path, image_size: int, pre_resize: bool = False) -> FramePreprocessor:
    """Frame preprocessing from ``preprocessor_config.json`` when the checkpoint has one, else
    CLIP's defaults at ``image_size``; ``pre_resize`` adds the official PLLaVA pre-resize
    (``videolens.frontend.vision.PllavaPreResize``)."""
    f = Path(path) / "preprocessor_config.json"
    if f.exists():
        return FramePreprocessor.from_processor_config(read_json_object(f), image_size, pre_resize)
    return FramePreprocessor(image_size, pre_resize=PllavaPreResize(image_size) if pre_resize else None)


def feature_layer(config: dict, default: int, where: str) -> int:
    """``vision_feature_layer`` of a LLaVA-style config (``default`` when absent).

    Raises:
        CheckpointError: a list of layers (concatenated features are not supported).
    """
    layer = config.get("vision_feature_layer", default)
    if not isinstance(layer, int):
        raise CheckpointError(f"{where}: several vision_feature_layer values {layer} are not supported")
    return layer


def load_projector(config: dict, d_vision: int, d_model: int, weights: Weights, dtype: torch.dtype,
                   bias: bool | None = None, prefix: str = "multi_modal_projector.") -> Projector:
    """LLaVA's two-layer projector (``projector_hidden_act``) with the tensors under ``prefix``;
    ``bias`` defaults to the config's ``multimodal_projector_bias`` (True)."""
    if bias is None:
        bias = config.get("multimodal_projector_bias", True)
    projector = Projector(d_vision, d_model, config.get("projector_hidden_act", "gelu"), bias)
    weights.load_module(projector, prefix)
    return projector.to(dtype)
