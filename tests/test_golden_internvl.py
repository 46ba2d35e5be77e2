"""Every number of ../shared/golden/internvl/ (the paper's OFFICIAL Mini-InternVL code run on a tiny
checkpoint its own ``InternVLChatModel`` saved) reproduced by videolens: frames, pixel values,
prompt and input ids, token groups, input embeddings, last-position logits and probabilities,
LongRoPE's short/long switch, knockout targets at the centre layers the golden holds (blocked-edge
counts for every sample), effective-pathway edge counts and probabilities.

Tolerances (the golden README's): logits <= 1e-4, probabilities <= 1e-3 relative, counts exact.
"""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from golden import golden, last_logits, prepare_all
from test_golden_pllava import EDGE_TYPE_OF, LOGIT_ATOL, PAIR_OF, PROB_RTOL, REL_CHANGE_ATOL, close
from videolens.knockout import get_target
from videolens.hooked.edges import blocked_mask
from videolens.pathways import PathwayMasker, count_edges, load_spec

GOLDEN, GOLD, pytestmark = golden("internvl")
SAMPLES = dict(enumerate(GOLD["samples"]))
# knockout probabilities: cross-frame and one question target by default, every target under -m slow (the
# blocked edges of every target are counted against the golden by default, test_blocked_edge_counts)
DEFAULT_KO = ("cross-frame", "question-and-options-to-last")
KO = [pytest.param(i, t, marks=() if t in DEFAULT_KO else pytest.mark.slow)
      for i in GOLD.get("knockout_samples", []) for t in SAMPLES[i]["knockouts"]]


@pytest.fixture(scope="module")
def model():
    return vl.HookedVideoLLM.from_pretrained(GOLDEN / "video-ft", device="cpu")


@pytest.fixture(scope="module")
def tensors():
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "golden.safetensors"))


@pytest.fixture(scope="module")
def prepared(model):
    return prepare_all(model, SAMPLES, GOLD["num_frames"])


@pytest.fixture(scope="module")
def clean_logits(model, prepared):
    return last_logits(model, prepared)


def test_family_and_config(model):
    assert model.family == "internvl" and model.cfg.n_layers == GOLD["n_layers"]
    assert model.cfg.original_architecture == "Phi3ForCausalLM" and model.placeholder_id == 32013
    assert model.rope_switch is not None and model.rope_switch.threshold == 4096
    for name, i in GOLD["special_token_ids"].items():
        assert model.tokenizer.convert_tokens_to_ids(name) == i, name


@pytest.mark.parametrize("i", list(SAMPLES))
def test_frames_prompt_tokens_and_groups(model, prepared, i):
    s, x = SAMPLES[i], prepared[i]
    assert list(x.video.indices) == s["frame_indices"]
    assert x.prompt_text == s["prompt"]
    vp = x.layout.video_positions
    unexpanded = x.tokens[0, : int(vp[0])].tolist() + [model.placeholder_id] + x.tokens[0, int(vp[-1]) + 1:].tolist()
    assert unexpanded == s["input_ids"]
    assert x.seq_len == s["expanded_len"] and x.layout.video_grid == (8, 16, 16)
    g = s["groups"]
    L = x.layout
    for name in ("video", "question", "non_option_question", "true_option"):
        span = getattr(L, name)
        assert [span.start, span.stop] == g[name], name
    assert L.positions("false_options").tolist() == g["false_options"]
    for letter, o in g["options"].items():
        assert [L.options[letter].start, L.options[letter].stop] == o["expanded"], letter
    assert L.last == g["last"] and vp.tolist() == list(range(g["video"][0], g["video"][1]))


