"""The checkpoint families every shared test runs on (tests/test_families.py), in the spirit of
transformers' ModelTesterMixin: one ``FamilyCase`` per (family, text backbone). A later family plugs
in with one line in ``CASES``: a writer of a tiny checkpoint in its exact on-disk format and a
reference forward written from transformers' own modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
from einops import rearrange
from safetensors.torch import load_file

from videolens.testing import (
    reference_language_model,
    make_tiny_llava_hf,
    make_tiny_llava_next_hf,
    make_tiny_llava_next_image,
    make_tiny_llava_next_video,
    make_tiny_official_pllava,
    make_tiny_internvl,
    make_tiny_pllava,
    make_tiny_llava_onevision,
    make_tiny_internvl_hf,
    make_tiny_qwen2_5_vl,
    make_tiny_qwen3_vl,
    make_tiny_videollama3,
)


@dataclass(frozen=True)
class FamilyCase:
    """One family x text backbone.

    Attributes:
        id: test id.
        write: ``write(path) -> checkpoint folder`` (a tiny random checkpoint, exact on-disk format).
        reference: ``reference(ckpt, model, inputs) -> (logits [1, S, V], hidden_states (L + 1), final norm)``
            computed by transformers' modules, independent of videolens' conversion.
        load_kwargs: extra ``from_pretrained`` arguments (e.g. the pooling override).
        num_frames: frames per clip.
        video_grid: expected ``(T, h, w)`` of the video tokens.
    """

    id: str
    write: Callable[[Path], Path]
    reference: Callable
    load_kwargs: Dict = field(default_factory=dict)
    num_frames: int = 8
    video_grid: Tuple[int, int, int] = (4, 4, 4)


def official_preresize(frames, clip_size):
    """The official PllavaProcessor.resize_crop_longshort for one video, written with the
    transformers functions it calls (image_transforms.get_resize_output_image_size and resize)."""
    import numpy as np
    from transformers.image_transforms import get_resize_output_image_size, resize

    h, w = frames.shape[1:3]
    rate = max(h, w) / min(h, w)
    short = max(min(min(h, w), int(min(640, max(h, w)) / rate)), clip_size)
    out_long = int(short * rate)
    out = []
    for f in frames:
        size = get_resize_output_image_size(f, size=short, default_to_square=False, max_size=9999,
                                            input_data_format="channels_last")
        f = resize(f, size, resample=3, input_data_format="channels_last")
        start = ((max(f.shape[:2]) - out_long) // 2) // 2
        f = f[start:start + out_long] if h > w else f[:, start:start + out_long]
        out.append(f)
    return np.stack(out)


def pllava_reference(ckpt, frames, tokens, placeholder, pooling_shape=None):
    """PLLaVA written independently from HF modules: the official pre-resize, CLIP preprocessing ->
    CLIP hidden_states[-2][:, 1:] -> MLP -> AdaptiveAvgPool3d -> the HF CausalLM (inputs_embeds)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    sd = load_file(str(Path(ckpt) / "model.safetensors"))
    vcfg = {k: v for k, v in cfg["vision_config"].items() if k != "model_type"}
    tower = CLIPVisionModel(CLIPVisionConfig(**vcfg)).eval()
    tower.load_state_dict({k[len("vision_tower.vision_model."):]: v for k, v in sd.items()
                           if k.startswith("vision_tower.")}, strict=False)
    lm = reference_language_model(ckpt)
    W1, b1 = sd["multi_modal_projector.linear_1.weight"], sd["multi_modal_projector.linear_1.bias"]
    W2, b2 = sd["multi_modal_projector.linear_2.weight"], sd["multi_modal_projector.linear_2.bias"]
    size = cfg["vision_config"]["image_size"]
    proc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    pix = proc(list(official_preresize(frames, size)), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        feats = tower(pixel_values=pix, output_hidden_states=True).hidden_states[-2][:, 1:]
        x = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(feats, W1, b1)), W2, b2)
        side = int(x.shape[1] ** 0.5)
        x = rearrange(x, "t (h w) d -> 1 d t h w", h=side)
        x = torch.nn.AdaptiveAvgPool3d(tuple(pooling_shape or cfg["pooling_shape"]))(x)
        video = rearrange(x, "1 d t h w -> (t h w) d")
        emb = lm.model.embed_tokens(tokens.clamp(max=lm.config.vocab_size - 1))
        mask = tokens[0] == placeholder
        emb[0, mask] = video
        out = lm(inputs_embeds=emb, output_hidden_states=True)
    return out.logits, out.hidden_states, lm.model.norm


