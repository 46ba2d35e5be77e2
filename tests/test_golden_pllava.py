"""Every number of ../shared/golden/pllava/ (the paper's OFFICIAL code run on tiny checkpoints its own
classes saved) reproduced by videolens: frames, pixel values, prompt and input ids, token groups,
input embeddings, last-position logits and probabilities, every knockout target at every centre
layer the golden holds, effective-pathway edge counts and probabilities, random-control counts.

Tolerances (the golden README's): logits <= 1e-4, probabilities <= 1e-3 relative, counts exact.
"""

from __future__ import annotations

import math

import pytest
import torch

import videolens as vl
from golden import golden, video_qa
from videolens.knockout import get_target
from videolens.pathways import PathwayMasker, count_edges, load_spec, lower_triangle_size
from videolens.pathways.evaluate import random_block_counts

GOLDEN, GOLD, pytestmark = golden("pllava")

PROB_RTOL = 1e-3
LOGIT_ATOL = 1e-4
REL_CHANGE_ATOL = 5e-3
"""Percentage points of a relative change: 5e-5 of the knockout/baseline probability ratio, fp32
rounding through 32 layers (InternVL's Video -/-> Last at layer 4 moves by 1.5e-3 points between
one and two torch threads); far inside what PROB_RTOL allows the probabilities themselves."""

# the official block descriptions -> videolens' target pair labels (information_flow_analysis.py)
PAIR_OF = {
    "No cross-frame interactions": "cross-frame",
    "Video -/-> Question": "video->question",
    "Video -/-> Last": "video->last",
    "Question -/-> Last": "question->last",
    "Last -/-> Last": "last->last",
    "Non-option question -/-> Last": "non_option_question->last",
    "True option -/-> Last": "true_option->last",
    "False option -/-> Last": "false_options->last",
    "Video -/-> Non-option question": "video->non_option_question",
    "Non-option question -/-> True option": "non_option_question->true_option",
    "Video -/-> True option": "video->true_option",
}
# the official effective-pathway mapping names -> videolens' edge types
EDGE_TYPE_OF = {
    "vision_inter_frame": "cross_frame",
    "vision_to_question": "video_to_question",
    "question_to_last": "question_to_last",
    "last_to_last": "last_to_last",
    "vision_to_last": "video_to_last",
    "vision_to_vision": "video_to_video",
    "question_to_question": "question_to_question",
}


SAMPLES = {s["sample_id"]: s for s in GOLD["samples"]}
CASES = [(sid, ck) for sid, s in SAMPLES.items() for ck in s["checkpoints"]]
QUICK_CENTRES = (0, 16, 31)  # the default run (both clipped ends and a full window); a sample with all 32 centre layers runs them under -m slow


def _knockout_cases():
    """Default run: every target on the first (sample, checkpoint) and cross-frame on the first
    checkpoint of another sample, at the quick centres; under -m slow every target on every
    checkpoint, and every centre where the golden has more (the targets share one code path, and so
    do the checkpoints: their weights and layouts are checked by the logits tests on every case)."""
    other = next((i for i, (sid, _) in enumerate(CASES) if sid != CASES[0][0]), None)
    for i, (sid, ck) in enumerate(CASES):
        g = SAMPLES[sid]["checkpoints"][ck]
        for t in g["knockout"]:
            default = i == 0 or (i == other and t == "cross-frame")
            yield pytest.param(sid, ck, t, True, id=f"{sid}-{ck}-{t}", marks=() if default else pytest.mark.slow)
            if len(g["knockout_centre_layers"]) > len(QUICK_CENTRES):
                yield pytest.param(sid, ck, t, False, id=f"{sid}-{ck}-{t}-all", marks=pytest.mark.slow)


KNOCKOUT_CASES = list(_knockout_cases())


def close(a: float, b: float, rtol: float = PROB_RTOL) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


@pytest.fixture(scope="module")
def tensors():
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / GOLD["tensors_file"]))


@pytest.fixture(scope="module")
def models():
    # the official scripts: PllavaConfig.from_pretrained(path, pooling_shape=(8, 12, 12), num_frames=8)
    return {ck: vl.HookedVideoLLM.from_pretrained(GOLDEN / ck, device="cpu", pooling_shape=(8, 12, 12))
            for ck in ("video-ft", "base-image")}


@pytest.fixture(scope="module")
def prepared(models):
    out = {}
    for sid, ck in CASES:
        out[sid, ck] = models[ck].prepare(video_qa(SAMPLES[sid]["annotation_entry"], SAMPLES[sid]["video_file"]))
    return out


