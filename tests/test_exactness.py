"""Logits and every layer's residual stream against the reference implementations (fp32, 1e-4)."""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file

import videolens as vl

TOL = 1e-4
SAMPLE = dict(question="What did the person do first?", candidates=["Put down the blanket.", "Took the towel."],
              answer="Took the towel.")


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


def pllava_reference(ckpt, frames, tokens, placeholder):
    """PLLaVA written independently from HF modules: the official pre-resize, CLIP preprocessing ->
    CLIP hidden_states[-2][:, 1:] -> MLP -> AdaptiveAvgPool3d -> LlamaForCausalLM(inputs_embeds)."""
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = json.loads((ckpt / "config.json").read_text())
    sd = load_file(str(ckpt / "model.safetensors"))
    vcfg = {k: v for k, v in cfg["vision_config"].items() if k != "model_type"}
    tower = CLIPVisionModel(CLIPVisionConfig(**vcfg)).eval()
    tower.load_state_dict({k[len("vision_tower.vision_model."):]: v for k, v in sd.items() if k.startswith("vision_tower.")}, strict=False)
    tcfg = {k: v for k, v in cfg["text_config"].items() if k != "model_type"}
    lm_cfg = AutoConfig.for_model(cfg["text_config"].get("model_type", "llama"), **tcfg)
    lm = AutoModelForCausalLM.from_config(lm_cfg, attn_implementation="eager").eval()
    missing, unexpected = lm.load_state_dict({k[len("language_model."):]: v for k, v in sd.items() if k.startswith("language_model.")}, strict=False)
    assert not missing and not unexpected
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
        x = torch.nn.AdaptiveAvgPool3d(tuple(cfg["pooling_shape"]))(x)
        video = rearrange(x, "1 d t h w -> (t h w) d")
        emb = lm.model.embed_tokens(tokens.clamp(max=lm.config.vocab_size - 1))
        mask = tokens[0] == placeholder
        emb[0, mask] = video
        out = lm(inputs_embeds=emb, output_hidden_states=True)
    return out.logits, out.hidden_states, lm.model.norm


def compare(model, inputs, ref_logits, ref_hidden, ref_norm):
    with torch.no_grad():
        logits, cache = model.run_with_cache(inputs)
    assert torch.allclose(logits, ref_logits, atol=TOL, rtol=0), (logits - ref_logits).abs().max()
    L = model.cfg.n_layers
    for l in range(L):
        got = cache[f"blocks.{l}.hook_resid_pre"]
        assert torch.allclose(got, ref_hidden[l], atol=TOL, rtol=0), (l, (got - ref_hidden[l]).abs().max())
    final = ref_norm(cache[f"blocks.{L - 1}.hook_resid_post"])
    assert torch.allclose(final, ref_hidden[L], atol=TOL, rtol=0)
    return logits


@pytest.mark.parametrize("video", ["clip", "cockatoo"])
def test_pllava_matches_reference(tiny_pllava, tiny_pllava_dir, clip_path, request, video):
    path = clip_path if video == "clip" else request.getfixturevalue("cockatoo")
    inputs = tiny_pllava.prepare(vl.VideoQA(video=str(path), **SAMPLE), num_frames=8)
    assert inputs.video_embeds.shape == (4, 4, 4, 64)
    ref = pllava_reference(tiny_pllava_dir, inputs.video.frames, inputs.tokens, tiny_pllava.placeholder_id)
    compare(tiny_pllava, inputs, *ref)


@pytest.mark.parametrize("video", ["clip", "cockatoo"])
def test_llava_next_video_matches_transformers(tiny_lnv_dir, clip_path, request, video):
    from transformers import LlavaNextVideoForConditionalGeneration

    path = clip_path if video == "clip" else request.getfixturevalue("cockatoo")
    model = vl.HookedVideoLLM.from_pretrained(tiny_lnv_dir, device="cpu")
    inputs = model.prepare(vl.VideoQA(video=str(path), **SAMPLE), num_frames=4)
    assert inputs.video_embeds.shape == (4, 4, 4, 64)  # 8x8 patches pooled 2x2 per frame
    ref = LlavaNextVideoForConditionalGeneration.from_pretrained(str(tiny_lnv_dir), attn_implementation="eager").eval()
    pix = model.vision.preprocess(inputs.video.frames)[None]
    with torch.no_grad():
        out = ref(input_ids=inputs.tokens, pixel_values_videos=pix, output_hidden_states=True)
    compare(model, inputs, out.logits, out.hidden_states, ref.model.language_model.norm)


@pytest.mark.parametrize("text", ["qwen2", "phi3", "mistral"])
def test_other_text_backbones_match_reference(tmp_path, clip_path, text):
    from tiny import make_tiny_pllava

    ck = make_tiny_pllava(tmp_path / text, text=text)
    model = vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))
    ref = pllava_reference(ck, inputs.video.frames, inputs.tokens, model.placeholder_id)
    compare(model, inputs, *ref)


def test_sharded_checkpoint_loads_identically(tmp_path, tiny_pllava, clip_path):
    from tiny import make_tiny_pllava

    sharded = make_tiny_pllava(tmp_path / "sharded", max_shard_bytes=40_000)
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    model = vl.HookedVideoLLM.from_pretrained(sharded, device="cpu")
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))
    with torch.no_grad():
        assert torch.equal(model(inputs), tiny_pllava(inputs))


def test_bf16_gives_same_answer(tiny_pllava_dir, tiny_pllava, clip_path):
    model16 = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", dtype=torch.bfloat16)
    sample = vl.VideoQA(video=str(clip_path), **SAMPLE)
    inp32, inp16 = tiny_pllava.prepare(sample), model16.prepare(sample)
    assert inp16.video_embeds.dtype == torch.bfloat16
    with torch.no_grad():
        l32, l16 = tiny_pllava(inp32)[0, -1], model16(inp16)[0, -1].float()
    assert int(l32.argmax()) == int(l16.argmax())
    assert tiny_pllava.answer(inp32) == model16.answer(inp16)
