"""Frame preprocessing on tensors (``FramePreprocessor(backend="torch")``) against transformers'
PIL CLIP processor on real videos: within ``TOLERANCE_LEVELS`` uint8 levels, few values off."""

from __future__ import annotations

import functools

import pytest
import torch

import videolens as vl
from videolens import tensor_preprocess as tp
from videolens.sources.video import load_video
from videolens.frontend.vision import FramePreprocessor, PllavaPreResize


def _levels(pre, a, b):
    """|a - b| in uint8 levels (undo the normalisation)."""
    return (a - b).abs() * torch.tensor(pre.std).view(1, 3, 1, 1) * 255


@pytest.mark.parametrize("video", ["cockatoo.mp4", "big_buck_bunny_1s.webm"])
@pytest.mark.parametrize("kernel", ["uint8", "float"])
def test_torch_backend_matches_the_pil_processor(shared_data, video, kernel, monkeypatch):
    frames = load_video(shared_data / "videos" / video, num_frames=4).frames  # 720p: down-scaled
    if kernel == "float":  # the kernels a GPU runs, here on the CPU
        monkeypatch.setattr(tp, "_resize", functools.partial(tp._resize, uint8_kernel=False))
    for pre_resize in (None, PllavaPreResize(336)):
        pre = FramePreprocessor(336, pre_resize=pre_resize)
        ref = pre(frames)
        pre.backend = "torch"
        got = pre(frames)
        assert got.shape == ref.shape == (4, 3, 336, 336) and got.dtype == torch.float32
        lev = _levels(pre, got, ref)
        assert float(lev.max()) <= tp.TOLERANCE_LEVELS + 1e-3
        assert float((lev > 0.5).float().mean()) < (0.01 if kernel == "uint8" else 0.05)
    # up-scaling (a small frame) stays within the tolerance too
    small = frames[:, ::4, ::4].copy()
    pre = FramePreprocessor(336)
    ref = pre(small)
    pre.backend = "torch"
    assert float(_levels(pre, pre(small), ref).max()) <= tp.TOLERANCE_LEVELS + 1e-3


def test_from_pretrained_preprocessing_torch(tiny_pllava_dir, clip_path, monkeypatch):
    calls = []
    orig = tp.tensor_pixel_values
    monkeypatch.setattr(tp, "tensor_pixel_values", lambda *a, **k: calls.append(1) or orig(*a, **k))
    sample = vl.VideoQA(video=str(clip_path), question="Which way?", candidates=["Left.", "Right."], answer="Left.")
    pil = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu")
    fast = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", preprocessing="torch")
    assert fast.vision.preprocess.backend == "torch" and pil.vision.preprocess.backend == "pil"
    a, b = pil.prepare(sample), fast.prepare(sample)
    assert calls, "the torch path was not used"
    assert a.video_embeds.shape == b.video_embeds.shape
    with torch.no_grad():
        assert (pil(a)[0, -1].softmax(-1) - fast(b)[0, -1].softmax(-1)).abs().max() < 1e-3
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", preprocessing="cv2")
