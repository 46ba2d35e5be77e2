"""Knockout building blocks: windows, targets as data, masks, hooks and their errors."""

from __future__ import annotations

import pytest
import torch

from videolens.hooked.edges import blocked_mask

from videolens.hooked.edges import EdgePair, EmptyRowError
from videolens.knockout import (
    TARGETS, KnockoutHook, Target, UnknownTargetError, get_target, knockout_hooks,
    layer_window, register_target,
)



@pytest.mark.parametrize("centre,window,n,expected", [
    (0, 9, 32, range(0, 5)), (4, 9, 32, range(0, 9)), (10, 9, 32, range(6, 15)), (31, 9, 32, range(27, 32)),
    (28, 9, 32, range(24, 32)), (3, 1, 8, range(3, 4)), (3, 2, 8, range(3, 5)), (0, 8, 8, range(0, 5)),
    (7, 8, 8, range(4, 8)), (4, 8, 8, range(1, 8)),
])
def test_layer_window_is_centred_and_clipped(centre, window, n, expected):
    assert layer_window(centre, window, n) == list(expected)


@pytest.mark.parametrize("centre,window,n,msg", [(0, 9, 8, "larger than the model"), (0, 0, 8, "positive"),
                                                 (8, 3, 8, "out of range")])
def test_layer_window_errors(centre, window, n, msg):
    with pytest.raises(ValueError, match=msg):
        layer_window(centre, window, n)


def test_paper_targets_are_data():
    labels = {name: [p.label for p in t.pairs] for name, t in TARGETS.items()}
    assert labels["cross-frame"] == ["cross-frame"]
    assert TARGETS["cross-frame"].pairs[0] == EdgePair("video", "video", "cross_frame", name="cross-frame")
    assert labels["vql-to-ql"] == ["video->question", "video->last", "question->last", "last->last"]
    assert labels["question-and-options-to-last"] == [
        "non_option_question->last", "true_option->last", "false_options->last"]
    assert labels["vq-to-true-opt"] == [
        "video->non_option_question", "non_option_question->true_option", "video->true_option"]


def test_unknown_target_lists_known_ones():
    with pytest.raises(UnknownTargetError) as err:
        get_target("cross_frames")
    for name in TARGETS:
        assert name in str(err.value)


def test_register_and_adhoc_targets():
    t = register_target(Target("test-video-to-last", ("video->last",), "test"), overwrite=True)
    assert get_target("test-video-to-last") is t
    with pytest.raises(ValueError, match="exists"):
        register_target(Target("test-video-to-last", ("video->last",)))
    adhoc = get_target(["video->last", "question->last"])
    assert [p.label for p in adhoc.pairs] == ["video->last", "question->last"]
    TARGETS.pop("test-video-to-last")


def test_cross_frame_mask_matches_frames(inputs):
    L = inputs.layout
    mask = blocked_mask(L, TARGETS["cross-frame"].pairs)
    expected = torch.zeros_like(mask)
    for i, fq in enumerate(L.frames):
        for fk in L.frames[:i]:
            expected[fq.start:fq.stop, fk.start:fk.stop] = True
    assert torch.equal(mask, expected)
    assert not mask.diagonal().any() and not mask.triu().any()


def test_frames_before_after_groups(inputs):
    L = inputs.layout
    before = L.positions("frames_before:2")
    after = L.positions("frames_after:1")
    assert before.tolist() == list(range(L.frames[0].start, L.frames[1].stop))
    assert after.tolist() == list(range(L.frames[2].start, L.frames[-1].stop))
    # frames before frame 2 -> frame 2 is cross-frame restricted to one query frame
    m = blocked_mask(L, "frames_before:2->frame:2")
    cf = blocked_mask(L, TARGETS["cross-frame"].pairs)
    rows = L.frames[2].slice
    assert torch.equal(m[rows], cf[rows]) and m.sum() == cf[rows].sum()


def test_last_to_last_blocks_the_diagonal(inputs, tiny_pllava):
    """The official code blocks the last token's edge to itself; "keep" (videolens' earlier rule)
    never blocks a self edge, so last->last is then empty."""
    S = inputs.seq_len
    m = blocked_mask(inputs.layout, "last->last")
    assert m.sum() == 1 and bool(m[S - 1, S - 1])
    assert blocked_mask(inputs.layout, "last->last", self_edges="keep").sum() == 0
    vv = blocked_mask(inputs.layout, "video->video")
    pos = inputs.layout.video_positions
    assert bool(vv[pos, pos].all())  # video->video: every video token's own edge too
    assert not blocked_mask(inputs.layout, "video->video", self_edges="keep")[pos, pos].any()
    with pytest.raises(ValueError, match="self_edges"):
        blocked_mask(inputs.layout, "last->last", self_edges="never")
    # the blocked diagonal changes the answer distribution; both engines agree on it
    from videolens.knockout import get_engine, knockout_logits

    fast = knockout_logits(tiny_pllava, inputs, "last->last", layers=[0, 1], method="fast",
                           clean=get_engine("fast").clean(tiny_pllava, inputs))
    full = knockout_logits(tiny_pllava, inputs, "last->last", layers=[0, 1], method="full")
    clean = tiny_pllava(inputs)[0, -1]
    assert torch.allclose(fast, full, atol=1e-5, rtol=0)
    assert not torch.allclose(fast, clean, atol=1e-5, rtol=0)


