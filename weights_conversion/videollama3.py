"""VideoLLaMA3 checkpoints (the paper's VideoLLaMA3-7B), in both on-disk formats, through one
rename table each into one set of names (VideoLLaMA3's released code):

- the original (remote code, ``model_type "videollama3_qwen2"``): Qwen2 fields at the top level,
  ``vision_encoder_config`` inline, tensors ``model.vision_encoder.*``, ``model.mm_projector.readout.{0,2}.*``,
  ``model.{embed_tokens,layers,norm}.*`` and ``lm_head`` (tied to the embeddings when absent);
- transformers' (``model_type "video_llama_3"``): ``text_config`` / ``vision_config``, tensors
  ``model.vision_model.*``, ``model.projector.readout.{0,2}.*``, ``model.language_model.*``, ``lm_head``.

The vision tower is transformers' ``VideoLlama3VisionModel`` (SigLIP-NaViT, axial 2-D RoPE,
attention within each frame, bilinear 2x2 merge), the projector ``Linear -> GELU -> Linear``, the
text model Qwen2 (QKV bias, rope theta 1e6, grouped KV heads) in HookedTransformer. Frames come from
VideoLLaMA3's own sampler (``videolens.sources.video.videollama3_frames``) and are resized to the
visual-token budget (``videolens.frontend.navit.resize_for_budget``); the prompt is the official chat template
(``videollama3``), whose token groups count the timestamp text inside the video span.

Token compression (the processor drops merged tokens that barely change from the previous frame)
is off, as the paper runs it; asking for it raises.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from videolens.frontend.navit import PAPER_MAX_VISUAL_TOKENS, NaViTFrontEnd, NaViTPreprocessor

from .checkpoint import CheckpointError, Weights, materialize_meta_buffers, read_json_object
from .options import FamilyOption, parse_positive_int, positive_int_value
from .registry import ConvertedModel, Family, register
from .text_backbones import convert_text_weights, hooked_config, rope_tables

__all__ = ["convert", "FAMILY", "RENAMES", "IMAGE_TOKEN_ID"]

IMAGE_TOKEN_ID = 151665  # `<image>`, added after Qwen2.5's vocabulary (official videollama3/train.py)

RENAMES = {
    "videollama3_qwen2": [(r"^model\.vision_encoder\.", "vision."), (r"^model\.mm_projector\.readout\.", "projector."),
                          (r"^model\.", "text.model."), (r"^lm_head\.", "text.lm_head.")],
    "video_llama_3": [(r"^model\.vision_model\.", "vision."), (r"^model\.projector\.readout\.", "projector."),
                      (r"^model\.language_model\.", "text.model."), (r"^lm_head\.", "text.lm_head.")],
}
"""Per format: regex renames of the on-disk keys to ``vision.*`` (VideoLlama3VisionModel names),
``projector.{0,2}.*`` and ``text.{model,lm_head}.*`` (a Qwen2ForCausalLM)."""

_NOT_TEXT = ("vision_encoder", "vision_encoder_config", "mm_projector_type", "mm_attn_implementation", "mm_hidden_size",
             "use_token_compression", "image_token_index", "architectures", "model_type", "auto_map",
             "transformers_version", "torch_dtype", "max_visual_tokens", "token_compression", "pooling_shape")


def _configs(config: dict, where: str):
    """(text config dict, vision config dict, placeholder id) of either format."""
    if config["model_type"] == "video_llama_3":
        for key in ("text_config", "vision_config"):
            if not isinstance(config.get(key), dict):
                raise CheckpointError(f"{where}: a video_llama_3 config needs {key!r}")
        text = dict(config["text_config"])
        text.setdefault("model_type", "qwen2")
        placeholder = config.get("video_token_id") or config.get("image_token_id")
        return text, dict(config["vision_config"]), int(placeholder)
    vision = config.get("vision_encoder_config")
    if not isinstance(vision, dict):
        raise CheckpointError(f"{where}: vision_encoder_config must be given inline (vision_encoder is "
                              f"{config.get('vision_encoder')!r}); the released VideoLLaMA3 checkpoints carry it")
    projector = config.get("mm_projector_type", "mlp2x_gelu")
    if projector != "mlp2x_gelu":
        raise CheckpointError(f"{where}: mm_projector_type {projector!r} is not supported (mlp2x_gelu)")
    text = {k: v for k, v in config.items() if k not in _NOT_TEXT and not (k == "rope_scaling" and v is None)}
    text["model_type"] = "qwen2"
    return text, dict(vision), int(config.get("image_token_index") or IMAGE_TOKEN_ID)


def build_navit(vision_config: dict, weights: Weights, prefix: str, dtype: torch.dtype) -> nn.Module:
    """transformers' ``VideoLlama3VisionModel`` holding the tensors under ``prefix``."""
    from transformers import VideoLlama3VisionConfig, VideoLlama3VisionModel

    keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
            "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")
    cfg = VideoLlama3VisionConfig(**{k: vision_config[k] for k in keep if k in vision_config})
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        tower = VideoLlama3VisionModel(cfg)
    weights.load_module(tower, prefix)
    from transformers.models.video_llama_3.modeling_video_llama_3 import VideoLlama3VisionRotaryEmbedding

    tower.rotary_pos_emb = VideoLlama3VisionRotaryEmbedding(cfg)  # derived frequencies, built for real
    materialize_meta_buffers(tower, "vision tower")
    return tower.to(dtype).eval()


