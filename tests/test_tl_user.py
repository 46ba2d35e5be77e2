"""TransformerLens habits on a video model: nothing runs without its video silently; the bundled
model has a name."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.model import MissingVideoError

SAMPLE = dict(question="What did the person do first?", candidates=["Put down the blanket.", "Took the towel."],
              answer="Took the towel.")


@pytest.fixture(scope="module")
def inputs(tiny_pllava, clip_path):
    return tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))


def test_tokens_without_their_video_raise(tiny_pllava, inputs):
    with pytest.raises(MissingVideoError, match=r"placeholder \(id 390\) at 64 position\(s\) but no video"):
        tiny_pllava(inputs.tokens)
    with pytest.raises(MissingVideoError):
        tiny_pllava(inputs.prompt_text)  # TransformerLens tokenizes the text: one placeholder, no video
    with torch.no_grad():
        video = tiny_pllava(inputs)
        tiny_pllava.allow_missing_video = True  # the explicit opt-out
        try:
            bare = tiny_pllava(inputs.tokens)
        finally:
            tiny_pllava.allow_missing_video = False
        text = tiny_pllava(inputs.tokens[:, :5])  # text without placeholders runs as usual
    assert not torch.allclose(bare, video) and text.shape[1] == 5


def test_bundled_model_by_name_and_hub_ids(tmp_path):
    path = vl.bundled_model_path()
    assert (path / "config.json").exists() and path.name == "tiny-videollm"
    model = vl.HookedVideoLLM.from_pretrained("tiny-videollm", device="cpu")
    assert model.cfg.n_layers == vl.HookedVideoLLM.from_pretrained(path, device="cpu").cfg.n_layers
    with pytest.raises(FileNotFoundError, match="hub download is not supported"):
        vl.HookedVideoLLM.from_pretrained("llava-hf/llava-v1.6-vicuna-7b-hf")
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        vl.HookedVideoLLM.from_pretrained(tmp_path / "nothing-here")


def test_generate_rejects_sampling_arguments(tiny_pllava, inputs):
    text = tiny_pllava.generate(inputs, max_new_tokens=2)
    assert isinstance(text, str)
    for kw in ({"do_sample": True}, {"temperature": 0.7}, {"top_k": 5}):
        with pytest.raises(ValueError, match="decodes greedily"):
            tiny_pllava.generate(inputs, max_new_tokens=2, **kw)


def test_frames_other_than_the_pooling_depth_warn(tiny_pllava, clip_path):
    from videolens.model import FramePoolingWarning

    sample = vl.VideoQA(video=str(clip_path), **SAMPLE)
    with pytest.warns(FramePoolingWarning, match="num_frames=8 sampled frames are pooled into 4 temporal slots"):
        tiny_pllava.prepare(sample, num_frames=8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FramePoolingWarning)
        tiny_pllava.prepare(sample, num_frames=4)  # one sampled frame a slot: no warning
