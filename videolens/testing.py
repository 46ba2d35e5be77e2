"""Tiny random checkpoints in each family's real on-disk format, and generated clips.

One place that writes test-sized VideoLLMs for the test suite, the benchmarks, ``videolens demo``'s
stand-in model and the training lab: PLLaVA (the project's format and the official ``llava``
format), LLaVA-NeXT image checkpoints (the classic llava-v1.6 layout and this transformers'
``save_pretrained``), transformers' LlavaNextVideo. Every writer takes the sizes as arguments.

Example::

    from videolens.testing import make_tiny_pllava, write_clip
    ckpt = make_tiny_pllava("/tmp/ckpt", text="qwen2", n_layers=4)
    clip = write_clip("/tmp/clip.mp4")
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from videolens.prompting.tokenizers import build_word_level_tokenizer
from weights_conversion.writers import TEXT_CONFIGS, randomize_ as _randomize, tiny_configs, write_random_pllava

__all__ = [
    "VOCAB", "PLACEHOLDER", "TEXT_CONFIGS", "tiny_tokenizer", "tiny_configs", "make_tiny_pllava", "make_tiny_internvl",
    "make_tiny_official_pllava", "make_tiny_llava_next_image", "make_tiny_llava_next_hf", "make_tiny_llava_hf",
    "make_tiny_llava_next_video", "make_tiny_internvl_hf", "make_tiny_qwen3_vl", "write_clip", "reference_language_model",
]

WORDS = [
    "What did the person do first?", "Put down the blanket.", "Took the towel.",
    "Which direction does the purple sphere move in the video?", "Up and to the right.",
    "Up and to the left.", "Down and to the left.", "Down and to the right.",
    "What is the bird doing?", "It flies away.", "It walks toward the camera.", "It sleeps.",
]
VOCAB = 400
PLACEHOLDER = 390


def tiny_tokenizer(placeholder: str = "<image>", placeholder_id: int = PLACEHOLDER):
    return build_word_level_tokenizer(WORDS, placeholder=placeholder, placeholder_id=placeholder_id, vocab_size=VOCAB)


def _save_hf(model: torch.nn.Module, tokenizer, path: Union[str, Path], seed: Optional[int] = None,
             dtype: Optional[torch.dtype] = None) -> Path:
    """Randomise ``model`` with ``seed`` (None: keep its init), cast it to ``dtype``, and save it and
    ``tokenizer`` with ``save_pretrained`` into ``path``."""
    if seed is not None:
        _randomize(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return Path(path)


def make_tiny_pllava(path: Union[str, Path], seed: int = 0, pooling_shape=(4, 4, 4), max_shard_bytes=None,
                     n_layers=3, max_pos=512, text: str = "llama", tokenizer=None, placeholder_id: int = PLACEHOLDER,
                     randomize: bool = True, extra_config: Optional[dict] = None, **sizes) -> Path:
    """A random PLLaVA-style checkpoint (``model_type "pllava"``); returns its path.

    Args:
        text: text backbone (llama, qwen2, phi3, mistral).
        tokenizer: a fast tokenizer whose vocabulary fits (default: ``tiny_tokenizer()``).
        placeholder_id: the ``<image>`` token id in that tokenizer.
        randomize: rescale the weights as the tests like (norms near 1, weights 0.08 N(0, 1)); False
            keeps transformers' initialisation.
        extra_config: more config.json entries.
        sizes: ``tiny_configs`` sizes (``d_model``, ``n_heads``, ``image_size``, ``patch_size``, ...).
    """
    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    sizes.setdefault("vocab_size", len(tok) if tokenizer is not None else VOCAB)
    write_random_pllava(path, tok, placeholder_id, seed=seed, pooling_shape=pooling_shape, n_layers=n_layers,
                        max_pos=max_pos, text=text, randomize=randomize, extra_config=extra_config,
                        max_shard_bytes=max_shard_bytes, **sizes)
    return Path(path)


def make_tiny_llava_next_video(path: Path, seed: int = 0, **sizes):
    """A random transformers LlavaNextVideoForConditionalGeneration saved with save_pretrained
    (``sizes`` go to ``tiny_configs``)."""
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    torch.manual_seed(seed)
    vc, tc = tiny_configs(**sizes)
    cfg = LlavaNextVideoConfig(vision_config=vc.to_dict(), text_config=tc.to_dict(), video_token_id=PLACEHOLDER,
                               image_token_id=PLACEHOLDER - 1, spatial_pool_stride=2)
    model = LlavaNextVideoForConditionalGeneration(cfg).eval()
    return _save_hf(model, tiny_tokenizer("<video>", PLACEHOLDER), path, seed + 7)


def write_clip(path: Union[str, Path], n_frames: int = 16, size=(48, 64), fps: int = 8, seed: int = 0) -> Path:
    """A lossless mp4 of a white square moving right over a coloured background."""
    import imageio.v2 as imageio

    rng = np.random.default_rng(seed)
    h, w = size
    bg = rng.integers(0, 255, 3)
    with imageio.get_writer(str(path), fps=fps, codec="libx264rgb", quality=None, pixelformat="rgb24",
                            ffmpeg_params=["-crf", "0", "-preset", "ultrafast"], macro_block_size=1) as wr:
        for i in range(n_frames):
            f = np.empty((h, w, 3), np.uint8)
            f[:] = bg
            x = int(i * (w - 12) / max(1, n_frames - 1))
            f[h // 2 - 6 : h // 2 + 6, x : x + 12] = 255
            wr.append_data(f)
    return Path(path)


def _rewrite_config(path: Path, **changes) -> dict:
    import json

    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    return cfg


def _as_diff(d: dict, defaults: dict) -> dict:
    """A config dict saved as a diff from its class defaults (as transformers 4.40 writes sub-configs)."""
    return {k: v for k, v in d.items() if k == "model_type" or k not in defaults or defaults[k] != v}


def make_tiny_official_pllava(path: Path, seed: int = 0, text: str = "llama", **kw):
    """A random checkpoint in the OFFICIAL PLLaVA format: ``model_type "llava"`` with
    ``architectures ["PllavaForConditionalGeneration"]``, text_config saved as a diff from the defaults."""
    import transformers

    make_tiny_pllava(path, seed=seed, text=text, **kw)
    import json

    cfg = json.loads((Path(path) / "config.json").read_text())
    cls_name, _ = TEXT_CONFIGS[text]
    defaults = getattr(transformers, cls_name)().to_dict()
    _rewrite_config(Path(path), model_type="llava", architectures=["PllavaForConditionalGeneration"],
                    text_config=_as_diff(cfg["text_config"], defaults))
    return Path(path)


def make_tiny_llava_next_image(path: Path, seed: int = 0, text: str = "llama", **kw):
    """A random LLaVA-NeXT IMAGE checkpoint (``model_type "llava_next"``, llava-v1.6 layout with
    ``image_newline``, no pooling_shape): the paper's ImageLLM baseline, loaded the PLLaVA way."""
    from safetensors.torch import load_file, save_file

    make_tiny_pllava(path, seed=seed, text=text, **kw)
    path = Path(path)
    sd = load_file(str(path / "model.safetensors"))
    d = sd["language_model.model.embed_tokens.weight"].shape[1]
    sd["image_newline"] = torch.randn(d, generator=torch.Generator().manual_seed(seed + 11))
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    _rewrite_config(path, model_type="llava_next", architectures=["LlavaNextForConditionalGeneration"],
                    pooling_shape=None, num_frames=None, frame_shape=None,
                    image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]], use_image_newline_parameter=True)
    return path


