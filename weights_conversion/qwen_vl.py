"""Qwen2.5-VL and Qwen2-VL checkpoints with video (model_type "qwen2_5_vl", "qwen2_vl"), both key
layouts: the released one
(``visual.*``, ``model.{embed_tokens,layers,norm}.*``, ``lm_head``, text fields at the top level,
``rope_scaling {"type": "mrope", "mrope_section": ...}``) and transformers 5's (``model.visual.*``,
``model.language_model.*``, ``lm_head``, ``text_config``).

Vision: transformers' ``Qwen2_5_VisionTransformerPretrainedModel`` (windowed and full attention,
2-D RoPE, the merger MLP into the text width) or ``Qwen2VisionTransformerPretrainedModel`` (full
attention); frames resized by ``smart_resize`` and paired in time
(``videolens.frontend.qwen_vl``). Text: Qwen2 in HookedTransformer with the 3-D multimodal RoPE written per
input into the rotary tables (``videolens.frontend.qwen_vl.MRope``). Qwen2.5-VL's temporal position ids
advance by ``tokens_per_second`` x seconds per slot, Qwen2-VL's by 1 a slot (``QWEN_VL_SPECS``).

Qwen3-VL (model_type "qwen3_vl", transformers' ``Qwen3VLForConditionalGeneration`` layout,
``model.visual.*`` / ``model.language_model.*`` / ``lm_head``): ``Qwen3VLVisionModel`` (patch 16,
learned position grid) with its DeepStack mergers, a Qwen3 text model (QK-norm) with interleaved
M-RoPE (``mrope_interleaved``), frames sized for the whole clip (``Qwen3VLPreprocessor``), one
``<t seconds><|vision_start|>...<|vision_end|>`` block per temporal slot (template ``qwen3_vl``),
and the DeepStack levels added after the first blocks (``videolens.hooked.deepstack``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from videolens.frontend.qwen_vl import MRope, Qwen3VLFrontEnd, Qwen3VLPreprocessor, QwenVLFrontEnd, QwenVLPreprocessor

from dataclasses import dataclass

from videolens.registry import Registry

from .checkpoint import CheckpointError, Weights, materialize_meta_buffers, read_json_object
from .options import FamilyOption, parse_positive_int, positive_int_value
from .registry import ConvertedModel, Family, register
from .text_backbones import convert_text_weights, hooked_config, rope_tables

__all__ = ["convert", "FAMILY", "RENAMES", "QWEN_VL_SPECS", "QwenVLSpec"]

RENAMES = [(r"^model\.visual\.", "vision."), (r"^model\.language_model\.", "text.model."), (r"^visual\.", "vision."),
           (r"^model\.", "text.model."), (r"^lm_head\.", "text.lm_head.")]
"""Both layouts -> ``vision.*`` (the transformers vision model's names) and ``text.{model,lm_head}.*``."""

_TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "hidden_act", "tie_word_embeddings",
              "rope_theta", "rope_parameters", "rope_scaling", "attention_dropout")


def _text_config(config: dict, where: str, model_type: str = "qwen2"):
    """(a ``model_type`` text config dict with plain RoPE, the mrope sections, rope theta, whether
    the sections are interleaved)."""
    src = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    text = {k: src[k] for k in _TEXT_KEYS if k in src}
    rope = dict(text.pop("rope_parameters", None) or {})
    rope.update(text.pop("rope_scaling", None) or {})
    theta = float(rope.get("rope_theta", text.pop("rope_theta", 1e6)))
    text.pop("rope_theta", None)
    sections = rope.get("mrope_section")
    if not sections:
        raise CheckpointError(f"{where}: no mrope_section in the rope settings (rope_scaling / rope_parameters)")
    text.update(model_type=model_type, rope_parameters={"rope_type": "default", "rope_theta": theta})
    return text, [int(s) for s in sections], theta, bool(rope.get("mrope_interleaved", False))


@dataclass(frozen=True)
class QwenVLSpec:
    """One Qwen-VL generation: its transformers module (``transformers.models.<module>``), config,
    vision model and vision rotary classes, whether temporal ids scale with time, its text backbone,
    its frame preprocessor, whether its vision model feeds DeepStack levels, and its prompt template."""

    module: str
    config: str
    vision: str
    rotary: str
    timed: bool
    text: str = "qwen2"
    preprocessor: type = QwenVLPreprocessor
    deepstack: bool = False
    template: str = "qwen2_5_vl"


QWEN_VL_SPECS: Registry[QwenVLSpec] = Registry("Qwen-VL generation", {
    "qwen2_5_vl": QwenVLSpec("qwen2_5_vl", "Qwen2_5_VLConfig", "Qwen2_5_VisionTransformerPretrainedModel",
                             "Qwen2_5_VLVisionRotaryEmbedding", timed=True),
    "qwen2_vl": QwenVLSpec("qwen2_vl", "Qwen2VLConfig", "Qwen2VisionTransformerPretrainedModel",
                           "Qwen2VLVisionRotaryEmbedding", timed=False),
    "qwen3_vl": QwenVLSpec("qwen3_vl", "Qwen3VLConfig", "Qwen3VLVisionModel", "Qwen3VLVisionRotaryEmbedding",
                           timed=False, text="qwen3", preprocessor=Qwen3VLPreprocessor, deepstack=True,
                           template="qwen3_vl"),
})


