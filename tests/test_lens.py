"""Logit lens: exactness against the model's logits and TransformerLens, chunking, selections,
the raw-embedding variant, and keyword counting on constructed cases."""

from __future__ import annotations

import json

import pytest
import torch

import videolens as vl
from videolens.prompting.layout import Span, TokenLayout
from videolens.lens import (
    KeywordMatcher,
    KeywordSet,
    LensMode,
    LensResult,
    count_keywords,
    layer_bins,
    load_keywords,
    logit_lens,
    register_lens_mode,
    resolve_lens_layers,
)
from videolens.lens import core as lens_core

from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


@pytest.fixture(scope="module")
def inputs(tiny_pllava, clip_path):
    return tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE), num_frames=8)


@pytest.fixture(scope="module")
def full(tiny_pllava, inputs):
    """Every lens layer at every position, top 5."""
    return logit_lens(tiny_pllava, inputs, positions=None, layers=None, k=5, chunk_size=None)


def softmax_topk(logits: torch.Tensor, k: int):
    return logits.float().softmax(-1).topk(k)


def test_final_lens_equals_model_logits(tiny_pllava, inputs, full):
    with torch.no_grad():
        logits = tiny_pllava(inputs)[0]
    ref = softmax_topk(logits, 5)
    L = tiny_pllava.cfg.n_layers
    assert full.layers == list(range(L + 1)) and full.labels[-1] == "final_post"
    assert torch.equal(full.tokens[full.row(L)], ref.indices)
    assert torch.allclose(full.probs[full.row(-1)], ref.values, atol=1e-6, rtol=0)
    toks, probs = full.at(-1, inputs.layout.last)
    assert toks == ref.indices[-1].tolist()


def test_lens_matches_transformerlens_accumulated_resid(tiny_pllava, inputs, full):
    """accumulated_resid(apply_ln=True) recomputes ln_final per layer (apply_ln_to_stack with
    recompute_ln): our default mode must equal it followed by model.unembed at every layer."""
    with torch.no_grad():
        _, cache = tiny_pllava.run_with_cache(inputs)
        stack = cache.accumulated_resid(apply_ln=True)[:, 0]  # [L+1, S, d]
        ref = softmax_topk(tiny_pllava.unembed(stack), 5)
        raw = cache.accumulated_resid()[:, 0]
        by_hand = torch.stack([tiny_pllava.ln_final(r[None])[0] for r in raw])
    assert torch.equal(full.tokens, ref.indices)
    assert torch.allclose(full.probs, ref.values, atol=1e-6, rtol=0)
    # TransformerLens' RMS apply_ln_to_stack with recompute_ln is exactly model.ln_final
    assert torch.allclose(stack, by_hand, atol=1e-6, rtol=0)
    # ...while the cached-scale path (its default below the unembed) is not a logit lens
    with pytest.warns(UserWarning, match="not folded"):  # said to the user too (UnfoldedNormWarning)
        cached = cache.apply_ln_to_stack(raw[:, None], layer=None, recompute_ln=False)[:, 0]
    assert not torch.allclose(cached[:-1], by_hand[:-1], atol=1e-3)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_equals_unchunked(tiny_pllava, inputs, full, chunk):
    got = logit_lens(tiny_pllava, inputs, positions=None, k=5, chunk_size=chunk)
    assert torch.equal(got.tokens, full.tokens)
    assert torch.allclose(got.probs, full.probs, atol=1e-7, rtol=0)


def test_chunks_bound_the_projected_rows(tiny_pllava, inputs):
    """No projection call sees more than chunk_size rows, so [positions x vocab] is never formed
    for more than one chunk at a time."""
    seen = []

    def spy(model, x):
        seen.append(x.shape[0])
        return lens_core._final_norm(model, x)

    register_lens_mode(LensMode("_test_spy", spy, "records row counts"))
    try:
        res = logit_lens(tiny_pllava, inputs, positions="video", k=3, mode="_test_spy", chunk_size=10)
    finally:
        del lens_core.LENS_MODES["_test_spy"]
    n_video = len(inputs.layout.video_positions)
    assert max(seen) == 10 and sum(seen) == n_video * len(res.layers)


