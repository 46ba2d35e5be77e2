"""InternVL chat v1.5 checkpoints (Mini-InternVL-Chat-4B-V1-5 and the paper's
Mini-InternVL-4B-Video-FT): InternViT -> pixel shuffle -> mlp1, and a Phi-3 (LongRoPE) text model.

Layout (Mini-InternVL-Chat-4B-V1-5's released code): config.json ``model_type "internvl_chat"`` with ``vision_config``
(InternViT), ``llm_config`` (Phi-3 with the legacy ``{"type": "su"}`` rope scaling),
``select_layer`` -1, ``downsample_ratio`` 0.5, ``ps_version`` "v2", ``force_image_size`` 448; tensors
``vision_model.*`` (fused ``attn.qkv``, layer scale ``ls1``/``ls2``, no final norm), ``mlp1.{0,1,3}``
(LayerNorm, Linear, GELU, Linear) and ``language_model.{model,lm_head}.*``.

The vision tower is transformers' ``InternVLVisionModel`` (mean-pooling variant: no final norm)
holding the InternViT weights under its names, the fused qkv split in thirds. Each frame is one
448-pixel tile (short-edge resize, centre crop, ImageNet mean/std, as the official evaluation), its
32x32 patch grid shuffled to 16x16 tokens of 4x the width and projected by mlp1: 256 tokens a
frame, all frames behind ONE ``<img><IMG_CONTEXT></img>`` block (template ``eval_mvbench_phi3``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from videolens.frontend.vision import PixelShuffle, VisionFrontEnd

from .checkpoint import CheckpointError, Weights, require_sections
from .registry import ConvertedModel, Family, register
from .text_backbones import convert_text_weights, hooked_config, longrope_switch, rope_tables
from .vision_towers import build_preprocessor

__all__ = ["convert", "FAMILY", "build_internvit", "internvit_key_map"]

IMG_CONTEXT_ID = 32013  # `<IMG_CONTEXT>` in the Phi-3 InternVL tokenizer (official config_internvl.py)


def internvit_key_map(n_layers: int) -> dict:
    """InternViT's on-disk names (under ``vision_model.``) -> transformers' ``InternVLVisionModel``
    names (its released code); the fused ``attn.qkv`` maps to ``attention.qkv``, split in thirds
    into ``q_proj``/``k_proj``/``v_proj``."""
    out = {"embeddings.class_embedding": "embeddings.cls_token",
           "embeddings.position_embedding": "embeddings.position_embeddings",
           "embeddings.patch_embedding.weight": "embeddings.patch_embeddings.projection.weight",
           "embeddings.patch_embedding.bias": "embeddings.patch_embeddings.projection.bias"}
    pairs = [("attn.qkv", "attention.qkv"), ("attn.proj", "attention.projection_layer"), ("mlp.fc1", "mlp.fc1"),
             ("mlp.fc2", "mlp.fc2"), ("norm1", "layernorm_before"), ("norm2", "layernorm_after")]
    for i in range(n_layers):
        src, dst = f"encoder.layers.{i}.", f"encoder.layer.{i}."
        for a, b in pairs:
            for name in ("weight", "bias"):
                out[f"{src}{a}.{name}"] = f"{dst}{b}.{name}"
        out[f"{src}ls1"], out[f"{src}ls2"] = f"{dst}lambda_1", f"{dst}lambda_2"
    return out


def build_internvit(vision_config: dict, weights: Weights, prefix: str, dtype: torch.dtype) -> nn.Module:
    """transformers' ``InternVLVisionModel`` with the InternViT tensors under ``prefix`` (renamed,
    fused qkv split). Every tensor under ``prefix`` is taken or the load fails naming it.

    Raises:
        CheckpointError: an InternViT option transformers' model cannot hold (qk-norm with another
            norm, ...), or a tensor of the wrong shape.
    """
    from transformers import InternVLVisionConfig, InternVLVisionModel

    vc = vision_config
    if vc.get("qk_normalization"):
        raise CheckpointError("vision_config.qk_normalization (InternViT-6B) is not supported yet")
    cfg = InternVLVisionConfig(
        hidden_size=vc["hidden_size"], num_hidden_layers=vc["num_hidden_layers"],
        num_attention_heads=vc["num_attention_heads"], intermediate_size=vc["intermediate_size"],
        hidden_act=vc.get("hidden_act", "gelu"), norm_type=vc.get("norm_type", "layer_norm"),
        layer_norm_eps=vc.get("layer_norm_eps", 1e-6), image_size=vc.get("image_size", 448),
        patch_size=vc.get("patch_size", 14), attention_bias=bool(vc.get("qkv_bias", True)), use_qk_norm=False,
        use_mean_pooling=True)
    cfg._attn_implementation = "eager"
    with torch.device("meta"):  # no random init of weights the checkpoint replaces
        tower = InternVLVisionModel(cfg)
    sd = {}
    for ours, hf in internvit_key_map(cfg.num_hidden_layers).items():
        if ours.endswith(".qkv.weight") or ours.endswith(".qkv.bias"):
            if prefix + ours in weights.tensors or not ours.endswith("bias"):
                for name, part in zip(("q_proj", "k_proj", "v_proj"), weights.take(prefix + ours).chunk(3, dim=0)):
                    sd[hf.replace("qkv", name)] = part
        elif prefix + ours in weights.tensors or not ours.endswith(".bias"):
            sd[hf] = weights.take(prefix + ours)
    expected = tower.state_dict()
    for k, v in sd.items():
        if k not in expected or tuple(expected[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{weights.source}: InternViT tensor for {k} has shape {tuple(v.shape)}, expected "
                                  f"{tuple(expected[k].shape) if k in expected else 'no such tensor'}")
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise CheckpointError(f"{weights.source}: InternViT tensors missing for {missing[:10]}")
    tower.load_state_dict(sd, strict=True, assign=True)
    return tower.to(dtype).eval()


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    where = f"{path}/config.json"
    require_sections(path, config, ("vision_config", "llm_config"))
    if config.get("ps_version", "v2") != "v2":
        raise CheckpointError(f"{where}: ps_version {config['ps_version']!r} is not supported (v2)")
    if float(config.get("downsample_ratio", 0.5)) != 0.5:
        raise CheckpointError(f"{where}: downsample_ratio {config['downsample_ratio']} is not supported (0.5)")
    text_config = dict(config["llm_config"])
    cfg = hooked_config(text_config, dtype, device)  # an unsupported LLM names the supported backbones
    state_dict = convert_text_weights(weights, "language_model.", text_config, cfg)
    tower = build_internvit(config["vision_config"], weights, "vision_model.", dtype)
    d_vis = tower.config.hidden_size * 4  # after the 2x2 pixel shuffle
    mlp1 = nn.Sequential(nn.LayerNorm(d_vis), nn.Linear(d_vis, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model))
    weights.load_module(mlp1, "mlp1.")
    image_size = int(config.get("force_image_size") or tower.config.image_size[0])
    vision = VisionFrontEnd(
        tower,
        {"pixel_shuffle": PixelShuffle(float(config.get("downsample_ratio", 0.5))), "projector": mlp1.to(dtype)},
        feature_layer=int(config.get("select_layer", -1)),
        drop_cls=True,
        preprocess=build_preprocessor(path, image_size, pre_resize=True),
    )
    return ConvertedModel(
        cfg=cfg,
        state_dict=state_dict,
        rope=rope_tables(text_config, cfg.n_ctx, dtype),
        rope_long=longrope_switch(text_config, cfg.n_ctx, dtype),
        vision=vision,
        placeholder_id=int(config.get("img_context_token_id") or IMG_CONTEXT_ID),
        template=config.get("prompt_template", "eval_mvbench_phi3"),
        family="internvl",
        config=config,
    )


FAMILY = register(Family("internvl", ("internvl_chat",), convert,
                         "InternVL chat v1.5 (Mini-InternVL-Chat-4B-V1-5, Mini-InternVL-4B-Video-FT): InternViT, "
                         "pixel shuffle, mlp1, Phi-3 with LongRoPE"))
