"""Qwen2.5-VL beyond the shared family suite: the 3-D positions equal transformers' get_rope_index,
the M-RoPE reaches the hooked attention (hook_rot_q), a cross-frame knockout changes the answer and
equals transformers' eager model run with the same float 4-D mask and its own 3-D positions (the test
TransformerLens' Bridge fails: its Qwen2.5-VL attention hooks change nothing), the temporal-patch
error, and generation with the key-value cache."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.hooked.edges import blocked_mask
from videolens.knockout import get_engine, knockout_logits
from videolens.frontend.qwen_vl import mrope_position_ids, patchify_video, seconds_per_slot
from videolens.testing import make_tiny_qwen2_5_vl, write_clip

from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import Qwen2_5_VLForConditionalGeneration

    d = tmp_path_factory.mktemp("qwen")
    ckpt = make_tiny_qwen2_5_vl(d / "ckpt", n_layers=4)
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu")
    x = model.prepare(vl.VideoQA(video=str(write_clip(d / "c.mp4", n_frames=24)), **SAMPLE), num_frames=8)
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    pixels = model.vision.pixels(x.video.frames)
    T, _, H, W = pixels.shape
    kw = dict(input_ids=x.tokens, pixel_values_videos=patchify_video(pixels),
              video_grid_thw=torch.tensor([[T // 2, H // 14, W // 14]]),
              second_per_grid_ts=torch.tensor([seconds_per_slot(x.video, model.vision.preprocess)]),
              mm_token_type_ids=(x.tokens == hf.config.video_token_id).int() * 2)
    return model, x, hf, kw


def _hf_last_logits(hf, kw, blocked=None, layers=()):
    """transformers' forward; on ``layers`` each decoder layer's attention mask is replaced by the
    float 4-D mask (0 allowed, -inf blocked or above the diagonal)."""
    handles = []
    if blocked is not None:
        S = blocked.shape[0]
        allowed = torch.ones(S, S, dtype=torch.bool).tril() & ~blocked
        mask = torch.zeros(S, S).masked_fill(~allowed, float("-inf"))[None, None]
        for l in layers:
            def pre(module, args, kwargs, mask=mask):
                kwargs["attention_mask"] = mask
                return args, kwargs
            handles.append(hf.model.language_model.layers[l].register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with torch.no_grad():
            return hf(**kw).logits[0, -1]
    finally:
        for h in handles:
            h.remove()


def test_positions_equal_transformers_get_rope_index(setup):
    model, x, hf, kw = setup
    ref, _ = hf.model.get_rope_index(kw["input_ids"], kw["mm_token_type_ids"], video_grid_thw=kw["video_grid_thw"],
                                     second_per_grid_ts=kw["second_per_grid_ts"])
    interval = model.vision.temporal_interval(x.video)
    assert interval == pytest.approx(model.vision.tokens_per_second * float(kw["second_per_grid_ts"][0]))
    ours = mrope_position_ids(x.seq_len, int(x.layout.video_positions[0]), x.layout.video_grid, interval)
    assert torch.equal(ours, ref[:, 0])
    assert len(set(ours[0, x.layout.video_positions].tolist())) == x.layout.video_grid[0] > 1  # real time ids


def test_mrope_reaches_the_hooked_attention(setup):
    model, x, _, _ = setup
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter=lambda n: n in ("blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_q"))
    attn = model.blocks[0].attn
    plain = model.mrope.plain
    q = cache["blocks.0.attn.hook_q"]
    S = x.seq_len
    rot_plain = q[..., : attn.cfg.rotary_dim] * plain[1][None, :S, None] + attn.rotate_every_two(q) * plain[0][None, :S, None]
    v = x.layout.video_positions
    assert (cache["blocks.0.attn.hook_rot_q"][0, v] - rot_plain[0, v]).abs().max() > 1e-3  # not the 1-D rotation
    assert (cache["blocks.0.attn.hook_rot_q"][0, : int(v[0])] - rot_plain[0, : int(v[0])]).abs().max() < 1e-5


def test_cross_frame_knockout_changes_the_answer_and_equals_transformers(setup):
    model, x, hf, kw = setup
    n = model.cfg.n_layers
    clean_hf = _hf_last_logits(hf, kw)
    with torch.no_grad():
        clean = model(x)[0, -1]
    assert (clean - clean_hf).abs().max() <= 1e-4
    for pair, layers in (("video->video[cross_frame]", list(range(n))), ("video->last", [1, 2])):
        blocked = blocked_mask(x.layout, [vl.edges.parse_pair(pair)])
        ref = _hf_last_logits(hf, kw, blocked, layers)
        for method in ("fast", "full"):
            ours = knockout_logits(model, x, pair, layers, method=method, clean=get_engine(method).clean(model, x))
            assert (ours - ref).abs().max() <= 1e-4, (pair, method)
        assert (ref - clean_hf).abs().max() > 1e-3, pair  # the knockout really changes the model's output


def test_odd_frame_counts_are_refused_before_compute(setup, tmp_path):
    model, *_ = setup
    with pytest.raises(ValueError, match="do not pair up into temporal patches of 2"):
        model.prepare(vl.VideoQA(video=str(write_clip(tmp_path / "c.mp4")), **SAMPLE), num_frames=5)


def test_generation_continues_the_text_positions_and_plain_text_gets_plain_ones(setup):
    from videolens._tl_compat import new_kv_cache

    model, x, hf, kw = setup
    cache = new_kv_cache(model.cfg, model.device, 1)
    with torch.no_grad():
        first = model(x, past_kv_cache=cache, attention_mask=torch.ones_like(x.tokens))[0, -1]
        t = torch.tensor([[int(first.argmax())]])
        second = model(t, past_kv_cache=cache, attention_mask=torch.ones_like(t))[0, -1]
    longer = dict(kw, input_ids=torch.cat([x.tokens, t], 1),
                  mm_token_type_ids=torch.cat([kw["mm_token_type_ids"], torch.zeros_like(t, dtype=torch.int)], 1))
    assert (second - _hf_last_logits(hf, longer)).abs().max() <= 1e-4  # row S of the tables: max position + 1
    assert model.generate(x, max_new_tokens=1) == model.tokenizer.decode([int(first.argmax())])
    with torch.no_grad():
        model(model.to_tokens("Took the towel.", prepend_bos=False))
    assert model.mrope.current == "plain" and torch.equal(model.blocks[0].attn.rotary_sin.cpu(), model.mrope.plain[0])


def test_cli_flow_on_a_qwen_checkpoint(setup, tmp_path, clip_path):
    """A dataset command on a frame-size-dependent front end records its pixel budget in the run header."""
    import json
    import shutil

    from videolens.cli import main
    from videolens.running.records import read_statuses

    model, *_ = setup
    shutil.copy(clip_path, tmp_path / "a.mp4")
    (tmp_path / "t.json").write_text(json.dumps([dict(video="a.mp4", **SAMPLE)]))
    out = tmp_path / "out"
    assert main(["flow", "--model", model.checkpoint_path, "--data", str(tmp_path / "t.json"), "--video-root",
                 str(tmp_path), "--target", "cross-frame", "--window", "2", "--samples", "all", "--num-frames", "4",
                 "--out", str(out), "--device", "cpu", "--no-progress", "--no-figures"]) == 0
    header = json.loads((out / "records.jsonl").read_text().splitlines()[0])["config"]
    assert header["video_grid"] is None and header["frame_budget"]["max_pixels"] == 56 * 56
    assert list(read_statuses(out / "records.jsonl").values()) == ["ok"]


def test_the_papers_convention_in_the_qwen_chat_template():
    from videolens.prompting.prompts import build_prompt, get_template

    built = build_prompt(get_template("qwen2_5_vl_mvbench"), SAMPLE["question"], SAMPLE["candidates"], "<|video_pad|>")
    assert built.text.startswith("<|im_start|>system\nCarefully watch the video")
    assert "<|vision_start|><|video_pad|><|vision_end|>Question: What did the person do first?\nOptions:\n(A)" in built.text
    assert built.text.endswith("(B) Took the towel. \nOnly give the best option.<|im_end|>\n<|im_start|>assistant\nBest option:(")
