"""The same checks for every checkpoint family x text backbone (tests/families.py ``CASES``):
load, logits and per-layer residuals against the reference <= 1e-4 in fp32, every hook fires, fast
attention == TransformerLens' plain path, knockout fast engine == full forward, batched == single,
bf16 gives the same answer. Golden outputs of the official code are checked in test_golden_*.py.
"""

from __future__ import annotations

import re

import pytest
import torch

import videolens as vl
from families import CASES
from videolens.testing import write_clip
from videolens.hooked.attention import fast_attention
from videolens.hooked.block import AddcmulGatedMLP, install_fast_blocks
from videolens.prompting.inputs import stack_inputs
from videolens.knockout import get_engine, knockout_logits

TOL = 1e-4
from conftest import SAMPLE  # noqa: E402 (the shared two-option question)
# TransformerLens hooks that only fire under config flags these models do not set
CONDITIONAL = re.compile(r"hook_result|hook_attn_in|hook_[qkv]_input|hook_mlp_in|attn\.hook_rot_|hook_tokens|"
                         r"vision\.hook_pixel_values|vision\.hook_patch_features|hook_pos_embed|hook_attn_out_")


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def case(request, tmp_path_factory, clip_path):
    c = request.param
    ckpt = c.write(tmp_path_factory.mktemp("family") / c.id)
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu", **c.load_kwargs)
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE), num_frames=c.num_frames)
    return c, ckpt, model, inputs


def test_loads_with_its_video_grid(case):
    c, _, model, inputs = case
    assert tuple(inputs.video_embeds.shape[:3]) == c.video_grid
    assert inputs.video_embeds.shape[-1] == model.video_width  # d_model, or with DeepStack levels packed
    assert len(inputs.layout.video_positions) == c.video_grid[0] * c.video_grid[1] * c.video_grid[2]


def test_logits_and_residuals_match_the_reference(case):
    c, ckpt, model, inputs = case
    ref_logits, ref_hidden, ref_norm = c.reference(ckpt, model, inputs)
    with torch.no_grad():
        logits, cache = model.run_with_cache(inputs)
    assert (logits - ref_logits).abs().max() <= TOL
    L = model.cfg.n_layers
    for l in range(L):
        assert (cache[f"blocks.{l}.hook_resid_pre"] - ref_hidden[l]).abs().max() <= TOL, l
    assert (ref_norm(cache[f"blocks.{L - 1}.hook_resid_post"]) - ref_hidden[L]).abs().max() <= TOL


def test_every_hook_fires(case):
    """Every hook point fires in run_with_cache, the vision tower's too when the input keeps its pixels."""
    _, _, model, inputs = case
    with_pixels = model.prepare(inputs.sample, num_frames=inputs.video.num_frames, keep_pixels=True)
    with torch.no_grad():
        logits, cache = model.run_with_cache(with_pixels)
        assert (logits - model(inputs)).abs().max() <= 1e-5
    expected = {n for n in model.hook_dict if not CONDITIONAL.search(n)}
    assert expected - set(cache.keys()) == set()
    assert any(n.startswith("vision.blocks.") for n in expected)
    assert cache["vision.hook_video_embeds"].shape[1:4] == inputs.video_embeds.shape[:3]


def test_fast_attention_equals_the_plain_path(case):
    _, _, model, inputs = case
    with torch.no_grad():
        fast = model(inputs)
        with fast_attention(model, False):
            plain = model(inputs)
    assert (fast - plain).abs().max() <= 1e-5


def test_fast_blocks_run_and_equal_transformerlens_bitwise(case):
    """Every block takes ``OneNormBlock``'s path (ln1 once) and every gated MLP ``AddcmulGatedMLP``'s;
    TransformerLens' own classes give the same logits bit for bit (the MLP biases are zero)."""
    _, _, model, inputs = case
    with torch.no_grad():
        fast = model(inputs)
        assert [b.last_path for b in model.blocks] == ["one_norm"] * model.cfg.n_layers
        assert all(type(b.mlp) is AddcmulGatedMLP for b in model.blocks)
        install_fast_blocks(model, False)
        try:
            plain = model(inputs)
        finally:
            install_fast_blocks(model)
    assert torch.equal(fast, plain)