def _pllava_ref(pooling_shape=None):
    def ref(ckpt, model, inputs):
        return pllava_reference(ckpt, inputs.video.frames, inputs.tokens, model.placeholder_id, pooling_shape)

    return ref


def _lnv_ref(ckpt, model, inputs):
    from transformers import LlavaNextVideoForConditionalGeneration

    ref = LlavaNextVideoForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    pix = model.vision.preprocess(inputs.video.frames)[None]
    with torch.no_grad():
        out = ref(input_ids=inputs.tokens, pixel_values_videos=pix, output_hidden_states=True)
    return out.logits, out.hidden_states, ref.model.language_model.norm


def _llava_hf_ref(pooling_shape, cls_name="LlavaNextForConditionalGeneration"):
    """The PLLaVA way on transformers' own Llava(Next)ForConditionalGeneration modules: its CLIP tower
    (hidden state -2, CLS dropped), its projector, AdaptiveAvgPool3d, its language model and lm_head."""

    def ref(ckpt, model, inputs):
        import transformers
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        cls = getattr(transformers, cls_name)
        hf = cls.from_pretrained(str(ckpt), attn_implementation="eager").eval()
        size = hf.config.vision_config.image_size
        proc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        pix = proc(list(official_preresize(inputs.video.frames, size)), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            feats = hf.model.vision_tower(pixel_values=pix, output_hidden_states=True).hidden_states[-2][:, 1:]
            x = hf.model.multi_modal_projector(feats)
            x = rearrange(x, "t (h w) d -> 1 d t h w", h=int(x.shape[1] ** 0.5))
            video = rearrange(torch.nn.AdaptiveAvgPool3d(pooling_shape)(x), "1 d t h w -> (t h w) d")
            emb = hf.model.language_model.embed_tokens(inputs.tokens.clamp(max=hf.config.text_config.vocab_size - 1))
            emb[0, inputs.tokens[0] == model.placeholder_id] = video
            out = hf.model.language_model(inputs_embeds=emb, output_hidden_states=True)
            logits = hf.lm_head(out.last_hidden_state)
        return logits, out.hidden_states, hf.model.language_model.norm

    return ref


def internvl_reference(ckpt, model, inputs):
    """Mini-InternVL on transformers' own InternVLForConditionalGeneration, the checkpoint's tensors
    renamed as REFERENCE section 7 lists (fused qkv split in thirds, mlp1 -> multi_modal_projector),
    pixels from the official pre-resize and CLIP preprocessing with ImageNet mean/std; its Phi-3
    picks LongRoPE's short or long factors itself."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from weights_conversion.internvl import internvit_key_map
    from weights_conversion.text_backbones import hf_text_config

    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    v = cfg["vision_config"]
    vc = InternVLVisionConfig(hidden_size=v["hidden_size"], num_hidden_layers=v["num_hidden_layers"],
                              num_attention_heads=v["num_attention_heads"], intermediate_size=v["intermediate_size"],
                              image_size=v["image_size"], patch_size=v["patch_size"], attention_bias=v["qkv_bias"],
                              use_mean_pooling=True)
    hf_cfg = InternVLConfig(vision_config=vc, text_config=hf_text_config(cfg["llm_config"]),
                            image_token_id=cfg["img_context_token_id"], image_seq_length=(v["image_size"] // v["patch_size"] // 2) ** 2,
                            downsample_ratio=0.5, vision_feature_layer=-1, tie_word_embeddings=False)
    hf_cfg._attn_implementation = "eager"
    hf = InternVLForConditionalGeneration(hf_cfg).eval()
    sd = load_file(str(Path(ckpt) / "model.safetensors"))
    new = {}
    for ours, name in internvit_key_map(v["num_hidden_layers"]).items():
        t = sd.get(f"vision_model.{ours}")
        if t is None:
            continue
        if ".qkv." in ours:
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, 0)):
                new[f"model.vision_tower.{name.replace('qkv', part)}"] = chunk
        else:
            new[f"model.vision_tower.{name}"] = t
    for i, n in (("0", "layer_norm"), ("1", "linear_1"), ("3", "linear_2")):
        for p in ("weight", "bias"):
            new[f"model.multi_modal_projector.{n}.{p}"] = sd[f"mlp1.{i}.{p}"]
    for k, t in sd.items():
        if k.startswith("language_model.model."):
            new["model.language_model." + k[len("language_model.model."):]] = t
    new["lm_head.weight"] = sd["language_model.lm_head.weight"]
    missing, unexpected = hf.load_state_dict(new, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    size = v["image_size"]
    proc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    pix = proc(list(official_preresize(inputs.video.frames, size)), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = hf(input_ids=inputs.tokens, pixel_values=pix, output_hidden_states=True)
    return out.logits, out.hidden_states, hf.model.language_model.norm


def videollama3_reference(ckpt, model, inputs):
    """VideoLLaMA3 on transformers' own VideoLlama3ForConditionalGeneration (its NaViT tower, merge,
    projector, Qwen2 and lm_head): the transformers-format folder through ``from_pretrained``, the
    original format's tensors renamed by hand (REFERENCE section 8); pixels from videolens'
    budgeted resize, flattened into patches as the official processor does."""
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

    from videolens.frontend.navit import patchify

    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    if cfg["model_type"] == "video_llama_3":
        hf = VideoLlama3ForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    else:
        text = {k: v for k, v in cfg.items() if k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                "hidden_act", "tie_word_embeddings")}
        text.update(model_type="qwen2", rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]})
        vision = {k: v for k, v in cfg["vision_encoder_config"].items() if k != "model_type"}
        hf_cfg = VideoLlama3Config(text_config=text, vision_config=vision, video_token_id=cfg["image_token_index"],
                                   image_token_id=cfg["image_token_index"] - 1)
        hf_cfg._attn_implementation = "eager"
        hf = VideoLlama3ForConditionalGeneration(hf_cfg).eval()
        sd = {}
        for k, t in load_file(str(Path(ckpt) / "model.safetensors")).items():
            for a, b in (("model.vision_encoder.", "model.vision_model."), ("model.mm_projector.", "model.projector."),
                         ("model.", "model.language_model.")):
                if k.startswith(a):
                    k = b + k[len(a):]
                    break
            sd[k] = t
        missing, unexpected = hf.load_state_dict(sd, strict=False)
        assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    pixels = model.vision.pixels(inputs.video.frames)
    T, _, H, W = pixels.shape
    with torch.no_grad():
        out = hf(input_ids=inputs.tokens, pixel_values_videos=patchify(pixels),
                 video_grid_thw=torch.tensor([[T, H // 14, W // 14]]), video_merge_sizes=torch.tensor([2]),
                 output_hidden_states=True)
    return out.logits, out.hidden_states, hf.model.language_model.norm


def onevision_reference(ckpt, model, inputs):
    """LLaVA-OneVision on transformers' own LlavaOnevisionForConditionalGeneration (its SigLIP tower,
    projector, apply_pooling, image_newline, Qwen2 and lm_head) with videolens' frame pixels."""
    from transformers import LlavaOnevisionForConditionalGeneration

    hf = LlavaOnevisionForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    pixels = model.vision.pixels(inputs.video.frames)[None]
    with torch.no_grad():
        out = hf(input_ids=inputs.tokens, pixel_values_videos=pixels, output_hidden_states=True)
    return out.logits, out.hidden_states, hf.model.language_model.norm


