"""Qwen3-VL beyond the shared family suite (tests/families.py): its per-slot 3-D positions and
interleaved M-RoPE equal transformers', the DeepStack additions are hook points of their own
(cached, zero away from the video, the one gap between a block's output and the next block's
input), zeroing them equals transformers' model with DeepStack off, knockouts and the analyses that
resume from a residual stream carry them, the slot timestamps are the processor's, and a tiny
checkpoint answers a real video through the CLI."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.frontend.qwen_vl import MRope, layout_position_ids, patchify_video
from videolens.hooked.edges import blocked_mask
from videolens.knockout import get_engine, knockout_logits
from videolens.testing import make_tiny_qwen3_vl, write_clip

from conftest import SAMPLE  # noqa: E402 (the shared two-option question)
from families import qwen3_vl_reference  # noqa: E402
from test_qwen_vl import _hf_last_logits  # noqa: E402 (transformers' forward with a float 4-D mask)

N_LAYERS = 5
LEVELS = 3  # DeepStack levels of the tiny model: added after blocks 0, 1, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import Qwen3VLForConditionalGeneration

    d = tmp_path_factory.mktemp("qwen3")
    ckpt = make_tiny_qwen3_vl(d / "ckpt", n_layers=N_LAYERS, deepstack=(0, 1, 2), pixels=8 * 64 * 64)
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu")
    x = model.prepare(vl.VideoQA(video=str(write_clip(d / "c.mp4", n_frames=24)), **SAMPLE), num_frames=8)
    hf = Qwen3VLForConditionalGeneration.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    pixels = model.vision.pixels(x.video.frames)
    T, _, H, W = pixels.shape
    kw = dict(input_ids=x.tokens, pixel_values_videos=patchify_video(pixels, 16),
              video_grid_thw=torch.tensor([[T // 2, H // 16, W // 16]]),
              mm_token_type_ids=(x.tokens == hf.config.video_token_id).int() * 2)
    return ckpt, model, x, hf, kw


def test_positions_equal_transformers_get_rope_index(setup):
    _, model, x, hf, kw = setup
    ref, _ = hf.model.get_rope_index(kw["input_ids"], kw["mm_token_type_ids"], video_grid_thw=kw["video_grid_thw"])
    ours = layout_position_ids(x.seq_len, x.layout.video_positions, x.layout.video_grid)
    assert x.layout.video_grid[0] == 4 and torch.equal(ours, ref[:, 0])


def test_interleaved_tables_equal_transformers_rotary_at_the_released_sections():
    """Qwen3-VL-8B's text rotary (head_dim 128, sections [24, 20, 20], interleaved) on mixed 3-D ids."""
    from transformers import Qwen3VLTextConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

    cfg = Qwen3VLTextConfig(hidden_size=4096, num_attention_heads=32, head_dim=128, rope_parameters={
        "rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20], "mrope_interleaved": True})
    theirs = Qwen3VLTextRotaryEmbedding(cfg)
    pos3 = torch.stack([torch.arange(40) // 3, torch.arange(40) % 7 + 3, torch.arange(40) % 5 + 9])
    cos, sin = theirs(torch.zeros(1, dtype=torch.float32), pos3[:, None])
    inv = 1.0 / (5e6 ** (torch.arange(0, 128, 2, dtype=torch.float) / 128))
    plain = (torch.zeros(64, 128), torch.zeros(64, 128))
    our_sin, our_cos = MRope(inv, [24, 20, 20], plain, interleaved=True).tables(pos3, 64)
    assert (our_cos[:40] - cos[0]).abs().max() <= 1e-5 and (our_sin[:40] - sin[0]).abs().max() <= 1e-5
    blocks_sin, _ = MRope(inv, [24, 20, 20], plain).tables(pos3, 64)
    assert (blocks_sin[:40] - sin[0]).abs().max() > 1e-2  # Qwen2.5-VL's consecutive sections are another model


def test_deepstack_additions_are_hook_points_at_the_video_positions(setup):
    _, model, x, _, _ = setup
    assert [n for n in model.hook_dict if n.endswith("hook_deepstack")] == [
        f"blocks.{l}.hook_deepstack" for l in range(LEVELS)]
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    video = x.layout.video_positions
    d = model.cfg.d_model
    packed = x.video_embeds.reshape(-1, x.video_embeds.shape[-1])
    for l in range(LEVELS):
        add = cache[f"blocks.{l}.hook_deepstack"][0]
        assert torch.equal(add[video], packed[:, d * (l + 1): d * (l + 2)])  # level l, frame/row/col order
        others = torch.ones(x.seq_len, dtype=torch.bool)
        others[video] = False
        assert add[others].abs().max() == 0
        gap = cache[f"blocks.{l + 1}.hook_resid_pre"] - cache[f"blocks.{l}.hook_resid_post"]
        assert (gap - cache[f"blocks.{l}.hook_deepstack"]).abs().max() <= 1e-5
    last = cache[f"blocks.{LEVELS + 1}.hook_resid_pre"] - cache[f"blocks.{LEVELS}.hook_resid_post"]
    assert last.abs().max() == 0  # above the DeepStack levels the residual stream is TransformerLens' own


def test_zeroing_deepstack_through_its_hooks_equals_transformers_without_deepstack(setup):
    ckpt, model, x, _, _ = setup
    zero = [(f"blocks.{l}.hook_deepstack", lambda act, hook: torch.zeros_like(act)) for l in range(LEVELS)]
    with torch.no_grad():
        ours = model.run_with_hooks(x, fwd_hooks=zero)
        clean = model(x)
    ref, _, _ = qwen3_vl_reference(ckpt, model, x, deepstack=False)
    assert (ours - ref).abs().max() <= 1e-4
    assert (clean - ref).abs().max() > 1e-3  # DeepStack matters in this model


def test_cross_frame_knockout_equals_transformers(setup):
    """Blocked cross-frame edges in the DeepStack layers: both engines against transformers' eager
    model with the same float 4-D mask (the fast engine recomputes rows from inside the video, so its
    DeepStack additions must land on the right rows)."""
    _, model, x, hf, kw = setup
    for pair, layers in (("video->video[cross_frame]", [0, 1]), ("video->last", [1, 2, 3])):
        ref = _hf_last_logits(hf, kw, blocked_mask(x.layout, [vl.edges.parse_pair(pair)]), layers)
        for method in ("fast", "full"):
            assert (knockout_logits(model, x, pair, layers, method=method, clean=get_engine(method).clean(model, x)) - ref).abs().max() <= 1e-4, (pair, method)
        assert (ref - _hf_last_logits(hf, kw)).abs().max() > 1e-3, pair


def test_a_residual_stream_resumed_below_the_deepstack_layers_must_be_fed(setup):
    _, model, x, _, _ = setup
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter="blocks.1.hook_resid_pre")
        resid = cache["blocks.1.hook_resid_pre"]
        with pytest.raises(ValueError, match=r"model\.deepstack\.feeding\(inputs\)"):
            model(resid, start_at_layer=1)
        with model.deepstack.feeding(x):
            resumed = model(resid, start_at_layer=1)
        model(cache["blocks.1.hook_resid_pre"], start_at_layer=LEVELS)  # above them nothing is added: no error
    assert (resumed - model(x)).abs().max() <= 1e-5


def test_span_patching_batched_equals_plain_through_the_deepstack_layers(setup):
    from videolens.patching import patch_spans
    from videolens.patching.corruptions import reverse_frames

    _, model, x, _, _ = setup
    letter = x.option_token_ids[x.layout.true_letter]

    def metric(logits):
        return logits[:, -1, letter]

    corrupted = reverse_frames(x)
    kw = dict(activation="resid_pre", layers=[0, 1, 2, 3])
    plain = patch_spans(model, corrupted, x, metric, method="plain", **kw)
    batched = patch_spans(model, corrupted, x, metric, method="batched", **kw)
    assert (plain.values - batched.values).abs().max() <= 1e-4
    assert plain.values.abs().max() > 0


def test_pruned_inference_drops_the_video_inside_the_deepstack_layers(setup):
    """The video rows leave after layer 1; the DeepStack addition of block 2 must find no video row
    among the kept ones (the pruned forward names its rows)."""
    from videolens.pathways import pruned as P
    from videolens.pathways.hooks import PathwayMasker

    _, model, x, _, _ = setup
    spec = {"name": "early", "n_layers": N_LAYERS, "kept": {"cross_frame": [[0, 0]], "video_to_question": [[0, 1]],
                                                            "question_to_last": [[1, 4]]},
            "always_blocked": {"video_to_last": "all", "video_to_video": {"after": "video_to_question"}}}
    plan = P.prunable(spec).plan(N_LAYERS)
    assert P.prune_layer(x.layout, plan) == 2 < LEVELS
    with torch.no_grad():
        ref = model.run_with_hooks(x, fwd_hooks=PathwayMasker(x.layout, plan).fwd_hooks())[:, -1:]
    assert (P.pruned_logits(model, x, plan) - ref).abs().max() <= 1e-4


def test_slot_times_are_the_processors():
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    from videolens.frontend.qwen_vl import processor_slot_times

    for indices in ([0, 7, 15, 22, 30, 37], [0, 9, 18, 27, 36]):  # an odd count repeats the last frame
        theirs = Qwen3VLProcessor._calculate_timestamps(None, list(indices), 29.97, 2)
        assert processor_slot_times(indices, 29.97, 2) == pytest.approx(theirs, abs=1e-12)


def test_prompt_writes_one_timestamped_block_per_slot(setup):
    _, model, x, _, _ = setup
    times = model.vision.slot_times(x.video, x.layout.video_grid[0])
    for t in times:
        assert f"<{t:.1f} seconds><|vision_start|><image><|vision_end|>" in x.prompt_text
    assert x.prompt_text.count("<|vision_start|>") == x.layout.video_grid[0]


def test_qwen3_vl_answers_a_real_video_through_the_cli(tmp_path, cockatoo):
    from conftest import assert_answers_through_the_cli

    assert_answers_through_the_cli(make_tiny_qwen3_vl(tmp_path / "q3"), cockatoo)


def test_the_moe_variant_is_refused_in_one_line(tmp_path):
    from weights_conversion import UnknownFamilyError, family_for_config

    with pytest.raises(UnknownFamilyError, match="qwen3_vl_moe") as info:
        family_for_config({"model_type": "qwen3_vl_moe"}, tmp_path)
    assert "\n" not in str(info.value)



def test_a_deep_copy_adds_its_own_deepstack_levels(setup):
    import copy

    _, model, x, _, _ = setup
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))
        _, cache = twin.run_with_cache(x, names_filter="blocks.0.hook_deepstack")
    assert "blocks.0.hook_deepstack" in cache  # the copy's blocks fire the copy's hook points