def make_tiny_llava_next_hf(path: Path, seed: int = 0):
    """A random transformers ``LlavaNextForConditionalGeneration`` saved by this transformers
    version's ``save_pretrained`` (its own key layout): an ImageLLM as llava-hf publishes them."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    vc, tc = tiny_configs()
    cfg = LlavaNextConfig(vision_config=vc.to_dict(), text_config=tc.to_dict(), image_token_id=PLACEHOLDER,
                          image_grid_pinpoints=[[32, 64], [64, 32], [64, 64]])
    model = LlavaNextForConditionalGeneration(cfg).eval()
    return _save_hf(model, tiny_tokenizer("<image>", PLACEHOLDER), path, seed + 13)


def make_tiny_internvl(path: Union[str, Path], seed: int = 0, original_max_positions: int = 64, image_size: int = 56,
                       n_layers: int = 3, max_pos: int = 512, randomize: bool = True, **sizes) -> Path:
    """A random InternVL chat v1.5 checkpoint in the official on-disk layout (``model_type
    "internvl_chat"``): InternViT 56 px / patch 14 (4x4 patches -> 2x2 tokens a frame after the
    pixel shuffle), mlp1, and a 3-layer Phi-3 with LongRoPE stored the legacy way (``{"type": "su"}``)
    whose ``original_max_position_embeddings`` is small, so a video prompt already takes the long
    factors and a short text the short ones. ``image_size`` 448 gives the paper's 16x16 tokens a
    frame; ``sizes`` go to ``tiny_configs`` (``d_model``, ``n_heads``, ...)."""
    from transformers import AutoModelForCausalLM, InternVLVisionConfig, InternVLVisionModel

    from weights_conversion.text_backbones import hf_text_config
    from weights_conversion.writers import save_internvl_checkpoint

    torch.manual_seed(seed)
    tok = tiny_tokenizer(placeholder="<IMG_CONTEXT>")
    _, tc = tiny_configs(n_layers=n_layers, max_pos=max_pos, text="phi3", **sizes)
    half = tc.hidden_size // tc.num_attention_heads // 2
    llm = {k: v for k, v in tc.to_dict().items() if k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "vocab_size", "max_position_embeddings", "rms_norm_eps", "pad_token_id", "tie_word_embeddings")}
    llm.update(model_type="phi3", architectures=["Phi3ForCausalLM"], rope_theta=10000.0, hidden_act="silu",
               original_max_position_embeddings=original_max_positions, sliding_window=None,
               rope_scaling={"type": "su", "short_factor": [1.0 + 0.05 * i for i in range(half)],
                             "long_factor": [1.0 + 0.9 * i for i in range(half)]})
    lm = AutoModelForCausalLM.from_config(hf_text_config(llm)).eval()
    vc = InternVLVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=image_size, patch_size=14, attention_bias=True, use_mean_pooling=True)
    tower = InternVLVisionModel(vc).eval()
    mlp1 = torch.nn.Sequential(torch.nn.LayerNorm(4 * 32), torch.nn.Linear(4 * 32, tc.hidden_size), torch.nn.GELU(),
                               torch.nn.Linear(tc.hidden_size, tc.hidden_size))
    if randomize:
        for i, m in enumerate((tower, lm, mlp1)):
            _randomize(m, seed * 10 + i)
    return save_internvl_checkpoint(path, tower, mlp1, lm, tok, llm, PLACEHOLDER)


def make_tiny_internvl_hf(path: Union[str, Path], seed: int = 0, n_layers: int = 3, max_pos: int = 512,
                          image_size: int = 56, randomize: bool = True, text: str = "qwen2", **sizes) -> Path:
    """A random transformers ``InternVLForConditionalGeneration`` (model_type "internvl", the
    InternVL3 "-hf" layout) saved with ``save_pretrained``: InternViT 56 px / patch 14 (4x4 patches ->
    2x2 tokens a frame after the pixel shuffle), the projector, a ``text`` model (Qwen2 as InternVL3,
    Qwen3 as InternVL3.5), and the tiny tokenizer with ``<IMG_CONTEXT>`` as the image token."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig

    torch.manual_seed(seed)
    tok = tiny_tokenizer(placeholder="<IMG_CONTEXT>")
    _, tc = tiny_configs(n_layers=n_layers, max_pos=max_pos, text=text, **sizes)
    vc = InternVLVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=image_size, patch_size=14, attention_bias=True, use_mean_pooling=True)
    cfg = InternVLConfig(vision_config=vc.to_dict(), text_config=tc.to_dict(), image_token_id=PLACEHOLDER,
                         downsample_ratio=0.5, tie_word_embeddings=False)
    model = InternVLForConditionalGeneration(cfg).eval()
    return _save_hf(model, tok, path, seed if randomize else None)