def test_vision_tower_attention_equals_eager(case):
    """The tower runs its own (SDPA) attention; eager attention, the plain path, gives the same tokens."""
    _, _, model, inputs = case
    cfg = getattr(model.vision.tower, "config", None)
    if cfg is None:
        pytest.skip("this tower has no transformers config")
    pixels = model.vision.pixels(inputs.video.frames)
    with torch.no_grad():
        own = model.vision.encode(pixels)
        before, cfg._attn_implementation = cfg._attn_implementation, "eager"
        try:
            eager = model.vision.encode(pixels)
        finally:
            cfg._attn_implementation = before
    assert (own - eager).abs().max() <= 1e-5


@pytest.mark.parametrize("pairs", ["video->video[cross_frame]", "last->last", "video->question"])
def test_knockout_fast_equals_full(case, pairs):
    _, _, model, inputs = case
    layers = list(range(max(0, model.cfg.n_layers - 2)))  or [0]
    fast = knockout_logits(model, inputs, pairs, layers, method="fast", clean=get_engine("fast").clean(model, inputs))
    full = knockout_logits(model, inputs, pairs, layers, method="full")
    assert (fast - full).abs().max() <= 1e-5
    assert (full - model(inputs)[0, -1]).abs().max() > 1e-6  # the knockout changed something


def test_batched_knockout_conditions_equal_one_by_one(case):
    """Conditions of different windows and pairs in one staggered batch (videolens.knockout.batched)
    give the one-by-one fast engine's logits, with each family's own positions (M-RoPE, LongRoPE...)."""
    from videolens.knockout import knockout_hooks
    from videolens.knockout.engine import FastEngine

    _, _, model, inputs = case
    L = model.cfg.n_layers
    eng = FastEngine()
    clean = eng.clean(model, inputs)
    conds = [(knockout_hooks(model, pair, [0], layout=inputs)[0][1], layers)
             for pair in ("video->video[cross_frame]", "video->last", "question->last")
             for layers in ([0], list(range(1, L)))]
    batched = eng.run_many(model, clean, conds, batch_size=4)
    single = eng.run_many(model, clean, conds)
    assert max(float((a - b).abs().max()) for a, b in zip(batched, single)) <= 1e-5
    assert max(float((a - clean.logits).abs().max()) for a in batched) > 1e-6  # the knockouts change something


def test_batched_equals_single(case, tmp_path):
    c, _, model, inputs = case
    other = write_clip(tmp_path / "other.mp4", seed=3)
    second = model.prepare(vl.VideoQA(video=str(other), **SAMPLE), num_frames=c.num_frames)
    with torch.no_grad():
        batched = model(stack_inputs([inputs, second]))
        singles = torch.cat([model(inputs), model(second)])
    assert (batched - singles).abs().max() <= 1e-5


def test_bf16_gives_the_same_answer(case):
    c, ckpt, model, inputs = case
    m16 = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu", dtype=torch.bfloat16, **c.load_kwargs)
    inp16 = m16.prepare(inputs.sample, num_frames=c.num_frames)
    assert inp16.video_embeds.dtype == torch.bfloat16
    with torch.no_grad():
        l32, l16 = model(inputs)[0, -1], m16(inp16)[0, -1].float()
    err = float((l32 - l16).abs().max())
    assert err < 0.1  # bf16 rounding, not another model
    # the answer is the same wherever fp32 separates it by more than bf16's error (random models
    # have near-flat logits, so a near tie may flip)
    p32 = model.option_logprobs(inputs)
    top2 = p32.topk(2).values
    if float(top2[0] - top2[1]) > 2 * err:
        assert model.answer(inputs) == m16.answer(inp16)
    t2 = l32.topk(2).values
    if float(t2[0] - t2[1]) > 2 * err:
        assert int(l32.argmax()) == int(l16.argmax())
