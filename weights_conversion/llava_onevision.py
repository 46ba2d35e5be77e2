"""transformers' ``LlavaOnevisionForConditionalGeneration`` checkpoints (model_type "llava_onevision")
with video (transformers' LlavaOnevision).

Video path: each frame resized to the tower's square size (384 px, bicubic, no crop, CLIP mean/std)
-> SigLIP hidden state ``vision_feature_layer`` (-1), every patch kept (``"full"``: 27x27 = 729) ->
projector MLP -> bilinear resize of each frame's grid to ``ceil(h/2) x ceil(w/2)`` (14x14) -> frames
concatenated -> ONE ``image_newline`` after the whole video (layout span ``video_newline``); Qwen2
text backbone. Both key layouts load: transformers 5's (``model.vision_tower.*``,
``model.language_model.*``, ``lm_head``) and the classic one (``vision_tower.*``,
``language_model.model.*``, ``language_model.lm_head``).

Frames are resized with PIL (transformers' video processor resizes with torchvision: pixel values
differ by resampling rounding, not by method).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Tuple

import torch
from einops import rearrange
from jaxtyping import Float
from torch import nn

from videolens.frontend.vision import CLIP_MEAN, CLIP_STD, FramePreprocessor, VisionFrontEnd

from .checkpoint import CheckpointError, Weights, require_sections
from .pllava import KEY_RENAMES  # LLaVA's transformers 5 names -> the classic ones
from .registry import ConvertedModel, Family, register, video_token_id
from .text_backbones import convert_text_weights, hooked_config, rope_tables
from .vision_towers import build_vision_tower, feature_layer, load_projector

__all__ = ["convert", "FAMILY", "BilinearHalf"]



class BilinearHalf(nn.Module):
    """Each frame's grid resized to ``ceil(r/2) x ceil(c/2)`` by bilinear interpolation
    (LLaVA-OneVision's ``apply_pooling``)."""

    def forward(self, grid: Float[torch.Tensor, "T r c d"]) -> Float[torch.Tensor, "T h w d"]:
        x = rearrange(grid, "t r c d -> t d r c")
        x = nn.functional.interpolate(x, size=(math.ceil(x.shape[2] / 2), math.ceil(x.shape[3] / 2)), mode="bilinear")
        return rearrange(x, "t d r c -> t r c d")

    def out_grid(self, grid: Tuple[int, int, int]) -> Tuple[int, int, int]:
        t, r, c = grid
        return t, math.ceil(r / 2), math.ceil(c / 2)


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    where = f"{path}/config.json"
    require_sections(path, config, ("vision_config", "text_config"))
    weights.rename(KEY_RENAMES)
    text_config = dict(config["text_config"])
    text_config.setdefault("model_type", "qwen2")
    cfg = hooked_config(text_config, dtype, device)
    state_dict = convert_text_weights(weights, "language_model.", text_config, cfg)
    vision_config = dict(config["vision_config"])
    vision_config.setdefault("model_type", "siglip_vision_model")
    tower = build_vision_tower(vision_config, weights, "vision_tower.", dtype)
    layer = feature_layer(config, -1, where)
    strategy = config.get("vision_feature_select_strategy", "full")
    if strategy not in ("full", "default"):
        raise CheckpointError(f"{where}: vision_feature_select_strategy {strategy!r} is not supported (full, default)")
    projector = load_projector(config, tower.config.hidden_size, cfg.d_model, weights, dtype)
    size = int(tower.config.image_size)
    preprocess = FramePreprocessor(size, CLIP_MEAN, CLIP_STD, options={
        "size": {"height": size, "width": size}, "do_center_crop": False, "resample": 3})
    vision = VisionFrontEnd(
        tower,
        {"projector": projector, "pool": BilinearHalf()},
        feature_layer=layer,
        drop_cls=strategy == "default",
        preprocess=preprocess,
        extra={"image_newline": weights.take("image_newline").to(dtype)},
        trailing="image_newline",
    )
    return ConvertedModel(
        cfg=cfg,
        state_dict=state_dict,
        rope=rope_tables(text_config, cfg.n_ctx, dtype),
        vision=vision,
        placeholder_id=video_token_id(config, where),
        template=config.get("prompt_template", "llava_onevision"),
        family="llava_onevision",
        config=config,
    )


FAMILY = register(Family("llava_onevision", ("llava_onevision",), convert,
                         "transformers LLaVA-OneVision (SigLIP, projector, bilinear 2x, one newline after the video, "
                         "Qwen2)"))
