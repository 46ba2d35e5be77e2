"""Logits and every layer's residual stream against the reference implementations (fp32, 1e-4) on
a real video (cockatoo.mp4, 1280x720: the official pre-resize matters); the per-family checks on the
generated clip are in test_families.py."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from families import pllava_reference

TOL = 1e-4
from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


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


def test_sharded_checkpoint_loads_identically(tmp_path, tiny_pllava, clip_path):
    from videolens.testing import make_tiny_pllava

    sharded = make_tiny_pllava(tmp_path / "sharded", max_shard_bytes=40_000)
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("model-*.safetensors"))) > 2
    model = vl.HookedVideoLLM.from_pretrained(sharded, device="cpu")
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))
    with torch.no_grad():
        assert torch.equal(model(inputs), tiny_pllava(inputs))
