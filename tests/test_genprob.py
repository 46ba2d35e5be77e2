"""Answer probability by layer: final layer equals option_probs, every layer equals a hand
computation from the cache, true/false options marked."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.lens import answer_probability_by_layer

THREE = dict(question="What is the bird doing?", candidates=["It flies away.", "It walks toward the camera.", "It sleeps."],
             answer="It walks toward the camera.")


@pytest.fixture(scope="module")
def inputs(tiny_pllava, clip_path):
    return tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), **THREE), num_frames=8)


def test_final_layer_equals_option_probs(tiny_pllava, inputs):
    ap = answer_probability_by_layer(tiny_pllava, inputs)
    want = tiny_pllava.option_probs(inputs)
    assert list(ap.final) == list(want) == ["A", "B", "C"]
    for L in want:
        assert ap.final[L] == pytest.approx(want[L], rel=1e-5, abs=1e-9)
    assert ap.probs.shape == (tiny_pllava.cfg.n_layers + 1, 3)


def test_every_layer_equals_hand_computation(tiny_pllava, inputs):
    ap = answer_probability_by_layer(tiny_pllava, inputs)
    raw = answer_probability_by_layer(tiny_pllava, inputs, mode="raw_embed")
    with torch.no_grad():
        _, cache = tiny_pllava.run_with_cache(inputs)
        stack = cache.accumulated_resid()[:, 0, -1]  # [L+1, d] at the last position
        normed = tiny_pllava.ln_final(stack[None])[0]
        p = torch.einsum("ld,dv->lv", normed, tiny_pllava.W_U).add(tiny_pllava.b_U).softmax(-1)
        p_raw = torch.einsum("ld,vd->lv", stack, tiny_pllava.embed.W_E).softmax(-1)
    ids = [inputs.option_token_ids[L] for L in "ABC"]
    assert torch.allclose(ap.probs, p[:, ids], rtol=1e-5, atol=1e-9)
    assert torch.allclose(raw.probs, p_raw[:, ids], rtol=1e-5, atol=1e-9)
    assert not torch.allclose(raw.probs, ap.probs)


def test_true_and_false_options_are_marked(tiny_pllava, inputs):
    ap = answer_probability_by_layer(tiny_pllava, inputs)
    assert ap.true_letter == "B" and ap.is_true.tolist() == [False, True, False]
    assert torch.equal(ap.true_probs, ap.probs[:, 1])
    assert torch.equal(ap.false_probs, ap.probs[:, [0, 2]])
    recs = ap.records()
    assert [r["layer"] for r in recs] == ap.layers and recs[-1]["label"] == "final_post"
    for i, r in enumerate(recs):
        assert r["p_true"] == pytest.approx(float(ap.probs[i, 1]))
        assert r["p_false_mean"] == pytest.approx(float(ap.probs[i, [0, 2]].mean()))
        assert r["p_false_max"] == pytest.approx(float(ap.probs[i, [0, 2]].max()))
        assert r["argmax"] == "ABC"[int(ap.probs[i].argmax())]
    with pytest.raises(ValueError, match="mode"):
        answer_probability_by_layer(tiny_pllava, inputs, mode="nope")