def test_loading_the_released_formats(models):
    ft, base = models["video-ft"], models["base-image"]
    assert ft.family == base.family == "pllava"
    assert ft.default_num_frames == base.default_num_frames == 8
    assert ft.vision.output_grid(8) == base.vision.output_grid(8) == (8, 12, 12)
    assert ft.cfg.n_layers == 32  # text_config saved as a diff: num_hidden_layers absent means 32
    assert "image_newline" in base.vision.extra and "image_newline" not in ft.vision.extra
    assert base.vision.preprocess.pre_resize is not None


@pytest.mark.parametrize("sid,ck", CASES)
def test_frames_pixels_prompt_and_tokens(models, prepared, tensors, sid, ck):
    g, inp = SAMPLES[sid], prepared[sid, ck]
    assert inp.video.indices.tolist() == g["frame_indices"]
    assert inp.prompt_text == g["prompt"]
    pix = models[ck].vision.preprocess(inp.video.frames)
    assert list(pix.shape) == g["pixel_values"]["shape"]
    assert pix.flatten()[:16].tolist() == pytest.approx(g["pixel_values"]["first16"], abs=1e-5)
    assert float(pix.double().mean()) == pytest.approx(g["pixel_values"]["mean"], abs=1e-6)
    assert float(pix.double().std()) == pytest.approx(g["pixel_values"]["std"], abs=1e-6)
    key = f"{sid}/pixel_values"
    if key in tensors:
        assert (pix - tensors[key]).abs().max() <= 1e-5

    L, tg = inp.layout, g["token_groups"]
    assert L.seq_len == g["expanded_len"] == tg["ntoks"]
    ids = inp.tokens[0]
    v0, n = int(L.video_positions[0]), len(L.video_positions)
    assert (v0, v0 + n) == (tg["video"]["start"], tg["video"]["stop"]) and n == tg["num_vis"]
    assert torch.cat([ids[: v0 + 1], ids[v0 + n:]]).tolist() == g["input_ids"]  # the unexpanded ids
    for name in ("question", "non_option_question", "true_option", "last"):
        p = L.positions(name)
        assert (int(p[0]), int(p[-1]) + 1) == (tg[name]["start"], tg[name]["stop"]), name
    assert L.positions("false_options").tolist() == tg["false_options"]
    for letter, o in tg["options"].items():
        p = L.positions(f"option:{letter}")
        assert (int(p[0]), int(p[-1]) + 1) == (o["expanded"]["start"], o["expanded"]["stop"])
    assert [(f.start, f.stop) for f in L.frames] == [(f["start"], f["stop"]) for f in tg["video_frames"]]
    assert inp.option_token_ids == g["checkpoints"][ck]["option_letter_token_ids"]


@pytest.mark.parametrize("sid,ck", CASES)
def test_embeddings_logits_and_probabilities(models, prepared, tensors, sid, ck):
    model, inp, g = models[ck], prepared[sid, ck], SAMPLES[sid]["checkpoints"][ck]
    with torch.no_grad():
        logits, cache = model.run_with_cache(inp, names_filter="hook_embed")
    assert (cache["hook_embed"][0] - tensors[f"{sid}/{ck}/inputs_embeds"].reshape(cache["hook_embed"][0].shape)
            ).abs().max() <= 1e-5
    last = logits[0, -1]
    assert (last - tensors[f"{sid}/{ck}/logits_last"]).abs().max() <= LOGIT_ATOL
    assert [int(i) for i in last.topk(20).indices] == [int(i) for i, _ in g["logits_last_top20"]]
    probs = model.option_probs(inp, logits)
    for letter, p in g["option_letter_probs"].items():
        assert close(probs[letter], p), letter
    full = last.softmax(-1)
    assert int(full.argmax()) == g["argmax_token_id"] and close(float(full.max()), g["argmax_prob"])
    assert model.tokenizer.decode([g["argmax_token_id"]]) == g["argmax_token_decoded"]