def test_selections_index_correctly(tiny_pllava, inputs, full):
    S = inputs.seq_len
    pos = [7, 3, -1, inputs.layout.video_positions[5].item()]
    sub = logit_lens(tiny_pllava, inputs, positions=pos, layers=[2, 0], k=5)
    assert sub.layers == [0, 2]
    assert sub.positions.tolist() == [7, 3, S - 1, pos[3]]
    for i, l in enumerate(sub.layers):
        for j, p in enumerate(sub.positions.tolist()):
            assert torch.equal(sub.tokens[i, j], full.tokens[l, p])
            assert torch.allclose(sub.probs[i, j], full.probs[l, p], atol=1e-6, rtol=0)
    # groups resolve through the layout; early stop (layers below the last) gives the same values
    vid = logit_lens(tiny_pllava, inputs, positions="frame:1", layers="0-1", k=5)
    want = inputs.layout.frames[1].positions()
    assert torch.equal(vid.positions, want) and vid.layers == [0, 1]
    assert torch.equal(vid.tokens, full.tokens[:2, want])
    last = logit_lens(tiny_pllava, inputs, positions="last", layers=-1, k=5)
    assert torch.equal(last.tokens[0, 0], full.tokens[-1, S - 1])
    with pytest.raises(KeyError):
        sub.row(1)
    words = sub.decode(tiny_pllava.tokenizer)
    assert len(words) == 2 and len(words[1]) == 4 and len(words[1][3]) == 5
    assert words[1][3] == tiny_pllava.tokenizer.convert_ids_to_tokens(sub.tokens[1, 3].tolist())


def test_cache_input_equals_forward_input(tiny_pllava, inputs, full):
    with torch.no_grad():
        _, cache = tiny_pllava.run_with_cache(inputs)
    got = logit_lens(tiny_pllava, cache, positions="video", layout=inputs.layout, k=5)
    vp = inputs.layout.video_positions
    assert torch.equal(got.tokens, full.tokens[:, vp])
    with pytest.raises(ValueError, match="layout"):
        logit_lens(tiny_pllava, cache, positions="video")
    partial = {"blocks.0.hook_resid_pre": cache["blocks.0.hook_resid_pre"]}
    with pytest.raises(ValueError, match="blocks.1.hook_resid_pre"):
        logit_lens(tiny_pllava, partial, positions=[0], layers=[0, 1])


def test_raw_embed_equals_hand_computation(tiny_pllava, inputs, full):
    """Released-code variant: raw residual (no norm) times W_E^T, softmax over the vocabulary."""
    L = tiny_pllava.cfg.n_layers
    got = logit_lens(tiny_pllava, inputs, positions=None, k=4, mode="raw_embed", chunk_size=9)
    with torch.no_grad():
        _, cache = tiny_pllava.run_with_cache(inputs)
    W_E = tiny_pllava.embed.W_E  # [vocab, d_model]
    for l in range(L + 1):
        name = f"blocks.{l}.hook_resid_pre" if l < L else f"blocks.{L - 1}.hook_resid_post"
        x = cache[name][0]
        scores = torch.einsum("pd,vd->pv", x, W_E)
        ref = softmax_topk(scores, 4)
        assert torch.equal(got.tokens[l], ref.indices), l
        assert torch.allclose(got.probs[l], ref.values, atol=1e-6, rtol=0)
    assert not torch.equal(got.tokens[:, :, 0], full.tokens[:, :, 0])


def test_argument_errors(tiny_pllava, inputs):
    L = tiny_pllava.cfg.n_layers
    assert resolve_lens_layers("0-1,final", L) == [0, 1, L]
    assert resolve_lens_layers(-1, L) == [L] and resolve_lens_layers(None, L) == list(range(L + 1))
    for bad in (L + 1, "x", "1-", -(L + 2), []):
        with pytest.raises(ValueError, match="layers"):
            resolve_lens_layers(bad, L)
    with pytest.raises(ValueError, match="mode"):
        logit_lens(tiny_pllava, inputs, mode="nope")
    with pytest.raises(ValueError, match="k must"):
        logit_lens(tiny_pllava, inputs, k=0)
    with pytest.raises(ValueError, match="positions"):
        logit_lens(tiny_pllava, inputs, positions=[inputs.seq_len])
    with pytest.raises(KeyError):
        logit_lens(tiny_pllava, inputs, positions="no_such_group")
    with pytest.raises(ValueError, match="mix"):
        logit_lens(tiny_pllava, inputs, positions=["video", 3])


