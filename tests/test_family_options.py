"""Family options: settings a checkpoint family declares, passed through from_pretrained and the CLI
without either naming them; one frame-count rule; and no family name in the generic layers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import videolens as vl

ROOT = Path(__file__).resolve().parents[1]


def test_families_declare_their_options_and_the_known_checkpoints_use_only_those():
    from videolens.sources.hub import MODELS
    from weights_conversion.registry import FAMILIES, model_options

    opts = model_options()
    assert set(opts) == {"pooling_shape", "max_visual_tokens", "min_pixels", "max_pixels"}
    assert opts["pooling_shape"].frames([6, 12, 12]) == 6 and opts["max_visual_tokens"].frames is None
    declared = {o.name for f in FAMILIES.values() for o in f.options}
    for m in MODELS.values():
        assert set(m.options) <= declared, m.name
    with pytest.raises(ValueError, match="pooling_shape must be three positive integers"):
        opts["pooling_shape"].value([8, 12])
    with pytest.raises(ValueError, match="max_visual_tokens must be a positive integer"):
        opts["max_visual_tokens"].value(0)


def test_an_option_the_family_does_not_declare_is_refused(tiny_pllava_dir):
    with pytest.raises(ValueError, match="max_visual_tokens does not apply to a pllava checkpoint"):
        vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", max_visual_tokens=16)
    with pytest.raises(TypeError, match=r"unexpected keyword\(s\) \['pooling'\] \(family options: "):
        vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", pooling=(2, 2, 2))


def test_a_pixel_bound_option_sets_the_qwen_vl_front_end(tmp_path, clip_path, tiny_pllava_dir):
    from videolens.testing import make_tiny_qwen2_5_vl

    ck = make_tiny_qwen2_5_vl(tmp_path / "qwen")
    plain = vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    wide = vl.HookedVideoLLM.from_pretrained(ck, device="cpu", max_pixels=112 * 112, min_pixels=112 * 112)
    assert plain.vision.preprocess.max_pixels == 56 * 56 and wide.vision.preprocess.max_pixels == 112 * 112
    sample = vl.VideoQA(video=str(clip_path), question="What moves?", candidates=["left", "right"], answer="left")
    a, b = plain.prepare(sample, num_frames=4), wide.prepare(sample, num_frames=4)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    H, W = smart_resize(*a.video.frames.shape[1:3], 28, 112 * 112, 112 * 112)  # 112 x 140: above max_pixels
    assert a.layout.video_grid[1:] == (2, 2) and b.layout.video_grid[1:] == (H // 28, W // 28)
    assert torch.isfinite(wide(b)).all()
    with pytest.raises(ValueError, match="max_pixels does not apply to a pllava checkpoint"):
        vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", max_pixels=112 * 112)
    with pytest.raises(Exception, match="min_pixels 12544 is larger than max_pixels 3136"):
        vl.HookedVideoLLM.from_pretrained(ck, device="cpu", min_pixels=112 * 112)


def test_one_frame_count_rule():
    from weights_conversion.options import default_num_frames
    from weights_conversion.registry import model_options

    opts = model_options()
    assert default_num_frames({"num_frames": 4}, {"pooling_shape": [6, 2, 2]}, opts) == 6
    assert default_num_frames({"num_frames": 4}, {"max_visual_tokens": 16}, opts) == 4
    assert default_num_frames({}, {}, opts) == vl.video.DEFAULT_NUM_FRAMES == 8


FAMILY_WORDS = r"pllava|llava_next_video|llava_onevision|onevision|internvl|qwen|videollama|phi-?3|mistral|vicuna"


def test_no_family_name_in_the_generic_model_loading_and_commands():
    files = [ROOT / "videolens" / "hooked" / "model.py", ROOT / "videolens" / "hooked" / "loading.py",
             *sorted((ROOT / "videolens" / "commands").glob("*.py"))]
    found = {str(f.relative_to(ROOT)): m for f in files for m in re.findall(FAMILY_WORDS, f.read_text(), re.I)}
    assert found == {}
    from weights_conversion.registry import FAMILIES

    for fam in FAMILIES.values():  # the check knows every family's name
        assert re.search(FAMILY_WORDS, fam.name, re.I), fam.name