def _preprocessor(path: Path, patch_size: int, max_tokens: int) -> NaViTPreprocessor:
    f = Path(path) / "preprocessor_config.json"
    cfg = read_json_object(f) if f.is_file() else {}
    return NaViTPreprocessor(patch_size=int(cfg.get("patch_size", patch_size)), merge_size=2,
                             min_tokens=int(cfg.get("min_tokens", 16)), max_tokens=int(max_tokens),
                             mean=tuple(cfg.get("image_mean", (0.5, 0.5, 0.5))),
                             std=tuple(cfg.get("image_std", (0.5, 0.5, 0.5))), resample=int(cfg.get("resample", 3)))


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    where = f"{path}/config.json"
    if config.get("token_compression"):
        raise CheckpointError(f"{where}: token compression (dropping merged tokens that barely change between "
                              "frames) is not supported; the paper runs VideoLLaMA3 without it")
    max_tokens = config.get("max_visual_tokens")
    max_tokens = PAPER_MAX_VISUAL_TOKENS if max_tokens is None else max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise CheckpointError(f"{where}: max_visual_tokens must be a positive integer, got {max_tokens!r}")
    text_config, vision_config, placeholder = _configs(config, where)
    weights.rename(RENAMES[config["model_type"]])
    cfg = hooked_config(text_config, dtype, device)
    state_dict = convert_text_weights(weights, "text.", text_config, cfg)
    tower = build_navit(vision_config, weights, "vision.", dtype)
    d_vis = tower.config.hidden_size
    projector = nn.Sequential(nn.Linear(d_vis, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model))
    weights.load_module(projector, "projector.")
    vision = NaViTFrontEnd(tower, projector.to(dtype),
                           _preprocessor(path, int(vision_config.get("patch_size", 14)), max_tokens))
    return ConvertedModel(
        cfg=cfg,
        state_dict=state_dict,
        rope=rope_tables(text_config, cfg.n_ctx, dtype),
        vision=vision,
        placeholder_id=placeholder,
        template=config.get("prompt_template", "videollama3"),
        family="videollama3",
        config=config,
        sampler="videollama3",
    )


MAX_VISUAL_TOKENS = FamilyOption(
    "max_visual_tokens", positive_int_value, parse_positive_int,
    "visual-token budget per clip, in merged tokens (the official --max_visual_tokens; default: the paper's "
    "8x12x12 = 1152)")

FAMILY = register(Family("videollama3", ("videollama3_qwen2", "video_llama_3"), convert,
                         "VideoLLaMA3 (original remote-code and transformers formats): SigLIP-NaViT, 2x2 merge, "
                         "projector, Qwen2.5", options=(MAX_VISUAL_TOKENS,)))
