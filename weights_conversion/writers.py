"""Writing checkpoints in a family's on-disk layout (tiny test models, the bundled model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import save_file

from videolens.frontend.vision import CLIP_MEAN, CLIP_STD

__all__ = ["save_pllava_checkpoint", "save_internvl_checkpoint", "save_videollama3_checkpoint", "pllava_tensors",
           "internvl_tensors", "videollama3_tensors", "TEXT_CONFIGS",
           "tiny_configs", "randomize_", "write_random_pllava", "write_demo_standin"]


def save_pllava_checkpoint(
    path,
    vision_tower,
    projector: torch.nn.Module,
    language_model,
    tokenizer,
    pooling_shape: Sequence[int],
    image_token_index: int,
    num_frames: int = 8,
    vision_feature_layer: int = -2,
    projector_hidden_act: str = "gelu",
    dtype: Optional[torch.dtype] = None,
    max_shard_bytes: Optional[int] = None,
    extra_config: Optional[dict] = None,
    weights: bool = True,
) -> Path:
    """Save a PLLaVA-style checkpoint (the released checkpoints' layout) to ``path``.

    Args:
        vision_tower: ``transformers.CLIPVisionModel``; written under ``vision_tower.vision_model.*``.
        projector: module with ``linear_1`` / ``linear_2``; written under ``multi_modal_projector.*``.
        language_model: ``transformers.LlamaForCausalLM``; written under ``language_model.*``.
        tokenizer: a fast tokenizer, saved beside the weights.
        pooling_shape: (frames, rows, cols) of the AdaptiveAvgPool3d after the projector.
        dtype: cast floating tensors (e.g. torch.float16) before writing.
        max_shard_bytes: split the weights into shards with an index file when set.
        extra_config: more config.json entries (e.g. ``prompt_template``, a model card path).
        weights: False writes every file but the weights (their tensors: ``pllava_tensors``; for
            ``from_pretrained(path, state_dict=...)``).

    Returns:
        the checkpoint folder.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if weights:
        tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().clone()
                   for k, v in pllava_tensors(vision_tower, projector, language_model).items()}
        _save_weights(path, tensors, max_shard_bytes)
    vcfg = vision_tower.config.to_dict()
    tcfg = language_model.config.to_dict()
    for d in (vcfg, tcfg):
        for k in ("architectures", "_name_or_path", "transformers_version", "dtype", "torch_dtype"):
            d.pop(k, None)
    grid = vision_tower.config.image_size // vision_tower.config.patch_size
    config = {
        "architectures": ["PllavaForConditionalGeneration"],
        "model_type": "pllava",
        "vision_config": vcfg,
        "text_config": tcfg,
        "pooling_shape": list(pooling_shape),
        "num_frames": num_frames,
        "frame_shape": [grid, grid],
        "vision_feature_layer": vision_feature_layer,
        "vision_feature_select_strategy": "default",
        "image_token_index": int(image_token_index),
        "projector_hidden_act": projector_hidden_act,
        "vocab_size": tcfg["vocab_size"],
    }
    config.update(extra_config or {})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    size = vision_tower.config.image_size
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "size": {"shortest_edge": size},
                "crop_size": {"height": size, "width": size},
                "do_resize": True,
                "do_center_crop": True,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": list(CLIP_MEAN),
                "image_std": list(CLIP_STD),
                "resample": 3,
            },
            indent=2,
        )
    )
    tokenizer.save_pretrained(str(path))
    return path