def test_hook_sets_exactly_the_mask_to_minus_inf():
    S, H = 7, 3
    mask = torch.zeros(S, S, dtype=torch.bool)
    mask[4, 1] = mask[6, 0] = mask[6, 5] = True
    scores = torch.randn(2, H, S, S).tril()
    out = KnockoutHook(mask)(scores)
    assert torch.equal(torch.isinf(out), mask.expand(2, H, S, S))
    assert torch.equal(out[~torch.isinf(out)], scores[~mask.expand(2, H, S, S)])
    # incremental forward: the last Q query rows against all keys
    Q = 3
    part = KnockoutHook(mask)(scores[:, :, -Q:])
    assert torch.equal(part, out[:, :, -Q:])
    # chosen heads only
    out_h = KnockoutHook(mask, heads=[1])(scores)
    assert torch.isinf(out_h[:, 1]).sum() == 2 * 3 and not torch.isinf(out_h[:, [0, 2]]).any()
    with pytest.raises(ValueError, match="positions"):
        KnockoutHook(mask)(torch.randn(1, H, S + 1, S + 1))


def test_knockout_hooks_errors(tiny_pllava, inputs):
    S = inputs.seq_len
    emptying = torch.ones(S, S, dtype=torch.bool).tril()
    emptying[1:] = False  # row 0: its only key (itself) blocked
    with pytest.raises(EmptyRowError):
        knockout_hooks(tiny_pllava, emptying, layers=[0])
    diag = torch.zeros(S, S, dtype=torch.bool)
    diag[5, 5] = True  # a self edge may be blocked (official) as long as the row keeps a key
    assert knockout_hooks(tiny_pllava, diag, layers=[0])[0][1].n_edges == 1
    with pytest.raises(ValueError, match="layout"):
        knockout_hooks(tiny_pllava, "video->last", layers=[0])
    with pytest.raises(ValueError, match="out of range"):
        knockout_hooks(tiny_pllava, "video->last", layers=[tiny_pllava.cfg.n_layers], layout=inputs)
    with pytest.raises(ValueError, match="heads"):
        knockout_hooks(tiny_pllava, "video->last", layers=[0], heads=[99], layout=inputs)
    with pytest.raises(KeyError, match="unknown token group"):
        knockout_hooks(tiny_pllava, "videos->last", layers=[0], layout=inputs)


def test_knockout_hooks_names_and_effect(tiny_pllava, inputs):
    hooks = knockout_hooks(tiny_pllava, ["video->last"], layers=range(3), layout=inputs)
    assert [n for n, _ in hooks] == [f"blocks.{l}.attn.hook_attn_scores" for l in range(3)]
    seen = {}

    def grab(pattern, hook):
        seen[hook.name] = pattern

    with torch.no_grad():
        tiny_pllava.run_with_hooks(inputs, fwd_hooks=hooks + [("blocks.1.attn.hook_pattern", grab)])
    pattern = seen["blocks.1.attn.hook_pattern"][0]  # [head, query, key]
    video = inputs.layout.video_positions
    assert torch.all(pattern[:, -1, video] == 0)
    assert torch.allclose(pattern[:, -1].sum(-1), torch.ones(pattern.shape[0]))


def test_mean_ci_is_student_t_everywhere():
    """One interval rule for every figure (videolens.stats): Student t, NaN/None dropped."""
    import numpy as np
    from scipy import stats

    from videolens.stats import mean_ci

    xs = [1.0, 2.0, 4.0, None, float("nan")]
    m, lo, hi = mean_ci(xs)
    half = stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / np.sqrt(3)
    assert m == pytest.approx(7 / 3) and hi - m == pytest.approx(half) and m - lo == pytest.approx(half)
    assert mean_ci([5.0]) == (5.0, 5.0, 5.0)
    arr = np.array([[1.0, 2.0], [3.0, 4.0], [2.0, np.nan]])
    mean, low, high = mean_ci(arr)
    assert mean.tolist() == pytest.approx([2.0, 3.0])
    assert (high - mean)[1] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([2, 4], ddof=1) / np.sqrt(2))


def test_one_layer_rule_everywhere(tiny_pllava, inputs):
    """knockout hooks, attention views and the logit lens read layer selections one way."""
    from videolens.layers import resolve_layers
    from videolens.lens import resolve_lens_layers
    from videolens.viz import video_attention

    n = tiny_pllava.cfg.n_layers
    assert resolve_layers("0-1,-1", 8) == [0, 1, 7] and resolve_layers(range(2), 8) == [0, 1]
    assert resolve_layers(None, 3) == [0, 1, 2] and resolve_layers("all", 2) == [0, 1]
    hooks = knockout_hooks(tiny_pllava, "video->last", layers=-1, layout=inputs)
    assert [name for name, _ in hooks] == [f"blocks.{n - 1}.attn.hook_attn_scores"]
    assert video_attention(tiny_pllava, inputs, query="last", layers=-1).layers == [n - 1]
    assert resolve_lens_layers(-1, n) == [n]  # lens layers: one more, after the last block
    for bad in (n, -(n + 1), "x"):
        with pytest.raises(ValueError, match="layers"):
            knockout_hooks(tiny_pllava, "video->last", layers=bad, layout=inputs)
