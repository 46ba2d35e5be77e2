"""PLLaVA-style LLaVA-NeXT-Video-FT checkpoints (the paper's main models; REFERENCE section 5).

Layout: config.json with ``model_type`` "pllava", ``vision_config``, ``text_config``,
``pooling_shape``, ``vision_feature_layer``, ``vision_feature_select_strategy``,
``image_token_index``, ``projector_hidden_act``; tensors ``vision_tower.*``,
``multi_modal_projector.linear_1/linear_2.*``, ``language_model.model.*``,
``language_model.lm_head.*``. Video path: CLIP hidden state -2 without CLS -> projector MLP
-> AdaptiveAvgPool3d to ``pooling_shape`` (e.g. 8x12x12 = 1152 tokens, no newline tokens).
"""

from __future__ import annotations

from pathlib import Path

import torch

from videolens.vision import AdaptivePool3d, Projector, VisionFrontEnd

from .checkpoint import CheckpointError, Weights
from .registry import ConvertedModel, Family, register
from .text_backbones import convert_text_weights, hooked_config, rope_tables
from .vision_towers import build_preprocessor, build_vision_tower


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    for key in ("vision_config", "text_config", "pooling_shape"):
        if key not in config:
            raise CheckpointError(f"{path}/config.json: a pllava config needs {key!r}")
    text_config = config["text_config"]
    cfg = hooked_config(text_config, dtype, device)
    state_dict = convert_text_weights(weights, "language_model.", text_config, cfg)
    tower = build_vision_tower(config["vision_config"], weights, "vision_tower.", dtype)
    bias = "multi_modal_projector.linear_1.bias" in weights.tensors
    projector = Projector(tower.config.hidden_size, cfg.d_model, config.get("projector_hidden_act", "gelu"), bias)
    weights.load_module(projector, "multi_modal_projector.")
    vision = VisionFrontEnd(
        tower,
        {"projector": projector.to(dtype), "pool": AdaptivePool3d(config["pooling_shape"])},
        feature_layer=config.get("vision_feature_layer", -2),
        drop_cls=config.get("vision_feature_select_strategy", "default") == "default",
        preprocess=build_preprocessor(path, tower.config.image_size),
    )
    return ConvertedModel(
        cfg=cfg,
        state_dict=state_dict,
        rope=rope_tables(text_config, cfg.n_ctx, dtype),
        vision=vision,
        placeholder_id=int(config.get("image_token_index", 32000)),
        template=config.get("prompt_template", "eval_mvbench_vicuna"),
        family="pllava",
        config=config,
    )


FAMILY = register(Family("pllava", ("pllava",), convert, "PLLaVA-style LLaVA-NeXT-Video-FT (pool after projector)"))