def _vision(spec: QwenVLSpec, config: dict, weights: Weights, dtype: torch.dtype):
    import importlib

    import transformers

    mod = importlib.import_module(f"transformers.models.{spec.module}.modeling_{spec.module}")
    vc = getattr(transformers, spec.config)(vision_config=config["vision_config"]).vision_config
    vc._attn_implementation = "sdpa"
    with torch.device("meta"):
        tower = getattr(mod, spec.vision)(vc)
    weights.load_module(tower, "vision.")
    tower.rotary_pos_emb = getattr(mod, spec.rotary)(vc)  # derived frequencies, built for real
    materialize_meta_buffers(tower, "vision tower")
    return tower.to(dtype).eval()


def _preprocessor(path: Path, vc, config: dict, cls: type = QwenVLPreprocessor) -> QwenVLPreprocessor:
    """The video preprocessor: pixel bounds (and Qwen3-VL's per-frame cap and mean / std) from
    ``video_preprocessor_config.json``, unless the ``min_pixels`` / ``max_pixels`` options (written
    into ``config``) override them."""
    kw = {}
    f = Path(path) / "video_preprocessor_config.json"
    defaults = cls()
    if f.is_file():
        cfg = read_json_object(f)
        size = cfg.get("size") or {}
        kw = {"min_pixels": int(cfg.get("min_pixels") or size.get("shortest_edge") or defaults.min_pixels),
              "max_pixels": int(cfg.get("max_pixels") or size.get("longest_edge") or defaults.max_pixels)}
        if cls is not QwenVLPreprocessor:
            kw.update({k: cfg[k] for k in ("cap_pixels_per_frame", "max_video_tokens") if cfg.get(k) is not None})
            kw.update({k: tuple(float(x) for x in cfg[f"image_{k}"]) for k in ("mean", "std") if cfg.get(f"image_{k}")})
    else:
        import warnings

        warnings.warn(f"{f} is absent: frames are sized with transformers' video-processor defaults (pixel bounds "
                      f"128x28x28 to 768x28x28); patch and merge sizes come from config.json's vision_config",
                      stacklevel=2)
    kw.update({k: int(config[k]) for k in ("min_pixels", "max_pixels") if config.get(k) is not None})
    if kw.get("min_pixels", 0) > kw.get("max_pixels", float("inf")):
        raise CheckpointError(f"{path}: min_pixels {kw['min_pixels']} is larger than max_pixels {kw['max_pixels']}")
    return cls(patch_size=int(vc.patch_size), merge_size=int(vc.spatial_merge_size),
               temporal_patch_size=int(vc.temporal_patch_size), **kw)


def convert(path: Path, config: dict, weights: Weights, dtype: torch.dtype, device: str) -> ConvertedModel:
    where = f"{path}/config.json"
    spec = QWEN_VL_SPECS[config["model_type"]]
    if not isinstance(config.get("vision_config"), dict):
        raise CheckpointError(f"{where}: a {config['model_type']} config needs 'vision_config'")
    text_config, sections, theta, interleaved = _text_config(config, where, spec.text)
    weights.rename(RENAMES)
    cfg = hooked_config(text_config, dtype, device)
    if sum(sections) * 2 != cfg.d_head:
        raise CheckpointError(f"{where}: mrope_section {sections} does not cover head_dim {cfg.d_head} (sum x 2)")
    state_dict = convert_text_weights(weights, "text.", text_config, cfg)
    tower = _vision(spec, config, weights, dtype)
    preprocess = _preprocessor(path, tower.config, config, spec.preprocessor)
    if spec.deepstack:
        levels = len(tower.config.deepstack_visual_indexes)
        if levels > cfg.n_layers:
            raise CheckpointError(f"{where}: {levels} DeepStack levels (vision_config.deepstack_visual_indexes) for a "
                                  f"language model of {cfg.n_layers} layers")
        vision = Qwen3VLFrontEnd(tower, preprocess, levels)
    else:
        vision = QwenVLFrontEnd(tower, preprocess, tower.config.tokens_per_second if spec.timed else None)
    plain = rope_tables(text_config, cfg.n_ctx, dtype)
    inv_freq = 1.0 / (theta ** (torch.arange(0, cfg.d_head, 2, dtype=torch.float) / cfg.d_head))
    placeholder = config.get("video_token_id", (config.get("text_config") or {}).get("video_token_id"))
    if placeholder is None:
        raise CheckpointError(f"{where}: no video_token_id")
    return ConvertedModel(
        cfg=cfg,
        state_dict=state_dict,
        rope=plain,
        vision=vision,
        placeholder_id=int(placeholder),
        template=config.get("prompt_template", spec.template),
        family=config["model_type"],
        config=config,
        mrope=MRope(inv_freq, sections, plain, interleaved=interleaved),
    )


MIN_PIXELS = FamilyOption("min_pixels", positive_int_value, parse_positive_int,
                          "smallest frame area in pixels after resizing (the video processor's min_pixels; default: "
                          "video_preprocessor_config.json's)")
MAX_PIXELS = FamilyOption("max_pixels", positive_int_value, parse_positive_int,
                          "largest frame area in pixels after resizing (the video processor's max_pixels; sets the "
                          "video-token count; default: video_preprocessor_config.json's)")

FAMILY = register(Family("qwen_vl", ("qwen2_5_vl", "qwen2_vl", "qwen3_vl"), convert,
                         "Qwen2.5-VL, Qwen2-VL and Qwen3-VL (ViT, 2x2 merger, Qwen2 / Qwen3 with 3-D M-RoPE in the "
                         "hooked attention; Qwen3-VL's DeepStack levels through blocks.{l}.hook_deepstack)",
                         options=(MIN_PIXELS, MAX_PIXELS)))
