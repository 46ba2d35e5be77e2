"""Writing checkpoints in a family's on-disk layout (tiny test models, the bundled model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import save_file

from videolens.vision import CLIP_MEAN, CLIP_STD

__all__ = ["save_pllava_checkpoint"]


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
) -> Path:
    """Save a PLLaVA-style checkpoint (REFERENCE section 5) to ``path``.

    Args:
        vision_tower: ``transformers.CLIPVisionModel``; written under ``vision_tower.vision_model.*``.
        projector: module with ``linear_1`` / ``linear_2``; written under ``multi_modal_projector.*``.
        language_model: ``transformers.LlamaForCausalLM``; written under ``language_model.*``.
        tokenizer: a fast tokenizer, saved beside the weights.
        pooling_shape: (frames, rows, cols) of the AdaptiveAvgPool3d after the projector.
        dtype: cast floating tensors (e.g. torch.float16) before writing.
        max_shard_bytes: split the weights into shards with an index file when set.
        extra_config: more config.json entries (e.g. ``prompt_template``, a model card path).

    Returns:
        the checkpoint folder.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
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
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().clone() for k, v in tensors.items()}

    if max_shard_bytes is None:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
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
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
        )

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