@pytest.mark.parametrize("sid,ck,target,quick", KNOCKOUT_CASES)
def test_knockout_every_centre_layer(models, prepared, sid, ck, target, quick):
    g = SAMPLES[sid]["checkpoints"][ck]
    centres = [c for c in g["knockout_centre_layers"] if not quick or c in QUICK_CENTRES]
    recs = vl.knockout.sweep(models[ck], prepared[sid, ck], target, window=9, layers=centres, samples="all")
    assert [p.label for p in get_target(target).pairs] == [PAIR_OF[b["block_desc"]] for b in g["knockout"][target]]
    for block in g["knockout"][target]:
        mine = {r["layer"]: r for r in recs if r["pair"] == PAIR_OF[block["block_desc"]]}
        expected = [x for x in block["per_layer"] if x["layer"] in centres]
        assert sorted(mine) == sorted(x["layer"] for x in expected) and len(expected) == len(centres)
        for x in expected:
            r = mine[x["layer"]]
            where = (block["block_desc"], x["layer"])
            assert r["n_blocked"] == block["blocked_edges"], where
            assert r["layers"] == x["layers"], where
            assert r["base_answer_t"] == g["argmax_token_id"] and close(r["base_prob"], g["argmax_prob"]), where
            assert close(r["ko_prob"], x["new_score"]), where
            assert close(r["ko_true_prob"], x["new_score_gt"]), where
            assert r["ko_answer_t"] == x["new_answer_t"] and close(r["ko_max_prob"], x["new_max_prob"]), where
            assert r["rel_change"] == pytest.approx(x["relative_diff"], rel=PROB_RTOL, abs=REL_CHANGE_ATOL), where
            assert r["rel_change_true"] == pytest.approx(x["relative_diff_gt"], rel=PROB_RTOL, abs=REL_CHANGE_ATOL), where


@pytest.mark.parametrize("sid,ck", [pytest.param(*c, marks=() if i == 0 else pytest.mark.slow)
                                    for i, c in enumerate(CASES)])  # one in the default run, all under -m slow
def test_effective_pathway(models, prepared, tensors, sid, ck):
    model, inp = models[ck], prepared[sid, ck]
    g = SAMPLES[sid]["checkpoints"][ck]["effective_pathway"]
    assert g["target"] == "effective-pathway-7b"
    spec = load_spec("llava-next-7b-video-ft")
    plan = spec.plan(model.cfg.n_layers)
    for t, official in (("cross_frame", "INTER_FRAME_RANGE"), ("video_to_question", "VIDEO_TO_QUESTION_RANGE"),
                        ("question_to_last", "QUESTION_TO_LAST_RANGE")):
        assert list(plan.kept_layers[t]) == g[official]
    counts = count_edges(inp.layout, plan)
    for l, x in enumerate(g["per_layer"]):
        assert sorted(plan.blocked_types(l)) == sorted(EDGE_TYPE_OF[m] for m in x["blocked_mappings"]), l
        assert (counts.kept[l], counts.full[l]) == (x["kept"], x["total"]), l
    assert (counts.total_kept, counts.total_full) == (g["new_attention_cnt"], g["base_attention_cnt"])
    assert 100 * counts.kept_fraction == pytest.approx(g["attention_amount"], rel=1e-12)

    masker = PathwayMasker(inp.layout, plan)
    with torch.no_grad():
        logits = model.run_with_hooks(inp, fwd_hooks=masker.fwd_hooks())
    assert (logits[0, -1] - tensors[f"{sid}/{ck}/logits_last_effective_pathway"]).abs().max() <= LOGIT_ATOL
    probs = model.option_probs(inp, logits)
    for letter, p in g["option_letter_probs"].items():
        assert close(probs[letter], p), letter
    full = logits[0, -1].softmax(-1)
    base_t = SAMPLES[sid]["checkpoints"][ck]["argmax_token_id"]
    assert close(float(full[base_t]), g["new_score"]) and int(full.argmax()) == g["new_answer_t"]
    assert (float(full[base_t]) - g["base_score"]) / g["base_score"] * 100 == pytest.approx(g["relative_diff"], rel=PROB_RTOL)


@pytest.mark.parametrize("sid,ck", CASES)
def test_random_control_counts(models, prepared, sid, ck):
    """The official draw is unseeded: its counts are reproduced (the edges are seeded here)."""
    inp = prepared[sid, ck]
    g = SAMPLES[sid]["checkpoints"][ck]["random_control"]
    plan = load_spec("llava-next-7b-video-ft").plan(32)
    assert plan.random_block_ratio == g["random_block_ratio"]
    assert inp.layout.video.start == g["block_start"] and inp.seq_len == g["block_end"]
    assert lower_triangle_size(inp.layout, diagonal=True) == g["n_valid_indices"]
    n_block = random_block_counts(count_edges(inp.layout, plan), "official", inp.layout, plan.random_block_ratio)
    assert n_block == [g["blocked_per_layer"]] * 32 and g["num_block"] == g["blocked_per_layer"]
    full = inp.seq_len * (inp.seq_len + 1) // 2
    assert full == g["num_baseline"] and full - n_block[0] == g["kept_per_layer"]
    assert sum(full - n for n in n_block) == g["new_attention_cnt"]
