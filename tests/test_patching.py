"""Span-level activation patching, path patching, metrics and layout-preserving corruptions."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.patching.corruptions import (
    LayoutMismatchError,
    check_same_layout,
    counterfactual_question,
    replace_frame,
    reverse_frames,
    shuffle_frames,
    shuffled_order,
)
from videolens.patching import (
    Final,
    Head,
    Patch,
    Span,
    logit_diff,
    normalised,
    option_prob,
    patch_groups,
    patch_spans,
    path_patch,
    path_patch_heads,
    run_with_patches,
)

from conftest import DIRECTION_CANDIDATES as CANDIDATES, DIRECTION_QUESTION as QUESTION  # noqa: E402
ACTS = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z"]


@pytest.fixture(scope="module")
def model(tiny_pllava):
    return tiny_pllava


@pytest.fixture(scope="module")
def clean(direction_inputs):
    return direction_inputs


@pytest.fixture(scope="module")
def corrupted(clean):
    return reverse_frames(clean)


@pytest.fixture(scope="module")
def runs(model, clean, corrupted):
    with torch.no_grad():
        lc, cc = model.run_with_cache(clean)
        lx, cx = model.run_with_cache(corrupted)
    return lc, cc, lx, cx


# ---- corruptions ---------------------------------------------------------------------------
def test_reverse_keeps_layout_and_changes_video(clean, corrupted):
    assert corrupted.layout == clean.layout and torch.equal(corrupted.tokens, clean.tokens)
    check_same_layout(clean, corrupted)
    assert not torch.allclose(corrupted.video_embeds, clean.video_embeds)
    T = clean.video_embeds.shape[0]
    for i in range(T):
        assert torch.equal(corrupted.video_embeds[i], clean.video_embeds[T - 1 - i])
    assert torch.equal(reverse_frames(corrupted).video_embeds, clean.video_embeds)


def test_reverse_changes_the_runs_video_embeddings(model, clean, runs):
    _, cc, _, cx = runs
    a, b = cc["hook_embed"][0, clean.layout.video_positions], cx["hook_embed"][0, clean.layout.video_positions]
    assert not torch.allclose(a, b)
    text = torch.ones(clean.seq_len, dtype=torch.bool)
    text[clean.layout.video_positions] = False
    assert torch.equal(cc["hook_embed"][0, text], cx["hook_embed"][0, text])


def test_pixel_reversal_matches_embedding_reversal(model, clean):
    # tiny PLLaVA: per-frame CLIP, then 8 frames -> 4 slots by averaging aligned pairs
    px = reverse_frames(clean, level="pixels", model=model)
    assert torch.allclose(px.video_embeds, reverse_frames(clean).video_embeds, atol=1e-5)
    assert (px.video.frames == clean.video.frames[::-1]).all()
    with pytest.raises(ValueError, match="model"):
        reverse_frames(clean, level="pixels")


def test_shuffle_and_replace(clean):
    T = clean.video_embeds.shape[0]
    order = shuffled_order(T, seed=3)
    assert sorted(order.tolist()) == list(range(T)) and order.tolist() != list(range(T))
    assert torch.equal(order, shuffled_order(T, seed=3))
    sh = shuffle_frames(clean, seed=3)
    assert torch.equal(sh.video_embeds, clean.video_embeds[order]) and sh.layout == clean.layout
    rp = replace_frame(clean, 2)
    assert torch.equal(rp.video_embeds[2], clean.video_embeds[1])
    keep = [i for i in range(T) if i != 2]
    assert torch.equal(rp.video_embeds[keep], clean.video_embeds[keep])
    z = replace_frame(clean, -1, torch.zeros(clean.video_embeds.shape[1:]))
    assert float(z.video_embeds[-1].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="shape"):
        replace_frame(clean, 0, torch.zeros(3))
    with pytest.raises(ValueError, match="out of range"):
        replace_frame(clean, T)


def test_counterfactual_question(model, clean):
    cf = counterfactual_question(model, clean, QUESTION.replace("purple", "person"))
    check_same_layout(clean, cf)
    assert not torch.equal(cf.tokens, clean.tokens)
    assert int((cf.tokens != clean.tokens).sum()) == 1
    assert cf.video_embeds is clean.video_embeds
    with pytest.raises(LayoutMismatchError, match="question"):
        counterfactual_question(model, clean, "What is the bird doing?")


# ---- metrics ----------------------------------------------------------------------------
def test_metrics(model, clean, runs):
    lc = runs[0]
    ids = clean.option_token_ids
    last = lc[0, -1]
    want = last[ids["B"]] - (last[ids["A"]] + last[ids["C"]]) / 2
    assert torch.allclose(logit_diff(clean)(lc), want[None], atol=1e-5)
    assert torch.allclose(logit_diff(clean, "A", "C")(lc), (last[ids["A"]] - last[ids["C"]])[None], atol=1e-5)
    assert abs(float(option_prob(clean)(lc)) - model.option_probs(clean)["B"]) < 1e-6
    m = normalised(logit_diff(clean), 2.0, 1.0)
    assert torch.allclose(m(lc), logit_diff(clean)(lc) - 1.0)
    with pytest.raises(KeyError):
        logit_diff(clean, "Z")
    with pytest.raises(ValueError):
        normalised(logit_diff(clean), 1.0, 1.0)


# ---- activation patching -------------------------------------------------------------------
def test_groups(clean):
    g = patch_groups(clean.layout, "default")
    T = clean.layout.n_frames
    assert list(g)[:T] == [f"frame:{i}" for i in range(T)]
    assert list(g)[T:] == ["non_option_question", "option:A", "option:B", "option:C", "last"]
    assert torch.equal(g["frame:1"], clean.layout.frames[1].positions())
    assert list(patch_groups(clean.layout, "all")) == ["all"]
    assert len(patch_groups(clean.layout, "positions")) == clean.seq_len
    assert list(patch_groups(clean.layout, ["frames", "last"]))[-1] == "last"
    with pytest.raises(KeyError):
        patch_groups(clean.layout, ["nowhere"])


@pytest.mark.parametrize("activation", [a if a in ("resid_pre", "z") else pytest.param(a, marks=pytest.mark.slow)
                                        for a in ACTS])  # two by default, every activation under -m slow
def test_patching_a_run_into_itself_changes_nothing(model, clean, runs, activation):
    lc, cc, _, _ = runs
    metric = logit_diff(clean)
    res = patch_spans(model, clean, cc, metric, activation=activation, groups="default")
    assert torch.allclose(res.values, torch.full_like(res.values, float(metric(lc))), atol=1e-5)


def test_patching_every_position_reproduces_the_source(model, clean, corrupted, runs):
    lc, cc, lx, _ = runs
    metric = logit_diff(clean)
    assert abs(float(metric(lc)) - float(metric(lx))) > 1e-5  # the corruption matters
    res = patch_spans(model, corrupted, cc, metric, activation="resid_pre", groups="all")
    assert res.values.shape == (model.cfg.n_layers, 1)
    assert torch.allclose(res.values, torch.full_like(res.values, float(metric(lc))), atol=1e-5)
    # the embeddings and every layer's attention and MLP output, at every position: the clean logits
    layers = range(model.cfg.n_layers)
    patches = [Patch("embed", 0, "all")] + [Patch(a, l, "all") for l in layers for a in ("attn_out", "mlp_out")]
    assert torch.allclose(run_with_patches(model, corrupted, cc, patches), lc, atol=1e-4)
    # same with every head's output (hook_z) instead of the attention output
    patches = [Patch("embed", 0, "all")] + [Patch(a, l, "all") for l in layers for a in ("z", "mlp_out")]
    assert torch.allclose(run_with_patches(model, corrupted, cc, patches), lc, atol=1e-4)
    # without the embeddings the residual stream keeps the corrupted video: not the clean run
    out = run_with_patches(model, corrupted, cc, patches[1:])
    assert not torch.allclose(out, lc, atol=1e-4)


@pytest.mark.parametrize("activation,layers", [("resid_pre", None), ("mlp_out", [1, 2]), ("z", [0, 2])])
def test_batched_equals_transformer_lens_plain(model, clean, corrupted, runs, activation, layers):
    cc = runs[1]
    metric = logit_diff(clean)
    fast = patch_spans(model, corrupted, cc, metric, activation=activation, layers=layers, batch_size=5)
    plain = patch_spans(model, corrupted, cc, metric, activation=activation, layers=layers, method="plain")
    assert torch.allclose(fast.values, plain.values, atol=1e-5)
    assert fast.to_frame().equals(plain.to_frame()) or torch.allclose(
        torch.tensor(fast.to_frame()["value"].values), torch.tensor(plain.to_frame()["value"].values), atol=1e-5
    )
    # the patches do something: not every entry equals the unpatched corrupted run
    lx = runs[2]
    assert (fast.values - float(metric(lx))).abs().max() > 1e-6


def test_result_shapes_and_frame(model, clean, corrupted, runs):
    res = patch_spans(model, corrupted, runs[1], logit_diff(clean), activation="z", layers=[1], heads=[0, 3],
                      groups="frames")
    T = clean.layout.n_frames
    assert res.values.shape == (1, T, 2)
    df = res.to_frame()
    assert list(df.columns) == ["layer", "group", "head", "group_name", "value"]
    assert len(df) == T * 2 and set(df["group_name"]) == {f"frame:{i}" for i in range(T)}
    row = df[(df["group_name"] == "frame:2") & (df["head"] == 3)].iloc[0]
    assert abs(row.value - float(res.values[0, 2, 1])) < 1e-6
    # the entry equals a hand-made patch of that head on that frame
    out = run_with_patches(model, corrupted, runs[1], [Patch("z", 1, "frame:2", head=3)])
    assert abs(float(logit_diff(clean)(out)) - row.value) < 1e-5


def test_patching_errors(model, clean, runs):
    cc = runs[1]
    with pytest.raises(KeyError, match="activation"):
        patch_spans(model, clean, cc, logit_diff(clean), activation="q_proj")
    with pytest.raises(ValueError, match="head"):
        patch_spans(model, clean, cc, logit_diff(clean), activation="resid_pre", heads=[0])
    with pytest.raises(ValueError, match="layers"):
        patch_spans(model, clean, cc, logit_diff(clean), layers=[7])
    with pytest.raises(ValueError, match="method"):
        patch_spans(model, clean, cc, logit_diff(clean), method="fast")


# ---- path patching ----------------------------------------------------------------------------
def test_path_patching_a_run_into_itself_changes_nothing(model, clean, runs):
    metric = logit_diff(clean)
    base = float(metric(runs[0]))
    for sender, recv in [(Head(0, 1), [Final()]), (Head(0, 2), [Head(2, 1, inputs="qkv")]),
                         (Span("resid_pre", 1, "frame:1"), [Head(1, 0, positions="last", inputs="q"), Final()])]:
        assert abs(path_patch(model, clean, clean, sender, recv, metric) - base) < 1e-5


def test_path_patching_direct_path_to_logits(model, clean, corrupted, runs):
    """With MLPs frozen, sender -> Final is the sender's change added to the final residual."""
    lc, cc, _, cx = runs
    metric = logit_diff(clean)
    l, h = 1, 2
    got = path_patch(model, clean, corrupted, Head(l, h), [Final("last")], metric, freeze_mlps=True)
    with torch.no_grad():
        dz = cx["z", l][0, -1, h] - cc["z", l][0, -1, h]
        resid = cc[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][0, -1] + dz @ model.W_O[l, h]
        logits = model.unembed(model.ln_final(resid[None, None]))
    assert abs(got - float(metric(logits))) < 1e-5
    assert abs(got - float(metric(lc))) > 1e-7  # the path carries something


