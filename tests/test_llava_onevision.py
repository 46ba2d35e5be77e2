"""LLaVA-OneVision beyond the shared family suite: the ONE newline after the video is its own token
group, right after the last video token; the chat templates (its own instruction, and the paper's
convention in its chat template)."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.prompting.prompts import TEMPLATES, get_template
from videolens.testing import make_tiny_llava_onevision, write_clip

from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return vl.HookedVideoLLM.from_pretrained(make_tiny_llava_onevision(tmp_path_factory.mktemp("ov") / "ckpt"),
                                             device="cpu")


def test_the_newline_is_its_own_group_after_the_video(model, tmp_path):
    x = model.prepare(vl.VideoQA(video=str(write_clip(tmp_path / "c.mp4")), **SAMPLE), num_frames=4)
    L = x.layout
    assert L.video_grid == (4, 4, 4) and L.positions("video_newline").tolist() == [int(L.video_positions[-1]) + 1]
    assert L.video.stop == int(L.video_positions[-1]) + 2  # the video block holds the tokens and the newline
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter="hook_embed")
    newline = model.vision.extra["image_newline"]
    assert torch.equal(cache["hook_embed"][0, L.spans["video_newline"].start], newline)
    knocked = vl.knockout.knockout_logits(model, x, "video_newline->last", list(range(model.cfg.n_layers)))
    assert (knocked - model(x)[0, -1]).abs().max() > 1e-6


def test_chat_templates(model, tmp_path):
    assert model.template is TEMPLATES["llava_onevision"]
    x = model.prepare(vl.VideoQA(video=str(write_clip(tmp_path / "c.mp4")), **SAMPLE), num_frames=4)
    assert x.prompt_text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert x.prompt_text.endswith("directly.<|im_end|>\n<|im_start|>assistant\n")
    model.template = get_template("llava_onevision_mvbench")
    try:
        y = model.prepare(x.sample, num_frames=4)
        assert y.prompt_text.endswith("<|im_start|>assistant\nBest option:(") and y.layout.video_grid == (4, 4, 4)
    finally:
        model.template = TEMPLATES["llava_onevision"]
