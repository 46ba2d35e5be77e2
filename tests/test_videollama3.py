"""VideoLLaMA3 beyond the shared family suite: the budgeted frame size against the official rule's
numbers, the frame sampler's formula, transformers parity at the paper's 8 x 12 x 12 budget on a real
720p video, the token groups (video block with timestamps, frames split at the commas), and bad
input (unsupported compression, wrong budget, a config without its vision encoder, a video whose
tokens do not fit the layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import videolens as vl
from families import videollama3_reference
from videolens.frontend.navit import PAPER_MAX_VISUAL_TOKENS, resize_for_budget
from videolens.testing import make_tiny_videollama3, write_clip
from videolens.sources.video import videollama3_frames
from weights_conversion import CheckpointError

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_videollama3(tmp_path_factory.mktemp("vl3") / "original", max_pos=2048)


@pytest.mark.parametrize("hw,frames,budget,expected", [
    ((720, 1280), 8, PAPER_MAX_VISUAL_TOKENS, (252, 448)),  # 9 x 16 merged tokens a frame: 1152 in all
    ((720, 1280), 8, 128, (84, 168)),  # the golden's budget: under the minimum, grown back (3 x 6 tokens)
    ((480, 640), 16, PAPER_MAX_VISUAL_TOKENS, (196, 252)),  # beta = sqrt(307200 / 56448), floored: 7 x 9
    ((48, 64), 4, 16, (56, 56)),
])
def test_frame_size_follows_the_official_rule(hw, frames, budget, expected):
    assert resize_for_budget(*hw, frames, max_tokens=budget, min_tokens=16 if budget > 16 else 4) == expected
    h, w = expected
    assert h % 28 == 0 and w % 28 == 0


def test_sampler_formula():
    pts = np.arange(280) / 20.0  # 14 s at 20 fps
    idx, stamps = videollama3_frames(pts, 14.0, 8, 2.6, 11.6)
    n = 180  # frames with 2.6 <= t < 11.6
    assert idx.tolist() == (52 + np.linspace(0, n - 1, 8, dtype=int)).tolist()
    assert stamps.tolist() == pytest.approx(np.linspace(2.6, 11.6, n)[np.linspace(0, n - 1, 8, dtype=int)].tolist())
    idx, stamps = videollama3_frames(np.arange(5) / 5.0, 1.0, 8)  # fewer frames than asked: all of them, once
    assert idx.tolist() == [0, 1, 2, 3, 4] and stamps[-1] == 1.0


@pytest.mark.skipif(not (VIDEOS / "cockatoo.mp4").exists(), reason="../shared/data/videos is absent")
def test_parity_with_transformers_at_the_paper_budget(ckpt):
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu")  # max_visual_tokens: the paper's 1152
    x = model.prepare(vl.VideoQA(video=str(VIDEOS / "cockatoo.mp4"), start=2.6, end=11.6, **SAMPLE), num_frames=8)
    assert x.layout.video_grid == (8, 9, 16) and len(x.layout.video_positions) == PAPER_MAX_VISUAL_TOKENS
    ref_logits, ref_hidden, _ = videollama3_reference(ckpt, model, x)
    with torch.no_grad():
        logits, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_resid_pre"))
    assert (logits - ref_logits).abs().max() <= 1e-4
    for l in range(model.cfg.n_layers):
        assert (cache[f"blocks.{l}.hook_resid_pre"] - ref_hidden[l]).abs().max() <= 1e-4, l


def test_token_groups_hold_the_frame_text(ckpt, tmp_path):
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu", max_visual_tokens=16)
    x = model.prepare(vl.VideoQA(video=str(write_clip(tmp_path / "c.mp4")), **SAMPLE), num_frames=4)
    L, text = x.layout, x.prompt_text
    assert text.startswith("<|im_start|>user\nTime 0.0s:<image>,Time ")
    video = L.positions("video")
    assert len(video) > len(L.video_positions) and set(L.video_positions.tolist()) < set(video.tolist())
    frames = [L.positions(f"frame:{i}") for i in range(4)]
    assert torch.equal(torch.cat(frames), video)  # the frames partition the video block
    tok = model.tokenizer
    assert tok.decode(x.tokens[0, frames[1][:1]]).strip() == ","  # frame i >= 1 starts at its comma
    lookup = L.frame_lookup()
    assert (lookup[video] >= 0).all() and (lookup[L.positions("question")] == -1).all()


@pytest.mark.parametrize("change,match", [
    ({"token_compression": True}, "token compression"),
    ({"max_visual_tokens": 0}, "max_visual_tokens must be a positive integer"),
    ({"vision_encoder_config": None, "vision_encoder": "/somewhere/siglip"}, "vision_encoder_config must be given inline"),
    ({"mm_projector_type": "linear"}, "mm_projector_type 'linear' is not supported"),
])
def test_bad_checkpoints_get_one_clear_error(ckpt, tmp_path, change, match):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg.update(change)
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        vl.HookedVideoLLM.from_pretrained(bad, device="cpu")


def test_a_video_that_does_not_fit_the_layout_is_refused(ckpt, tmp_path):
    import dataclasses

    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu", max_visual_tokens=16)
    x = model.prepare(vl.VideoQA(video=str(write_clip(tmp_path / "c.mp4")), **SAMPLE), num_frames=4, keep_pixels=True)
    wide = model.prepare(vl.VideoQA(video=str(write_clip(tmp_path / "w.mp4", size=(48, 160))), **SAMPLE),
                         num_frames=4, keep_pixels=True)
    assert wide.layout.video_grid != x.layout.video_grid
    with pytest.raises(ValueError, match="must keep the shape"):
        x.with_video_embeds(wide.video_embeds)
    with pytest.raises(ValueError, match="video tokens .* but the prompt's layout has"):
        model(dataclasses.replace(x, pixel_values=wide.pixel_values))


QWEN = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers" / "qwen3"


@pytest.mark.skipif(not (QWEN / "tokenizer.json").exists(), reason="../shared/tokenizers/qwen3 is absent")
def test_layout_on_the_real_qwen_vocabulary():
    """The Qwen2 base vocabulary plus VideoLLaMA3's added tokens (official train.py): the official
    groups fall out of the tokenizer's offsets (each frame after the first opens with the comma token
    11, the video block ends before the newline 198, letters are single tokens after the prompt)."""
    from transformers import PreTrainedTokenizerFast

    from videolens.prompting.inputs import tokenize_prompt
    from videolens.prompting.prompts import TEMPLATES

    tok = PreTrainedTokenizerFast(tokenizer_file=str(QWEN / "tokenizer.json"))
    tok.add_tokens(["<image>", "<|stream_start|>", "<|stream_end|>"], special_tokens=True)
    image = tok.convert_tokens_to_ids("<image>")
    tp = tokenize_prompt(tok, TEMPLATES["videollama3"], "What did the person do first?",
                         ["Put down the blanket.", "Took the towel."], image, (3, 2, 2), "A", [2.6, 3.9, 5.2])
    ids, L = tp.tokens[0], tp.layout
    assert tok.decode(ids[:3]) == "<|im_start|>user\n" and int(ids[L.video.stop]) == 198
    for i in (1, 2):
        assert int(ids[L.frames[i].start]) == 11
    assert tok.decode(ids[L.frames[0].slice]) == "Time 2.6s:" + "<image>" * 4
    assert tok.decode(ids[L.positions("non_option_question")]).strip() == "What did the person do first?"
    assert tok.decode(ids[L.true_option.slice]) == "(A) Put down the blanket.\n"  # ".\n" is one Qwen token
    assert tp.option_token_ids == {"A": tok.convert_tokens_to_ids("A"), "B": tok.convert_tokens_to_ids("B")}
    assert tok.decode(ids[-2:]) == "assistant\n"


def test_cli_flow_with_a_token_budget(ckpt, tmp_path):
    import shutil

    from videolens.cli import main
    from videolens.running.records import read_statuses

    shutil.copy(write_clip(tmp_path / "c.mp4"), tmp_path / "a.mp4")
    (tmp_path / "t.json").write_text(json.dumps([dict(video="a.mp4", **SAMPLE)]))
    out = tmp_path / "out"
    assert main(["flow", "--model", str(ckpt), "--max-visual-tokens", "16", "--num-frames", "4", "--data",
                 str(tmp_path / "t.json"), "--video-root", str(tmp_path), "--target", "cross-frame", "--window", "2",
                 "--samples", "all", "--out", str(out), "--device", "cpu", "--no-progress", "--no-figures"]) == 0
    header = json.loads((out / "records.jsonl").read_text().splitlines()[0])["config"]
    assert header["frame_budget"]["max_tokens"] == 16 and list(read_statuses(out / "records.jsonl").values()) == ["ok"]
