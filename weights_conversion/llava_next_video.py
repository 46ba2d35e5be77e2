"""transformers' ``LlavaNextVideoForConditionalGeneration`` checkpoints (model_type "llava_next_video").

Video path: CLIP hidden state ``vision_feature_layer`` without CLS -> per-frame 2x2 average pooling
(``spatial_pool_stride``) BEFORE the projector -> projector MLP; 12x12 tokens a frame for a 336 px
tower; no newline tokens for videos. Both the classic key layout (``language_model.model.*``) and
transformers 5's (``model.language_model.*``, ``lm_head.*``) load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from videolens.frontend.vision import SpatialPool2d, VisionFrontEnd

from .checkpoint import CheckpointError, Weights, require_sections
from .pllava import KEY_RENAMES as LLAVA_KEY_RENAMES
from .registry import ConvertedModel, Family, register, video_token_id
from .text_backbones import convert_text_weights, hooked_config, rope_tables
from .vision_towers import build_preprocessor, build_vision_tower, feature_layer, load_projector

# transformers 5 in-memory names -> the classic on-disk names: LLaVA's, and the video resampler's
KEY_RENAMES = [*LLAVA_KEY_RENAMES, (r"^model\.vision_resampler\.", "vision_resampler.")]


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    require_sections(path, config, ("vision_config", "text_config"))
    weights.rename(KEY_RENAMES)
    text_config = config["text_config"]
    cfg = hooked_config(text_config, dtype, device)
    state_dict = convert_text_weights(weights, "language_model.", text_config, cfg)
    tower = build_vision_tower(config["vision_config"], weights, "vision_tower.", dtype)
    layer = feature_layer(config, -2, f"{path}/config.json")
    mode = config.get("spatial_pool_mode", "average")
    if mode not in ("average", "max"):
        raise CheckpointError(f"{path}/config.json: spatial_pool_mode {mode!r} is not supported (average, max)")
    projector = load_projector(config, tower.config.hidden_size, cfg.d_model, weights, dtype)
    newline = weights.take_optional("image_newline")  # used by image inputs only; kept with the model
    vision = VisionFrontEnd(
        tower,
        {"pool": SpatialPool2d(config.get("spatial_pool_stride", 2), mode), "projector": projector},
        feature_layer=layer,
        drop_cls=config.get("vision_feature_select_strategy", "default") == "default",
        preprocess=build_preprocessor(path, tower.config.image_size),
        extra={"image_newline": newline.to(dtype)} if newline is not None else None,
    )
    return ConvertedModel(
        cfg=cfg,
        state_dict=state_dict,
        rope=rope_tables(text_config, cfg.n_ctx, dtype),
        vision=vision,
        placeholder_id=video_token_id(config, f"{path}/config.json"),
        template=config.get("prompt_template", "eval_mvbench_vicuna"),
        family="llava_next_video",
        config=config,
    )


FAMILY = register(
    Family("llava_next_video", ("llava_next_video",), convert, "transformers LlavaNextVideo (pool before projector)")
)