def internvl_hf_reference(ckpt, model, inputs):
    """InternVL (transformers' format) on transformers' own InternVLForConditionalGeneration (its
    InternViT, pixel shuffle, projector, Qwen2 and lm_head) with videolens' frame pixels, each frame
    one image."""
    from transformers import InternVLForConditionalGeneration

    hf = InternVLForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    pixels = model.vision.pixels(inputs.video.frames)
    with torch.no_grad():
        out = hf(input_ids=inputs.tokens, pixel_values=pixels, output_hidden_states=True)
    return out.logits, out.hidden_states, hf.model.language_model.norm


def qwen2_5_vl_reference(ckpt, model, inputs):
    """Qwen2.5-VL on transformers' own Qwen2_5_VLForConditionalGeneration (its windowed vision
    transformer and merger, its get_rope_index 3-D positions, M-RoPE, Qwen2 and lm_head) with
    videolens' frame pixels. ``mm_token_type_ids`` is passed: without it transformers 5 builds 1-D
    positions (REFERENCE section 12)."""
    import transformers

    from videolens.frontend.qwen_vl import patchify_video, seconds_per_slot

    qwen25 = json.loads((Path(ckpt) / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    cls = transformers.Qwen2_5_VLForConditionalGeneration if qwen25 else transformers.Qwen2VLForConditionalGeneration
    hf = cls.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    pixels = model.vision.pixels(inputs.video.frames)
    T, _, H, W = pixels.shape
    extra = {"second_per_grid_ts": torch.tensor([seconds_per_slot(inputs.video, model.vision.preprocess)])} if qwen25 else {}
    with torch.no_grad():
        out = hf(input_ids=inputs.tokens, pixel_values_videos=patchify_video(pixels),
                 video_grid_thw=torch.tensor([[T // 2, H // 14, W // 14]]),
                 mm_token_type_ids=(inputs.tokens == hf.config.video_token_id).int() * 2, output_hidden_states=True, **extra)
    return out.logits, out.hidden_states, hf.model.language_model.norm


def qwen3_vl_reference(ckpt, model, inputs, deepstack: bool = True):
    """Qwen3-VL on transformers' own Qwen3VLForConditionalGeneration (its vision model and DeepStack
    mergers, its get_rope_index with one grid per temporal slot, interleaved M-RoPE, Qwen3 and
    lm_head) with videolens' frame pixels. The residual stream entering each decoder layer is read
    with forward pre-hooks, since transformers' hidden_states are the layers' outputs before the
    DeepStack additions. ``deepstack=False``: the model with its DeepStack additions switched off."""
    import transformers

    from videolens.frontend.qwen_vl import patchify_video

    hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    pixels = model.vision.pixels(inputs.video.frames)
    T, _, H, W = pixels.shape
    p = hf.config.vision_config.patch_size
    entering = []
    handles = [layer.register_forward_pre_hook(lambda mod, args: entering.append(args[0].clone()))
               for layer in hf.model.language_model.layers]
    if not deepstack:
        hf.model.language_model._deepstack_process = lambda hidden, mask, embeds: hidden
    try:
        with torch.no_grad():
            out = hf(input_ids=inputs.tokens, pixel_values_videos=patchify_video(pixels, p),
                     video_grid_thw=torch.tensor([[T // 2, H // p, W // p]]),
                     mm_token_type_ids=(inputs.tokens == hf.config.video_token_id).int() * 2, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return out.logits, tuple(entering) + (out.hidden_states[-1],), hf.model.language_model.norm


def _pllava(text):
    return FamilyCase(f"pllava-{text}", lambda p: make_tiny_pllava(p, text=text), _pllava_ref())


CASES = [
    _pllava("llama"),
    _pllava("mistral"),
    _pllava("qwen2"),
    _pllava("phi3"),
    FamilyCase("official-pllava-llama", lambda p: make_tiny_official_pllava(p), _pllava_ref()),
    FamilyCase("llava-next-image-llama", lambda p: make_tiny_llava_next_image(p), _pllava_ref((4, 4, 4)),
               load_kwargs={"pooling_shape": (4, 4, 4)}),
    FamilyCase("llava-next-hf-llama", lambda p: make_tiny_llava_next_hf(p), _llava_hf_ref((4, 4, 4)),
               load_kwargs={"pooling_shape": (4, 4, 4)}),
    FamilyCase("llava-hf-llama", lambda p: make_tiny_llava_hf(p), _llava_hf_ref((4, 4, 4), "LlavaForConditionalGeneration"),
               load_kwargs={"pooling_shape": (4, 4, 4)}),
    FamilyCase("llava-next-video-llama", lambda p: make_tiny_llava_next_video(p), _lnv_ref, num_frames=4),
    FamilyCase("internvl-phi3", lambda p: make_tiny_internvl(p), internvl_reference, video_grid=(8, 2, 2)),  # long factors
    FamilyCase("llava-onevision-qwen2", lambda p: make_tiny_llava_onevision(p), onevision_reference, num_frames=4),
    FamilyCase("internvl-hf-qwen2", lambda p: make_tiny_internvl_hf(p), internvl_hf_reference, num_frames=4,
               video_grid=(4, 2, 2)),
    FamilyCase("internvl-hf-qwen3", lambda p: make_tiny_internvl_hf(p, text="qwen3"), internvl_hf_reference,
               num_frames=4, video_grid=(4, 2, 2)),  # InternVL3.5's backbone: Qwen3 with QK-norm
    FamilyCase("qwen2_5_vl", lambda p: make_tiny_qwen2_5_vl(p), qwen2_5_vl_reference, num_frames=4,
               video_grid=(2, 2, 2)),
    FamilyCase("qwen2_vl", lambda p: make_tiny_qwen2_5_vl(p, generation="qwen2_vl"), qwen2_5_vl_reference,
               num_frames=4, video_grid=(2, 2, 2)),
    FamilyCase("qwen3_vl", lambda p: make_tiny_qwen3_vl(p), qwen3_vl_reference, num_frames=4, video_grid=(2, 2, 2)),
    FamilyCase("videollama3-qwen2", lambda p: make_tiny_videollama3(p), videollama3_reference,
               load_kwargs={"max_visual_tokens": 16}, num_frames=4, video_grid=(4, 2, 2)),
    FamilyCase("videollama3-hf-qwen2", lambda p: make_tiny_videollama3(p, fmt="hf"), videollama3_reference,
               load_kwargs={"max_visual_tokens": 16}, num_frames=4, video_grid=(4, 2, 2)),
]
