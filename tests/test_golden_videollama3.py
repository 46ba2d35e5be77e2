"""Every number of ../shared/golden/videollama3/ (the paper's OFFICIAL VideoLLaMA3 analysis scripts
run on a tiny checkpoint its own classes saved, visual-token budget 128) reproduced by videolens:
frame indices and timestamps, pixel values, prompt and input ids, the official token groups (video
span with its timestamp text, frames split at the commas), last-position logits and probabilities,
the four knockout targets at all 28 centre layers (blocked-edge counts per pair), and the effective
pathway's edge counts and probabilities.

Tolerances (the golden README's): logits <= 1e-4, probabilities <= 1e-3 relative, counts exact.
"""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from golden import golden, last_logits, prepare_all
from test_golden_pllava import LOGIT_ATOL, PAIR_OF, PROB_RTOL, REL_CHANGE_ATOL, close
from videolens.knockout import get_target
from videolens.hooked.edges import blocked_mask
from videolens.frontend.navit import patchify
from videolens.pathways import PathwayMasker, count_edges, load_spec

GOLDEN, GOLD, pytestmark = golden("videollama3")
SAMPLES = dict(enumerate(GOLD["samples"]))
QUICK_CENTRES = (0, 14, 27)  # the default run (both clipped ends and a full window); every centre layer under -m slow
# knockout probabilities: every target on the first sample and cross-frame on the others by default, all
# under -m slow (the blocked edges of every target are counted against the golden by default)
KO = [pytest.param(i, t, centres, id=f"{i}-{t}-{name}",
                   marks=marks if i == 0 or t == "cross-frame" else pytest.mark.slow)
      for i in SAMPLES for t in SAMPLES[i]["knockout"]
      for centres, name, marks in ((QUICK_CENTRES, "3centres", ()), (None, "all28", pytest.mark.slow))]


@pytest.fixture(scope="module")
def model():
    return vl.HookedVideoLLM.from_pretrained(GOLDEN / "video-ft", device="cpu",
                                             max_visual_tokens=GOLD["config"]["max_visual_tokens"])


@pytest.fixture(scope="module")
def tensors():
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "golden_arrays.safetensors"))


@pytest.fixture(scope="module")
def prepared(model):
    return prepare_all(model, SAMPLES, GOLD["config"]["max_frames"])


@pytest.fixture(scope="module")
def clean_logits(model, prepared):
    return last_logits(model, prepared)


def test_family_and_config(model):
    c = GOLD["config"]
    assert model.family == "videollama3" and model.frame_sampler == "videollama3"
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.n_key_value_heads, model.cfg.d_model) == (
        c["text_layers"], c["text_heads"], c["text_kv_heads"], c["text_hidden"])
    assert model.cfg.original_architecture == "Qwen2ForCausalLM" and model.cfg.rotary_base == 1e6
    assert model.placeholder_id == c["image_token_id"] and model.vision.preprocess.max_tokens == c["max_visual_tokens"]


