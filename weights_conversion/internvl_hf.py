"""InternVL in transformers' own format (model_type "internvl": the InternVL3 / InternVL3.5 "-hf"
checkpoints, ``InternVLForConditionalGeneration``): InternViT -> pixel shuffle -> projector, and a
Qwen2, Qwen3 (with QK-norm) or Llama text model.

Layout: config.json ``model_type "internvl"`` with ``vision_config`` (``internvl_vision``),
``text_config``, ``downsample_ratio`` 0.5, ``vision_feature_layer`` (-1),
``vision_feature_select_strategy`` ("default": the CLS token dropped), ``image_token_id``; tensors
``vision_tower.*``, ``multi_modal_projector.{layer_norm,linear_1,linear_2}`` and
``language_model.{model,lm_head}.*`` (or transformers 5's ``model.*`` / ``lm_head`` names).

The front end is the ``internvl_chat`` one's (``weights_conversion.internvl``): transformers'
``InternVLVisionModel``, the 2x2 pixel shuffle, the projector (transformers' own
``InternVLMultiModalProjector``). Frames as transformers' InternVL video processor sizes them: resized
to the tower's square size (bicubic, no crop), ImageNet mean/std. Each frame is its own
``Frame{i}: <img>...</img>`` block (template ``internvl_mvbench``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from videolens.frontend.vision import FramePreprocessor, PixelShuffle, VisionFrontEnd

from .checkpoint import CheckpointError, Weights, require_sections
from .pllava import KEY_RENAMES  # transformers 5's names -> the classic ones
from .registry import ConvertedModel, Family, register
from .text_backbones import convert_text_weights, hooked_config, rope_tables
from .vision_towers import build_vision_tower, feature_layer

__all__ = ["convert", "FAMILY", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _projector(config: dict, weights: Weights, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import InternVLConfig
    from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector

    with torch.device("meta"):
        projector = InternVLMultiModalProjector(InternVLConfig.from_dict(config))
    weights.load_module(projector, "multi_modal_projector.")
    return projector.to(dtype).eval()


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    where = f"{path}/config.json"
    require_sections(path, config, ("vision_config", "text_config"))
    if float(config.get("downsample_ratio", 0.5)) != 0.5:
        raise CheckpointError(f"{where}: downsample_ratio {config['downsample_ratio']} is not supported (0.5)")
    strategy = config.get("vision_feature_select_strategy", "default")
    if strategy != "default":
        raise CheckpointError(f"{where}: vision_feature_select_strategy {strategy!r} is not supported (default)")
    weights.rename(KEY_RENAMES)
    text_config = dict(config["text_config"])
    text_config.setdefault("model_type", "qwen2")
    if "language_model.lm_head.weight" not in weights.tensors and config.get("tie_word_embeddings"):
        text_config["tie_word_embeddings"] = True  # the top-level flag ties the head to the embedding
    cfg = hooked_config(text_config, dtype, device)  # an unsupported LLM names the supported backbones
    state_dict = convert_text_weights(weights, "language_model.", text_config, cfg)
    vision_config = dict(config["vision_config"])
    vision_config.setdefault("model_type", "internvl_vision")
    tower = build_vision_tower(vision_config, weights, "vision_tower.", dtype)
    size = int(tower.config.image_size[0] if isinstance(tower.config.image_size, (list, tuple))
               else tower.config.image_size)
    preprocess = FramePreprocessor(size, IMAGENET_MEAN, IMAGENET_STD, options={
        "size": {"height": size, "width": size}, "do_center_crop": False, "resample": 3})
    vision = VisionFrontEnd(
        tower,
        {"pixel_shuffle": PixelShuffle(0.5), "projector": _projector(config, weights, dtype)},
        feature_layer=feature_layer(config, -1, where),
        drop_cls=True,
        preprocess=preprocess,
    )
    placeholder = config.get("image_token_id")
    if placeholder is None:
        raise CheckpointError(f"{where}: no image_token_id")
    return ConvertedModel(
        cfg=cfg,
        state_dict=state_dict,
        rope=rope_tables(text_config, cfg.n_ctx, dtype),
        vision=vision,
        placeholder_id=int(placeholder),
        template=config.get("prompt_template", "internvl_mvbench"),
        family="internvl_hf",
        config=config,
    )


FAMILY = register(Family("internvl_hf", ("internvl",), convert,
                         "InternVL in transformers' format (InternVL3 / 3.5 -hf): InternViT, pixel shuffle, "
                         "projector, Qwen2 / Qwen3 / Llama"))