def _save_weights(path: Path, tensors: dict, max_shard_bytes: Optional[int]) -> None:
    """``model.safetensors``, or shards of at most ``max_shard_bytes`` with their index."""
    if max_shard_bytes is None:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    shards, cur, size = [], {}, 0
    for k in sorted(tensors):
        n = tensors[k].numel() * tensors[k].element_size()
        if cur and size + n > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = tensors[k]
        size += n
    shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def pllava_tensors(vision_tower, projector: torch.nn.Module, language_model) -> dict:
    """The tensors of a PLLaVA checkpoint under their on-disk names (``save_pllava_checkpoint``'s
    arguments), the modules' own tensors (not copied)."""
    tensors = {}
    for k, v in vision_tower.state_dict().items():
        if k.endswith("position_ids"):
            continue
        key = k if k.startswith("vision_model.") else f"vision_model.{k}"
        tensors[f"vision_tower.{key}"] = v
    for k, v in projector.state_dict().items():
        tensors[f"multi_modal_projector.{k}"] = v
    for k, v in language_model.state_dict().items():
        tensors[f"language_model.{k}"] = v
    return tensors


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def save_internvl_checkpoint(path, vision_tower, mlp1: torch.nn.Module, language_model, tokenizer, llm_config: dict,
                             img_context_token_id: int, num_frames: int = 8, extra_config: Optional[dict] = None,
                             weights: bool = True) -> Path:
    """Save an InternVL chat v1.5 checkpoint (Mini-InternVL-Chat-4B-V1-5's released code) to ``path``.

    Args:
        vision_tower: ``transformers.InternVLVisionModel``; written with InternViT's names under
            ``vision_model.*`` (q/k/v fused into ``attn.qkv``; ``weights_conversion.internvl.internvit_key_map``).
        mlp1: ``nn.Sequential(LayerNorm, Linear, GELU, Linear)``; written as ``mlp1.{0,1,3}``.
        language_model: a ``Phi3ForCausalLM`` (or another supported CausalLM); ``language_model.*``.
        llm_config: its config dict as the checkpoint stores it (e.g. the legacy ``{"type": "su"}``).
        img_context_token_id: the ``<IMG_CONTEXT>`` id.
        weights: False writes every file but the weights (their tensors: ``internvl_tensors``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vc = vision_tower.config
    if weights:
        save_file({k: v.contiguous().clone() for k, v in internvl_tensors(vision_tower, mlp1, language_model).items()},
                  str(path / "model.safetensors"))
    size = vc.image_size[0] if isinstance(vc.image_size, (list, tuple)) else vc.image_size
    patch = vc.patch_size[0] if isinstance(vc.patch_size, (list, tuple)) else vc.patch_size
    config = {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
        "ps_version": "v2", "select_layer": -1, "force_image_size": size, "img_context_token_id": img_context_token_id,
        "num_frames": num_frames, "template": "phi3-chat",
        "vision_config": {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b",
                          "hidden_size": vc.hidden_size, "num_hidden_layers": vc.num_hidden_layers,
                          "num_attention_heads": vc.num_attention_heads, "intermediate_size": vc.intermediate_size,
                          "image_size": size, "patch_size": patch, "qkv_bias": bool(vc.attention_bias),
                          "qk_normalization": False, "norm_type": vc.norm_type, "layer_norm_eps": vc.layer_norm_eps,
                          "hidden_act": vc.hidden_act},
        "llm_config": llm_config,
        **(extra_config or {}),
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "resample": 3,
        "rescale_factor": 1 / 255}, indent=2))
    tokenizer.save_pretrained(str(path))
    return path


def internvl_tensors(vision_tower, mlp1: torch.nn.Module, language_model) -> dict:
    """The tensors of an InternVL chat v1.5 checkpoint under their on-disk names
    (``save_internvl_checkpoint``'s arguments; InternViT's q/k/v fused into one new tensor, the
    others the modules' own)."""
    from .internvl import internvit_key_map

    hf = vision_tower.state_dict()
    tensors = {}
    for ours, name in internvit_key_map(vision_tower.config.num_hidden_layers).items():
        if ".qkv." in ours:
            parts = [hf.get(name.replace("qkv", p)) for p in ("q_proj", "k_proj", "v_proj")]
            if parts[0] is not None:
                tensors[f"vision_model.{ours}"] = torch.cat(parts, 0)
        elif name in hf:
            tensors[f"vision_model.{ours}"] = hf[name]
    for k, v in mlp1.state_dict().items():
        tensors[f"mlp1.{k}"] = v
    for k, v in language_model.state_dict().items():
        tensors[f"language_model.{k}"] = v
    return tensors


def videollama3_tensors(model) -> dict:
    """The tensors of a ``transformers.VideoLlama3ForConditionalGeneration`` under the original
    (remote-code) checkpoint's names, the model's own tensors (not copied)."""
    out = {}
    for k, v in model.state_dict().items():
        for a, b in (("model.vision_model.", "model.vision_encoder."), ("model.projector.readout.", "model.mm_projector.readout."),
                     ("model.language_model.", "model.")):
            if k.startswith(a):
                k = b + k[len(a):]
                break
        out[k] = v
    return out


def save_videollama3_checkpoint(path, model, tokenizer, fmt: str = "original", min_tokens: int = 16,
                                max_tokens: int = 16384, extra_config: Optional[dict] = None,
                                weights: bool = True) -> Path:
    """Save a ``transformers.VideoLlama3ForConditionalGeneration`` as a VideoLLaMA3 checkpoint.

    Args:
        fmt: ``"original"`` (the released remote-code layout, ``model_type "videollama3_qwen2"``:
            Qwen2 fields at the top level, ``vision_encoder_config`` inline, ``model.vision_encoder.*``,
            ``model.mm_projector.readout.*``, ``model.{embed_tokens,layers,norm}.*``, ``lm_head``) or
            ``"hf"`` (transformers' ``save_pretrained``, ``model_type "video_llama_3"``).
        min_tokens, max_tokens: the image processor's budget written to preprocessor_config.json.
        weights: False (original layout only) writes every file but the weights (their tensors:
            ``videollama3_tensors``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        if not weights:
            raise ValueError("weights=False needs the original layout (fmt='original')")
        model.save_pretrained(str(path))
        config = json.loads((path / "config.json").read_text())
    elif fmt == "original":
        if weights:
            save_file({k: v.contiguous().clone() for k, v in videollama3_tensors(model).items()},
                      str(path / "model.safetensors"))
        text = model.config.text_config.to_dict()
        vision = model.config.vision_config.to_dict()
        keep_v = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                  "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")
        keep_t = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "vocab_size", "max_position_embeddings", "rms_norm_eps", "hidden_act", "tie_word_embeddings")
        params = text.get("rope_parameters") or {}
        config = {"architectures": ["Videollama3Qwen2ForCausalLM"], "model_type": "videollama3_qwen2",
                  **{k: text[k] for k in keep_t if k in text}, "rope_theta": params.get("rope_theta", 1e6),
                  "rope_scaling": None, "image_token_index": model.config.video_token_id,
                  "mm_projector_type": "mlp2x_gelu", "use_token_compression": True, "vision_encoder": None,
                  "vision_encoder_config": {"model_type": "videollama3_vision_encoder",
                                            **{k: vision[k] for k in keep_v if k in vision}}}
    else:
        raise ValueError(f"unknown VideoLLaMA3 checkpoint format {fmt!r} (original, hf)")
    config.update(extra_config or {})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Videollama3ImageProcessor", "do_resize": True, "do_rescale": True, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "patch_size": 14, "resample": 3,
        "rescale_factor": 1 / 255, "min_tokens": min_tokens, "max_tokens": max_tokens}, indent=2))
    tokenizer.save_pretrained(str(path))
    return path


# ---- random checkpoints of a given size (test models, the demo's untrained stand-in) ------------
TEXT_CONFIGS = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2)),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=16)),
    "phi3": ("Phi3Config", dict(num_key_value_heads=4, pad_token_id=0)),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=None)),
}


def tiny_configs(n_layers: int = 3, max_pos: int = 512, text: str = "llama", d_model: int = 64,
                 d_mlp: Optional[int] = None, n_heads: int = 4, vocab_size: int = 400, image_size: int = 32,
                 patch_size: int = 4, d_vision: int = 32, vision_layers: int = 3, n_kv_heads: Optional[int] = None):
    """``(CLIPVisionConfig, text config)`` of a tiny model; ``text`` is llama, qwen2, phi3 or mistral.

    Raises:
        KeyError: unknown text backbone.
    """
    import transformers
    from transformers import CLIPVisionConfig

    if text not in TEXT_CONFIGS:
        raise KeyError(f"unknown text backbone {text!r}; known: {sorted(TEXT_CONFIGS)}")
    vc = CLIPVisionConfig(hidden_size=d_vision, intermediate_size=2 * d_vision, num_hidden_layers=vision_layers,
                          num_attention_heads=4, image_size=image_size, patch_size=patch_size, projection_dim=32)
    cls_name, extra = TEXT_CONFIGS[text]
    extra = dict(extra)
    if text == "phi3":
        extra["num_key_value_heads"] = n_heads
    if n_kv_heads is not None:
        extra["num_key_value_heads"] = n_kv_heads
    tc = getattr(transformers, cls_name)(hidden_size=d_model, intermediate_size=d_mlp or 2 * d_model,
                                         num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                         vocab_size=vocab_size, max_position_embeddings=max_pos, rms_norm_eps=1e-5,
                                         rope_theta=10000.0, tie_word_embeddings=False, **extra)
    return vc, tc


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Rescale the weights as the tests like: norms near 1, weights 0.08 N(0, 1), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm.weight") or "layer_norm" in name or "layrnorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))


def write_random_pllava(path, tokenizer, placeholder_id: int, seed: int = 0, pooling_shape=(4, 4, 4), n_layers=3,
                        max_pos=512, text: str = "llama", randomize: bool = True, extra_config: Optional[dict] = None,
                        max_shard_bytes=None, **sizes) -> Path:
    """A random PLLaVA-style checkpoint (``model_type "pllava"``) of the given sizes; returns its path.

    Args:
        tokenizer: a fast tokenizer whose vocabulary fits ``sizes["vocab_size"]``.
        placeholder_id: the ``<image>`` token id in that tokenizer.
        text: text backbone (``TEXT_CONFIGS``: llama, qwen2, phi3, mistral).
        randomize: rescale the weights (``randomize_``); False keeps transformers' initialisation.
        extra_config: more config.json entries.
        sizes: ``tiny_configs`` sizes (``d_model``, ``n_heads``, ``image_size``, ``patch_size``, ...).
    """
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    from videolens.frontend.vision import Projector

    torch.manual_seed(seed)
    vc, tc = tiny_configs(n_layers, max_pos, text, **sizes)
    tower = CLIPVisionModel(vc).eval()
    llm = AutoModelForCausalLM.from_config(tc).eval()
    proj = Projector(vc.hidden_size, tc.hidden_size, "gelu")
    if randomize:
        for i, m in enumerate((tower, llm, proj)):
            randomize_(m, seed * 10 + i)
    save_pllava_checkpoint(path, tower, proj, llm, tokenizer, pooling_shape, placeholder_id,
                           max_shard_bytes=max_shard_bytes, extra_config=extra_config)
    return Path(path)


def write_demo_standin(folder, seed: int = 0) -> Path:
    """An untrained checkpoint in the bundled model's format (written to ``folder`` once) whose
    word-level tokenizer covers the synthetic tasks: the stand-in ``videolens demo`` uses while the
    bundled model is absent. Its answers are chance; it exists so the whole pipeline runs end to end
    on real video files. Sizes follow the bundled model's recipe (CLIP 32 px / patch 4 / width 64,
    8x4x4 pooled video tokens, Llama width 128, 6 layers)."""
    from videolens.sources import synthetic
    from videolens.prompting.tokenizers import build_word_level_tokenizer

    folder = Path(folder)
    if not (folder / "config.json").exists():
        tok = build_word_level_tokenizer(synthetic.vocabulary_texts(), extra_words=["Answer"])
        write_random_pllava(folder, tok, tok.convert_tokens_to_ids("<image>"), seed=seed, pooling_shape=(8, 4, 4),
                            n_layers=6, max_pos=512, randomize=False, vocab_size=len(tok),
                            extra_config={"videolens_note": "untrained stand-in for the bundled model"},
                            d_model=128, d_mlp=512, n_heads=4, n_kv_heads=4, image_size=32, patch_size=4, d_vision=64)
    return folder