@pytest.mark.parametrize("i", list(SAMPLES))
def test_frames_pixels_prompt_and_groups(model, prepared, tensors, i):
    s, x = SAMPLES[i], prepared[i]
    assert x.video.timestamps.tolist() == pytest.approx(s["timestamps"], abs=1e-9)
    assert list(x.video.frames.shape[1:3]) == s["frame_shape_hw"]
    T, h, w = s["grid_sizes"][0]
    assert x.layout.video_grid == (T, h // 2, w // 2)
    pixels = model.vision.pixels(x.video.frames)
    assert list(pixels.shape) == [T, 3, 14 * h, 14 * w]
    if f"s{i}.pixel_values" in tensors:
        assert torch.equal(patchify(pixels), tensors[f"s{i}.pixel_values"])
    assert x.tokens[0].tolist() == s["input_ids"] and x.seq_len == s["expanded_seq_len"]
    assert model.tokenizer.decode(x.tokens[0]) == s["prompt"]
    L, g = x.layout, s["groups"]
    for name in ("video", "question", "last", "non_option_question", "true_option", "false_options"):
        assert L.positions(name).tolist() == g[name], name
    assert [L.positions(f"frame:{k}").tolist() for k in range(T)] == g["frames"]
    assert len(L.video_positions) == s["n_image_tokens"]


@pytest.mark.parametrize("i", list(SAMPLES))
def test_logits_and_probabilities(model, prepared, clean_logits, tensors, i):
    b, logits = SAMPLES[i]["baseline"], clean_logits[i]
    assert (logits - tensors[f"s{i}.last_logits"]).abs().max() <= LOGIT_ATOL
    probs = logits.softmax(-1)
    assert int(probs.argmax()) == b["argmax_token_id"] and close(float(probs.max()), b["argmax_prob"])
    assert [t["id"] for t in b["top20"]] == logits.topk(20).indices.tolist()
    letters = model.option_probs(prepared[i], logits[None, None])
    for letter, p in b["option_probs"].items():
        assert close(letters[letter], p), letter
        assert prepared[i].option_token_ids[letter] == SAMPLES[i]["letter_token_ids"][letter]


@pytest.mark.parametrize("i", list(SAMPLES))
def test_blocked_edge_counts(prepared, i):
    for target, k in SAMPLES[i]["knockout"].items():
        pairs = get_target(target).pairs
        assert [p.label for p in pairs] == [PAIR_OF[b["block_desc"]] for b in k["blocks"]], target
        for p, b in zip(pairs, k["blocks"]):
            assert int(blocked_mask(prepared[i].layout, [p]).sum()) == b["blocked_causal_edges"], (target, p.label)


@pytest.mark.parametrize("i,target,centres", KO)
def test_knockout_every_centre_layer(model, prepared, i, target, centres):
    s = SAMPLES[i]
    results = [x for x in s["knockout"][target]["results"] if centres is None or x["layer"] in centres]
    expected = len(QUICK_CENTRES) if centres else GOLD["config"]["text_layers"]
    centres = sorted({x["layer"] for x in results})
    assert len(centres) == expected
    recs = vl.knockout.sweep(model, prepared[i], target, window=GOLD["config"]["window"], layers=centres,
                             samples="all")
    for x in results:
        r = next(r for r in recs if r["pair"] == PAIR_OF[x["block_desc"]] and r["layer"] == x["layer"])
        where = (x["block_desc"], x["layer"])
        assert r["layers"] == x["layers"] and r["base_answer_t"] == s["baseline"]["argmax_token_id"], where
        assert close(r["base_prob"], x["base_score"]) and close(r["ko_prob"], x["new_score"]), where
        assert close(r["ko_true_prob"], x["new_score_gt"]) and r["ko_answer_t"] == x["new_answer_t"], where
        assert r["rel_change"] == pytest.approx(x["relative_diff"], rel=PROB_RTOL, abs=REL_CHANGE_ATOL), where
        assert r["rel_change_true"] == pytest.approx(x["relative_diff_gt"], rel=PROB_RTOL, abs=REL_CHANGE_ATOL), where


@pytest.mark.parametrize("i", list(SAMPLES))
def test_effective_pathway(model, prepared, i):
    g, x = SAMPLES[i]["effective_pathway"], prepared[i]
    plan = load_spec("videollama3-7b").plan(model.cfg.n_layers)
    counts = count_edges(x.layout, plan)
    for l, row in enumerate(g["per_layer"]):
        assert (counts.kept[l], counts.full[l]) == (row["kept"], row["total"]), l
    assert (counts.total_kept, counts.total_full) == (g["new_attention_cnt"], g["base_attention_cnt"])
    assert 100 * counts.kept_fraction == pytest.approx(g["attention_amount"], rel=1e-12)
    with torch.no_grad():
        logits = model.run_with_hooks(x, fwd_hooks=PathwayMasker(x.layout, plan).fwd_hooks())[0, -1]
    full = logits.softmax(-1)
    base_t = SAMPLES[i]["baseline"]["argmax_token_id"]
    assert close(float(full[base_t]), g["new_score"]) and int(full.argmax()) == g["new_answer_t"]
    assert close(float(full[SAMPLES[i]["gt_token_id"]]), g["new_score_gt"])
    probs = model.option_probs(x, logits[None, None])
    for letter, p in g["option_probs"].items():
        assert close(probs[letter], p), letter