def test_path_patching_last_layer_equals_activation_patching(model, clean, corrupted, runs):
    lc, cc, _, cx = runs
    metric = logit_diff(clean)
    L = model.cfg.n_layers - 1
    pp = path_patch_heads(model, clean, corrupted, [Final()], metric)
    assert pp.shape == (model.cfg.n_layers, model.cfg.n_heads) and not pp.isnan().any()
    ap = patch_spans(model, clean, cx, metric, activation="z", layers=[L], groups="all")
    assert torch.allclose(pp[L], ap.values[0, 0], atol=1e-5)
    grid = path_patch_heads(model, clean, corrupted, [Head(2, 0, positions="last", inputs="q")], metric)
    assert grid[2:].isnan().all() and not grid[:2].isnan().any()


def test_path_patching_order_is_checked(model, clean, corrupted):
    metric = logit_diff(clean)
    with pytest.raises(ValueError, match="no path"):
        path_patch(model, clean, corrupted, Head(2, 0), [Head(1, 0)], metric)
    with pytest.raises(ValueError, match="no path"):
        path_patch(model, clean, corrupted, Span("attn_out", 1, "video"), [Head(1, 0)], metric)
    with pytest.raises(ValueError, match="inputs"):
        Head(1, 0, inputs="x")


def test_path_patching_into_a_query_matches_a_hand_computed_query(model, clean, corrupted, runs):
    """Sender (0, h) -> queries of head (1, h') at the last position, MLPs frozen: the receiver's
    query is ln1(resid_pre_1 + delta) W_Q + b_Q with delta the sender's change through W_O."""
    lc, cc, _, cx = runs

    def metric(logits):  # distance of the last position's logits from the clean run: sensitive
        return (logits[:, -1] - lc[:, -1]).norm(dim=-1)

    h, hq = 2, 3
    got = path_patch(model, clean, corrupted, Head(0, h), [Head(1, hq, positions="last", inputs="q")], metric,
                     freeze_mlps=True)
    with torch.no_grad():
        delta = (cx["z", 0][0, :, h] - cc["z", 0][0, :, h]) @ model.W_O[0, h]  # [S, d_model]
        x = model.blocks[1].ln1((cc["resid_pre", 1][0] + delta)[None])[0, -1]
        q = x @ model.W_Q[1, hq] + model.b_Q[1, hq]

        def set_q(act, hook):
            act = act.clone()
            act[:, -1, hq] = q
            return act

        want = float(metric(model.run_with_hooks(clean, fwd_hooks=[("blocks.1.attn.hook_q", set_q)])))
    assert got > 1e-5  # the query did change
    assert abs(got - want) < 1e-2 * want, (got, want)