def test_pixels_and_input_embeddings(model, prepared, tensors):
    x = prepared[0]
    assert torch.equal(model.vision.pixels(x.video.frames), tensors["s0.pixel_values"])
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter="hook_embed")
    ref = tensors["s0.inputs_embeds"].reshape(cache["hook_embed"].shape)
    assert (cache["hook_embed"] - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("i", list(SAMPLES))
def test_logits_probabilities_and_rope_factor(model, prepared, clean_logits, tensors, i):
    s, logits = SAMPLES[i], clean_logits[i]
    assert model.rope_switch.current == "short" and s["rope_factor_used"] == "short_factor"
    assert (logits - tensors[f"s{i}.logits_last"]).abs().max() <= LOGIT_ATOL
    probs = logits.softmax(-1)
    b = s["baseline"]
    assert int(probs.argmax()) == b["argmax_t"] and close(float(probs.max()), b["base_score"])
    assert close(float(probs[b["gt_t"]]), b["base_score_gt"])
    letters = model.option_probs(prepared[i], logits[None, None])
    for letter, p in b["letter_probs"].items():
        assert close(letters[letter], p), letter
        assert prepared[i].option_token_ids[letter] == b["letter_ids"][letter]


@pytest.mark.parametrize("n", [4096, 4097])
def test_longrope_short_and_long_factors(model, n):
    """The text model alone on n positions: the official code takes the long factors, at every
    position, once n > 4096 (modeling_phi3.py L149-153)."""
    checks = GOLD["longrope_checks"]["lm_only"]
    g = next(c for c in checks["runs"] if c["N"] == n)
    ids = checks["cycle_ids"]
    tokens = torch.tensor([[ids[j % len(ids)] for j in range(n)]])
    with torch.no_grad():
        logits = model(tokens)
    assert model.rope_switch.current == ("long" if n > 4096 else "short") and g["rope_factor_used"].startswith(
        model.rope_switch.current)
    for pos, key in ((-1, "top20_last"), (0, "top20_pos0")):
        top = logits[0, pos].topk(20)
        assert top.indices.tolist() == g[key]["ids"], key
        assert (top.values - torch.tensor(g[key]["logits"])).abs().max() <= LOGIT_ATOL, key


@pytest.mark.parametrize("i", list(SAMPLES))
def test_blocked_edge_counts(prepared, i):
    for target, blocks in SAMPLES[i]["knockouts"].items():
        pairs = get_target(target).pairs
        assert [p.label for p in pairs] == [PAIR_OF[b["block_desc"]] for b in blocks], target
        for p, b in zip(pairs, blocks):
            assert int(blocked_mask(prepared[i].layout, [p]).sum()) == b["blocked_edges"], (target, p.label)


@pytest.mark.parametrize("i,target", KO)
def test_knockout_centre_layers(model, prepared, i, target):
    s = SAMPLES[i]
    recs = vl.knockout.sweep(model, prepared[i], target, window=GOLD["window"], layers=GOLD["centre_layers"],
                             samples="all")
    for block in s["knockouts"][target]:
        mine = {r["layer"]: r for r in recs if r["pair"] == PAIR_OF[block["block_desc"]]}
        for x in block["results"]:
            r, where = mine[x["layer"]], (block["block_desc"], x["layer"])
            assert [r["layers"][0], r["layers"][-1] + 1] == x["layers"], where  # the golden's [start, end)
            assert r["layers"] == list(range(*x["layers"])) and r["n_blocked"] == block["blocked_edges"], where
            assert r["base_answer_t"] == s["baseline"]["argmax_t"], where
            assert close(r["ko_prob"], x["new_score"]) and close(r["ko_true_prob"], x["new_score_gt"]), where
            assert r["ko_answer_t"] == x["new_answer_t"], where
            assert r["rel_change"] == pytest.approx(x["relative_diff"], rel=PROB_RTOL, abs=REL_CHANGE_ATOL), where
            assert r["rel_change_true"] == pytest.approx(x["relative_diff_gt"], rel=PROB_RTOL, abs=REL_CHANGE_ATOL), where


@pytest.mark.parametrize("i", [pytest.param(i, marks=() if i == 0 else pytest.mark.slow)
                               for i in SAMPLES])  # one in the default run, all under -m slow
def test_effective_pathway(model, prepared, tensors, i):
    g, x = SAMPLES[i]["effective_pathway"], prepared[i]
    assert g["target"] == "effective-pathway-internvl"
    plan = load_spec("mini-internvl-4b-video-ft").plan(model.cfg.n_layers)
    for t, official in (("cross_frame", "INTER_FRAME_RANGE"), ("video_to_question", "VIDEO_TO_QUESTION_RANGE"),
                        ("question_to_last", "QUESTION_TO_LAST_RANGE")):
        kept = list(plan.kept_layers[t])
        assert [kept[0], kept[-1] + 1] == g[official], t
    counts = count_edges(x.layout, plan)
    for l, row in enumerate(g["per_layer"]):
        assert sorted(plan.blocked_types(l)) == sorted(EDGE_TYPE_OF[m] for m in row["active"]), l  # blocked there
        assert (counts.kept[l], counts.full[l]) == (row["kept"], row["total"]), l
    assert (counts.total_kept, counts.total_full) == (g["new_attention_cnt"], g["base_attention_cnt"])
    assert 100 * counts.kept_fraction == pytest.approx(g["attention_amount"], rel=1e-12)
    masker = PathwayMasker(x.layout, plan)
    with torch.no_grad():
        logits = model.run_with_hooks(x, fwd_hooks=masker.fwd_hooks())[0, -1]
    full = logits.softmax(-1)
    assert (full - tensors[f"s{i}.ep_probs_last"]).abs().max() <= 1e-6
    assert close(float(full[SAMPLES[i]["baseline"]["argmax_t"]]), g["new_score"]) and int(full.argmax()) == g["new_answer_t"]
    probs = model.option_probs(x, logits[None, None])
    for letter, p in g["option_probs"].items():
        assert close(probs[letter], p), letter
