"""PLLaVA-style LLaVA-NeXT-Video-FT checkpoints (the paper's main models, as released and loaded by the official code).

Which configs: the official ``PllavaConfig`` saves ``model_type "llava"`` with ``architectures
["PllavaForConditionalGeneration"]`` (the released LLaVA-NeXT-7B/13B-Video-FT); a plain
``LlavaForConditionalGeneration`` image checkpoint and a ``llava_next`` one (the paper's ImageLLM
baseline, llava-v1.6-vicuna) load the same way, as the official ``load_pllava`` does: projector, then
AdaptiveAvgPool3d to ``pooling_shape``; ``image_newline`` is kept with the front end and unused; no
anyres tiles. ``model_type "pllava"`` is the project's own files (the bundled tiny model).
``pooling_shape`` absent from the config means the paper's (8, 12, 12) (the official scripts always
pass ``--pooling_shape 8-12-12``). Frames go through the official PllavaProcessor pre-resize first.

Layout: config.json with ``vision_config``, ``text_config``,
``pooling_shape``, ``vision_feature_layer``, ``vision_feature_select_strategy``,
``image_token_index``, ``projector_hidden_act``; tensors ``vision_tower.*``,
``multi_modal_projector.linear_1/linear_2.*``, ``language_model.model.*``,
``language_model.lm_head.*``. Video path: CLIP hidden state -2 without CLS -> projector MLP
-> AdaptiveAvgPool3d to ``pooling_shape`` (e.g. 8x12x12 = 1152 tokens, no newline tokens).
"""

from __future__ import annotations

from pathlib import Path

import torch

from videolens.frontend.vision import AdaptivePool3d, VisionFrontEnd

from .checkpoint import CheckpointError, Weights, require_sections
from .options import FamilyOption, int_triple_value, parse_int_triple
from .registry import ConvertedModel, Family, register
from .text_backbones import convert_text_weights, hooked_config, rope_tables
from .vision_towers import build_preprocessor, build_vision_tower, load_projector


PAPER_POOLING_SHAPE = (8, 12, 12)

# transformers 5 in-memory names of LLaVA / LLaVA-NeXT -> the classic on-disk names
KEY_RENAMES = [
    (r"^model\.vision_tower\.", "vision_tower."),
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
    (r"^model\.language_model\.", "language_model.model."),
    (r"^model\.image_newline$", "image_newline"),
    (r"^lm_head\.", "language_model.lm_head."),
]


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    require_sections(path, config, ("vision_config", "text_config"))
    weights.rename(KEY_RENAMES)
    pooling_shape = tuple(config.get("pooling_shape") or PAPER_POOLING_SHAPE)
    if len(pooling_shape) != 3:
        raise CheckpointError(f"{path}/config.json: pooling_shape must be (frames, rows, cols), got {pooling_shape}")
    if config.get("pooling_method", "avg") != "avg":
        raise CheckpointError(f"{path}/config.json: pooling_method {config['pooling_method']!r} is not supported (avg)")
    text_config = config["text_config"]
    cfg = hooked_config(text_config, dtype, device)
    state_dict = convert_text_weights(weights, "language_model.", text_config, cfg)
    tower = build_vision_tower(config["vision_config"], weights, "vision_tower.", dtype)
    bias = "multi_modal_projector.linear_1.bias" in weights.tensors
    projector = load_projector(config, tower.config.hidden_size, cfg.d_model, weights, dtype, bias=bias)
    newline = weights.take_optional("image_newline")  # LLaVA-NeXT image checkpoints: kept, unused for videos
    vision = VisionFrontEnd(
        tower,
        {"projector": projector, "pool": AdaptivePool3d(pooling_shape)},
        feature_layer=config.get("vision_feature_layer", -2),
        drop_cls=config.get("vision_feature_select_strategy", "default") == "default",
        preprocess=build_preprocessor(path, tower.config.image_size, pre_resize=True),
        extra={"image_newline": newline.to(dtype)} if newline is not None else None,
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


POOLING_SHAPE = FamilyOption(
    "pooling_shape", int_triple_value, parse_int_triple,
    "3-D pooling shape after the projector, overriding the checkpoint's, e.g. 8-12-12 (the official scripts' "
    "--pooling_shape; also sets the frame count unless --num-frames is given)",
    metavar="T-H-W", frames=lambda shape: shape[0])
"""``(frames, rows, cols)`` of the pooling; absent from config.json it is the paper's (8, 12, 12)."""

FAMILY = register(Family("pllava", ("pllava",), convert, "PLLaVA-style LLaVA-NeXT-Video-FT (pool after projector)",
                         options=(POOLING_SHAPE,)))
OFFICIAL = register(
    Family(
        "pllava",
        ("llava",),
        convert,
        "official PLLaVA classes (LLaVA-NeXT-Video-FT) and LLaVA image checkpoints, loaded the PLLaVA way",
        architectures=("PllavaForConditionalGeneration", "LlavaForConditionalGeneration"),
        options=(POOLING_SHAPE,),
    )
)
IMAGE_LLM = register(
    Family(
        "pllava",
        ("llava_next",),
        convert,
        "LLaVA-NeXT image checkpoints (the paper's ImageLLM baseline), loaded the PLLaVA way",
        architectures=("LlavaNextForConditionalGeneration",),
        options=(POOLING_SHAPE,),
    )
)