# ---- keywords --------------------------------------------------------------------------------------
def test_builtin_keywords_are_the_papers_lists():
    ks = load_keywords("action_sequence")
    assert len(ks.categories["spatial"]) == 21 and len(ks.categories["temporal"]) == 14
    assert ks.categories["spatial"][0] == "bag" and ks.categories["temporal"][-1] == "up"
    with pytest.raises(FileNotFoundError, match="action_sequence"):
        load_keywords("no_such_set")


def test_user_keyword_files(tmp_path):
    j = tmp_path / "mine.json"
    j.write_text(json.dumps({"spatial": ["cup", "bag"], "temporal": ["open"]}))
    assert load_keywords(j).categories == {"spatial": ("cup", "bag"), "temporal": ("open",)}
    t = tmp_path / "words.txt"
    t.write_text("# my list\nmotion: run, jump\nmotion: walk\nstill\n")
    ks = load_keywords(t)
    assert ks.categories == {"motion": ("run", "jump", "walk"), "words": ("still",)}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"spatial": "cup"}))
    with pytest.raises(ValueError, match="bad.json"):
        load_keywords(bad)


def test_layer_bins_do_not_overlap():
    bins = layer_bins(32, 5)
    assert list(bins)[:2] == ["L0-4", "L5-9"] and list(bins)[-1] == "L30-32"
    members = [l for ls in bins.values() for l in ls]
    assert sorted(members) == list(range(33)) and len(members) == len(set(members))
    assert layer_bins(32, 5, layers=[3, 4, 12]) == {"L0-4": [3, 4], "L10-14": [12]}
    with pytest.raises(ValueError):
        layer_bins(32, 0)


def _constructed_case():
    """A 2x2x2 video grid at positions 1..8, one text position 10, three lens layers.

    Top-1 tokens (the rest of the top-k is filler) are set so that the expected counts are:
      layer 0: "blanket" at frame 0 (row 0, col 1); nothing else
      layer 1: "down" at frame 1 (1, 0) and (1, 1); "blanket" at the text position 10
      final:   "person" at frame 1 (0, 0); "down" at frame 0 (0, 0)
    """
    from videolens.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    ks = KeywordSet("test", {"spatial": ("blanket", "person", "bag"), "temporal": ("down", "down.")})
    matcher = KeywordMatcher.from_tokenizer(ks, tok)
    vid = torch.arange(1, 9)
    layout = TokenLayout(seq_len=12, spans={"video": Span(1, 9)}, video_grid=(2, 2, 2), video_positions=vid,
                         letters=("A", "B"))
    positions = torch.tensor([*range(1, 9), 10])
    ids = {w: tok.convert_tokens_to_ids(w) for w in ("blanket", "person", "down", "the")}
    top1 = torch.full((3, len(positions)), ids["the"])
    col = {p: j for j, p in enumerate(positions.tolist())}
    top1[0, col[2]] = ids["blanket"]          # frame 0, row 0, col 1
    top1[1, col[7]] = ids["down"]             # frame 1, row 1, col 0
    top1[1, col[8]] = ids["down"]             # frame 1, row 1, col 1
    top1[1, col[10]] = ids["blanket"]         # not a video token
    top1[2, col[5]] = ids["person"]           # frame 1, row 0, col 0
    top1[2, col[1]] = ids["down"]             # frame 0, row 0, col 0
    tokens = torch.stack([top1, torch.zeros_like(top1)], -1)
    probs = torch.tensor([0.9, 0.1]).expand(3, len(positions), 2)
    lens = LensResult([0, 1, 2], positions, tokens, probs, n_layers=2)
    return lens, matcher, layout