def make_tiny_llava_onevision(path: Union[str, Path], seed: int = 0, n_layers: int = 3, max_pos: int = 512,
                              image_size: int = 28, randomize: bool = True, **sizes) -> Path:
    """A random transformers ``LlavaOnevisionForConditionalGeneration`` (SigLIP 28 px / patch 4: a
    7x7 grid, bilinear-resized to 4x4 tokens a frame; Qwen2 text) saved with ``save_pretrained``;
    the video placeholder is ``<image>`` (``PLACEHOLDER``)."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, SiglipVisionConfig

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    _, tc = tiny_configs(n_layers=n_layers, max_pos=max_pos, text="qwen2", **sizes)
    vc = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=image_size, patch_size=4)
    cfg = LlavaOnevisionConfig(text_config=tc.to_dict(), vision_config=vc.to_dict(), video_token_id=PLACEHOLDER,
                               image_token_id=PLACEHOLDER - 1, vision_feature_layer=-1,
                               vision_feature_select_strategy="full", tie_word_embeddings=False)
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    return _save_hf(model, tok, path, seed * 10 + 5 if randomize else None)


def make_tiny_qwen2_5_vl(path: Union[str, Path], seed: int = 0, n_layers: int = 3, max_pos: int = 512,
                         min_pixels: int = 56 * 56, max_pixels: int = 56 * 56, randomize: bool = True,
                         generation: str = "qwen2_5_vl", **sizes) -> Path:
    """A random transformers ``Qwen2_5_VLForConditionalGeneration`` saved with ``save_pretrained``:
    a 2-block vision transformer (one windowed, one full attention block; patch 14, merge 2,
    temporal patch 2) and a Qwen2 text model with ``mrope_section`` [2, 3, 3] (head_dim 16), plus a
    ``video_preprocessor_config.json`` whose pixel bounds make every frame 56x56 (2x2 tokens a
    temporal slot). The video placeholder is ``<image>`` (``PLACEHOLDER``); ``sizes`` go to
    ``tiny_configs`` (the mrope sections then split the head's frequencies about 1:1.5:1.5).
    ``generation="qwen2_vl"`` writes a Qwen2-VL (full-attention ViT, temporal ids one a slot)."""
    import json

    import transformers

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    _, tc = tiny_configs(n_layers=n_layers, max_pos=max_pos, text="qwen2", **sizes)
    half = tc.hidden_size // tc.num_attention_heads // 2
    sections = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    text = {k: v for k, v in tc.to_dict().items() if k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "vocab_size", "max_position_embeddings", "rms_norm_eps", "hidden_act")}
    text.update(model_type=f"{generation}_text", rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                  "mrope_section": sections})
    if generation == "qwen2_5_vl":
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=28, fullatt_block_indexes=[1],
                      out_hidden_size=tc.hidden_size, tokens_per_second=2)
        config_cls, model_cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
    else:
        vision = dict(depth=2, embed_dim=32, mlp_ratio=2, num_heads=2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, hidden_size=tc.hidden_size)
        config_cls, model_cls = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
    cfg = config_cls(text_config=text, vision_config=vision, video_token_id=PLACEHOLDER,
                     image_token_id=PLACEHOLDER - 1, vision_start_token_id=PLACEHOLDER - 2,
                     vision_end_token_id=PLACEHOLDER - 3, tie_word_embeddings=False)
    model = model_cls(cfg).eval()
    path = _save_hf(model, tok, path, seed * 10 + 7 if randomize else None)
    (path / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen2VLVideoProcessor", "size": {"shortest_edge": min_pixels,
                                                                    "longest_edge": max_pixels},
         "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}))
    return path


def make_tiny_qwen3_vl(path: Union[str, Path], seed: int = 0, n_layers: int = 3, max_pos: int = 512,
                       pixels: int = 4 * 64 * 64, deepstack=(0, 1), randomize: bool = True, **sizes) -> Path:
    """A random transformers ``Qwen3VLForConditionalGeneration`` saved with ``save_pretrained``: a
    3-block vision transformer (patch 16, merge 2, temporal patch 2, a 4x4 learned position grid)
    whose blocks ``deepstack`` feed DeepStack mergers, and a Qwen3 text model (QK-norm) with
    interleaved M-RoPE sections [4, 2, 2] (head_dim 16); plus a ``video_preprocessor_config.json``
    whose pixel budget (``pixels`` for the whole clip, min = max) makes 4 frames of a 48x64 clip
    64x64 (2x2 tokens a temporal slot). The video placeholder is ``<image>`` (``PLACEHOLDER``)."""
    import json

    import transformers

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    _, tc = tiny_configs(n_layers=n_layers, max_pos=max_pos, text="qwen3", **sizes)
    text = {k: v for k, v in tc.to_dict().items() if k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "hidden_act")}
    half = tc.hidden_size // tc.num_attention_heads // 2
    text.update(rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_interleaved": True,
                                 "mrope_section": [half - 2 * (half // 4), half // 4, half // 4]})
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=tc.hidden_size, num_position_embeddings=16,
                  deepstack_visual_indexes=list(deepstack))
    cfg = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, video_token_id=PLACEHOLDER,
                                     image_token_id=PLACEHOLDER - 1, vision_start_token_id=PLACEHOLDER - 2,
                                     vision_end_token_id=PLACEHOLDER - 3, tie_word_embeddings=False)
    model = transformers.Qwen3VLForConditionalGeneration(cfg).eval()
    path = _save_hf(model, tok, path, seed * 10 + 9 if randomize else None)
    (path / "video_preprocessor_config.json").write_text(json.dumps(
        {"video_processor_type": "Qwen3VLVideoProcessor", "size": {"shortest_edge": pixels, "longest_edge": pixels},
         "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
         "image_std": [0.5, 0.5, 0.5]}))
    return path


def make_tiny_videollama3(path: Union[str, Path], fmt: str = "original", seed: int = 0, n_layers: int = 3,
                          max_pos: int = 512, min_tokens: int = 4, randomize: bool = True, **sizes) -> Path:
    """A random VideoLLaMA3 checkpoint in the original (``fmt="original"``) or transformers
    (``"hf"``) layout, written from a ``transformers.VideoLlama3ForConditionalGeneration``: a
    2-layer SigLIP-NaViT (patch 14), the projector and a Qwen2 text model (QKV bias, rope theta 1e6).
    ``min_tokens`` 4 lets a 48x64 clip become 56x56 frames (2x2 merged tokens a frame) at
    ``max_visual_tokens=16`` over 4 frames."""
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration, VideoLlama3VisionConfig

    from weights_conversion.writers import save_videollama3_checkpoint

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    _, tc = tiny_configs(n_layers=n_layers, max_pos=max_pos, text="qwen2", **sizes)
    text = tc.to_dict()
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6}
    vc = VideoLlama3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 patch_size=14)
    cfg = VideoLlama3Config(text_config=text, vision_config=vc, video_token_id=PLACEHOLDER,
                            image_token_id=PLACEHOLDER - 1)
    model = VideoLlama3ForConditionalGeneration(cfg).eval()
    if randomize:
        _randomize(model, seed * 10 + 3)
    return save_videollama3_checkpoint(path, model, tok, fmt, min_tokens=min_tokens)


def reference_language_model(ckpt: Union[str, Path], attn_implementation: str = "eager"):
    """The transformers CausalLM of a PLLaVA-format checkpoint's ``language_model.*`` tensors (the
    reference the hooked backbone is compared with in tests and benchmarks).

    Raises:
        AssertionError: the tensors do not fill the model exactly.
    """
    import json

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from weights_conversion.text_backbones import hf_text_config

    ckpt = Path(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    cfg = hf_text_config(config.get("text_config") or config["llm_config"])  # llm_config: InternVL's name
    lm = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation).eval()
    sd = load_file(str(ckpt / "model.safetensors"))
    missing, unexpected = lm.load_state_dict(
        {k[len("language_model."):]: v for k, v in sd.items() if k.startswith("language_model.")}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return lm


def make_tiny_llava_hf(path: Union[str, Path], seed: int = 0, dtype: Optional[torch.dtype] = None,
                       randomize: bool = True, **sizes) -> Path:
    """A random transformers ``LlavaForConditionalGeneration`` (a LLaVA-1.5-style IMAGE checkpoint,
    ``model_type "llava"``) saved by this transformers version's ``save_pretrained``; the official
    code loads such checkpoints the PLLaVA way. ``sizes`` go to ``tiny_configs``; ``dtype`` casts
    the saved weights (e.g. bfloat16 for a load benchmark)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vc, tc = tiny_configs(**sizes)
    cfg = LlavaConfig(vision_config=vc.to_dict(), text_config=tc.to_dict(), image_token_id=PLACEHOLDER)
    model = LlavaForConditionalGeneration(cfg).eval()
    return _save_hf(model, tiny_tokenizer("<image>", PLACEHOLDER), path, seed + 17 if randomize else None, dtype)