def test_keyword_counting_constructed_case():
    lens, matcher, layout = _constructed_case()
    assert matcher.keywords == ["blanket", "person", "down", "down."]
    assert [(c, w) for c, w, _ in matcher.skipped] == [("spatial", "bag")]
    c = count_keywords(lens, matcher, layout)
    kw = {k: i for i, k in enumerate(c.keywords)}
    # per layer: "down." shares the first sub-token "down", so it is hit wherever "down" is
    assert c.per_layer()[:, kw["blanket"]].tolist() == [1, 1, 0]
    assert c.per_layer()[:, kw["down"]].tolist() == [0, 2, 1]
    assert c.per_layer()[:, kw["down."]].tolist() == [0, 2, 1]
    assert c.per_layer()[:, kw["person"]].tolist() == [0, 0, 1]
    # per category, a position counts once
    cat = c.per_layer_category()
    assert cat["spatial"].tolist() == [1, 1, 1] and cat["temporal"].tolist() == [0, 2, 1]
    # per frame (video tokens only: the text-position hit of layer 1 is dropped)
    pf = c.per_frame()
    assert pf[0, :, kw["blanket"]].tolist() == [1, 0]
    assert pf[1, :, kw["blanket"]].tolist() == [0, 0]
    assert pf[1, :, kw["down"]].tolist() == [0, 2]
    assert pf[2, :, kw["person"]].tolist() == [0, 1] and pf[2, :, kw["down"]].tolist() == [1, 0]
    cell = c.per_cell()
    assert cell[0, 0, 0, 1, kw["blanket"]] == 1 and cell[0].sum() == 1
    assert cell[1, 1, 1, 0, kw["down"]] == 1 and cell[1, 1, 1, 1, kw["down"]] == 1
    assert cell[2, 1, 0, 0, kw["person"]] == 1 and cell[2, 0, 0, 0, kw["down"]] == 1
    # bins of 2 lens layers: L0-1 = layers 0, 1 and L2 = the final one
    b = c.binned(2)
    assert b["L0-1"] == {"layers": [0, 1], "n": 18, "hits": {"spatial": 2, "temporal": 2}}
    assert b["L2"] == {"layers": [2], "n": 9, "hits": {"spatial": 1, "temporal": 1}}
    recs = c.hit_records(lens)
    assert len(recs) == 6
    coords = {(r["layer"], r["position"]): (r.get("frame"), r.get("row"), r.get("col"), r["keywords"], r["categories"])
              for r in recs}
    assert coords == {
        (0, 2): (0, 0, 1, ["blanket"], ["spatial"]),
        (1, 7): (1, 1, 0, ["down", "down."], ["temporal", "temporal"]),
        (1, 8): (1, 1, 1, ["down", "down."], ["temporal", "temporal"]),
        (1, 10): (None, None, None, ["blanket"], ["spatial"]),
        (2, 5): (1, 0, 0, ["person"], ["spatial"]),
        (2, 1): (0, 0, 0, ["down", "down."], ["temporal", "temporal"]),
    }
    text_hit = next(r for r in recs if r["position"] == 10)
    assert "frame" not in text_hit and text_hit["prob"] == pytest.approx(0.9)


def test_keyword_counting_on_a_real_lens(tiny_pllava, inputs, full):
    """Counts from a real lens agree with a direct comparison of top-1 ids."""
    ks = load_keywords("action_sequence")
    m = KeywordMatcher.from_tokenizer(ks, tiny_pllava.tokenizer)
    assert "bag" in [w for _, w, _ in m.skipped]  # not in the tiny vocabulary
    lens = logit_lens(tiny_pllava, inputs, positions="video", k=1)
    c = count_keywords(lens, m, inputs.layout)
    vp = inputs.layout.video_positions
    for i, tid in enumerate(m.token_ids):
        assert torch.equal(c.per_layer()[:, i], (full.tokens[:, vp, 0] == tid).sum(1))
    assert torch.equal(c.per_frame().sum(1), c.per_layer())
