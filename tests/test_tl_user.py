"""TransformerLens habits on a video model: nothing runs without its video silently; the bundled
model has a name."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens.prompting.inputs import stack_inputs
from videolens.hooked.model import MissingVideoError

from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


@pytest.fixture(scope="module")
def inputs(tiny_pllava, clip_path):
    return tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))


def test_tokens_without_their_video_raise(tiny_pllava, inputs):
    with pytest.raises(MissingVideoError, match=r"placeholder \(id 390\) at 64 position\(s\) but no video"):
        tiny_pllava(inputs.tokens)
    with pytest.raises(MissingVideoError):
        tiny_pllava(inputs.prompt_text)  # TransformerLens tokenizes the text: one placeholder, no video
    with torch.no_grad():
        video = tiny_pllava(inputs)
        tiny_pllava.allow_missing_video = True  # the explicit opt-out
        try:
            bare = tiny_pllava(inputs.tokens)
        finally:
            tiny_pllava.allow_missing_video = False
        text = tiny_pllava(inputs.tokens[:, :5])  # text without placeholders runs as usual
    assert not torch.allclose(bare, video) and text.shape[1] == 5


def test_bundled_model_by_name_and_hub_ids(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from videolens.sources.hub import HubError

    path = vl.bundled_model_path()
    assert (path / "config.json").exists() and path.name == "tiny-videollm"
    model = vl.HookedVideoLLM.from_pretrained("tiny-videollm", device="cpu")
    assert model.cfg.n_layers == vl.HookedVideoLLM.from_pretrained(path, device="cpu").cfg.n_layers
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a hub id goes to the hub (tests/test_hub.py); here offline
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(HubError, match="llava-hf/llava-v1.6-vicuna-7b-hf: not in the local hub cache"):
        vl.HookedVideoLLM.from_pretrained("llava-v1.6-vicuna-7b-hf")
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        vl.HookedVideoLLM.from_pretrained(tmp_path / "nothing-here")


def test_generate_rejects_sampling_arguments(tiny_pllava, inputs):
    text = tiny_pllava.generate(inputs, max_new_tokens=2)
    assert isinstance(text, str)
    for kw in ({"do_sample": True}, {"temperature": 0.7}, {"top_k": 5}):
        with pytest.raises(ValueError, match="decodes greedily"):
            tiny_pllava.generate(inputs, max_new_tokens=2, **kw)


def test_frames_other_than_the_pooling_depth_warn(tiny_pllava, clip_path):
    from videolens.hooked.model import FramePoolingWarning

    sample = vl.VideoQA(video=str(clip_path), **SAMPLE)
    with pytest.warns(FramePoolingWarning, match="num_frames=8 sampled frames are pooled into 4 temporal slots"):
        eight = tiny_pllava.prepare(sample, num_frames=8)
    assert eight.layout.slot_frames == ((0, 1), (2, 3), (4, 5), (6, 7))  # the layout says what each slot holds
    with pytest.warns(FramePoolingWarning, match="num_frames=2"):
        assert tiny_pllava.prepare(sample, num_frames=2).layout.slot_frames == ((0,), (0,), (1,), (1,))
    from videolens.prompting.layout import slot_frames

    assert slot_frames(16, 8)[3] == (6, 7) and slot_frames(6, 4) == ((0, 1), (1, 2), (3, 4), (4, 5))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FramePoolingWarning)
        four = tiny_pllava.prepare(sample, num_frames=4)  # one sampled frame a slot: no warning
    assert four.layout.slot_frames == ((0,), (1,), (2,), (3,))


# ---- TransformerLens' own helpers on video inputs -------------------------------------------------
@pytest.fixture(scope="module")
def pair(tiny_pllava, clip_path, tmp_path_factory):
    """The same prompt on two videos: clean and corrupted."""
    from videolens.testing import write_clip

    other = write_clip(tmp_path_factory.mktemp("other") / "other.mp4", seed=7)
    clean = tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE), num_frames=4)
    corrupt = tiny_pllava.prepare(vl.VideoQA(video=str(other), **SAMPLE), num_frames=4)
    assert torch.equal(clean.tokens, corrupt.tokens) and not torch.allclose(clean.video_embeds, corrupt.video_embeds)
    return clean, corrupt


def _logit_diff(clean):
    a, b = clean.option_token_ids["A"], clean.option_token_ids["B"]
    return lambda logits: logits[0, -1, a] - logits[0, -1, b]


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory, clip_path):
    """A 2-layer model with 2x2x2 video tokens and two videos for one prompt."""
    from videolens.testing import make_tiny_pllava, write_clip

    tmp = tmp_path_factory.mktemp("small")
    ck = make_tiny_pllava(tmp / "m", n_layers=2, pooling_shape=(2, 2, 2), extra_config={"num_frames": 2},
                          d_model=32, n_heads=4, vision_layers=1, d_vision=16, image_size=16)
    model = vl.HookedVideoLLM.from_pretrained(ck, device="cpu")
    sample = dict(question="What moves?", candidates=["left", "right"], answer="left")
    clean = model.prepare(vl.VideoQA(video=str(clip_path), **sample))
    corrupt = model.prepare(vl.VideoQA(video=str(write_clip(tmp / "o.mp4", seed=7)), **sample))
    return model, clean, corrupt


def test_transformer_lens_patching_runs_on_videos(small_pair):
    """transformer_lens.patching on a VideoLLMInput: every cell equals a hand-patched run (a small
    model: the per-position helper runs layers x positions forwards)."""
    from transformer_lens import patching

    tiny_pllava, clean, corrupt = small_pair
    metric = _logit_diff(clean)
    _, clean_cache = tiny_pllava.run_with_cache(clean)
    resid = patching.get_act_patch_resid_pre(tiny_pllava, corrupt, clean_cache, metric)
    assert resid.shape == (tiny_pllava.cfg.n_layers, clean.seq_len)
    heads = patching.get_act_patch_attn_head_out_all_pos(tiny_pllava, corrupt, clean_cache, metric)
    assert heads.shape == (tiny_pllava.cfg.n_layers, tiny_pllava.cfg.n_heads)

    layer, pos = 1, int(clean.layout.video_positions[3])
    def put(act, hook):  # noqa: E306
        act[:, pos] = clean_cache[hook.name][:, pos]
        return act
    with torch.no_grad():
        by_hand = metric(tiny_pllava.run_with_hooks(corrupt, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", put)]))
        base = metric(tiny_pllava(corrupt))
    assert abs(float(resid[layer, pos]) - float(by_hand)) < 1e-5 and abs(float(by_hand - base)) > 1e-6

    def put_head(act, hook):
        act[:, :, 2] = clean_cache[hook.name][:, :, 2]
        return act
    with torch.no_grad():
        by_hand = metric(tiny_pllava.run_with_hooks(corrupt, fwd_hooks=[("blocks.0.attn.hook_z", put_head)]))
    assert abs(float(heads[0, 2]) - float(by_hand)) < 1e-5


def test_batch_rows_keep_their_video_and_answer_per_row(tiny_pllava, pair):
    clean, corrupt = pair
    batch = stack_inputs([clean, corrupt])
    assert batch.shape == (2, clean.seq_len) and len(batch) == 2 and batch.size(-1) == clean.seq_len
    probs = tiny_pllava.option_probs(batch)
    assert isinstance(probs, list) and len(probs) == 2
    for row, single in ((0, clean), (1, corrupt)):
        one = tiny_pllava.option_probs(single)
        assert all(abs(probs[row][L] - one[L]) < 1e-5 for L in one)
        with torch.no_grad():
            assert torch.allclose(tiny_pllava(batch[row]), tiny_pllava(single), atol=1e-5)
    assert tiny_pllava.answer(batch) == [tiny_pllava.answer(clean), tiny_pllava.answer(corrupt)]
    with pytest.raises(IndexError, match="batch rows only"):
        batch[0, 3]
    with pytest.raises(IndexError, match="out of range"):
        batch[5]


def test_loss_counts_text_targets_only(tiny_pllava, pair):
    clean, _ = pair
    with torch.no_grad():
        logits = tiny_pllava(clean)
        loss = tiny_pllava(clean, return_type="loss")
        per_token = tiny_pllava(clean, return_type="loss", loss_per_token=True)
        both_logits, both_loss = tiny_pllava(clean, return_type="both")
    logp = logits[0, :-1].log_softmax(-1)
    nll = -logp.gather(-1, clean.tokens[0, 1:, None])[:, 0]
    text = torch.ones(clean.seq_len, dtype=torch.bool)
    text[clean.layout.video_positions] = False
    expected = nll[text[1:]].mean()
    assert abs(float(loss) - float(expected)) < 1e-5 and abs(float(both_loss) - float(expected)) < 1e-5
    assert abs(float(nll.mean()) - float(expected)) > 1e-3  # counting the video placeholders would differ
    assert per_token.shape == (1, clean.seq_len - 1) and float(per_token[0, ~text[1:]].abs().sum()) == 0.0
    assert torch.allclose(both_logits, logits)


def test_to_str_tokens_labels_video_positions(tiny_pllava, pair):
    clean, _ = pair
    strs = tiny_pllava.to_str_tokens(clean)
    T, h, w = clean.layout.video_grid
    vp = clean.layout.video_positions.tolist()
    assert len(strs) == clean.seq_len and strs[vp[0]] == "f0[0,0]" and strs[vp[-1]] == f"f{T - 1}[{h - 1},{w - 1}]"
    assert strs[vp[h * w + w + 2]] == "f1[1,2]"
    assert "<image>" not in strs and strs[clean.layout.last] == tiny_pllava.to_str_tokens(clean.tokens[0])[-1]


def test_weight_processing_keeps_logits_and_makes_dla_exact(tiny_pllava_dir, pair):
    clean, _ = pair
    plain = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu")
    folded = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", fold_ln=True, center_unembed=True,
                                               fold_value_biases=True)
    assert plain.cfg.normalization_type == "RMS" and folded.cfg.normalization_type == "RMSPre"
    a, b = clean.option_token_ids["A"], clean.option_token_ids["B"]

    def dla(model):
        with torch.no_grad():
            logits, cache = model.run_with_cache(clean)
        stack = cache.decompose_resid(layer=-1, pos_slice=-1)
        attrs = cache.logit_attrs(stack, tokens=torch.tensor([a]), incorrect_tokens=torch.tensor([b]), pos_slice=-1)
        return logits, float(attrs.sum()), float(logits[0, -1, a] - logits[0, -1, b])

    with pytest.warns(UserWarning, match="not folded"):  # videolens.hooked.conventions.UnfoldedNormWarning
        ref_logits, plain_sum, diff = dla(plain)
    logits, folded_sum, folded_diff = dla(folded)
    assert (logits.log_softmax(-1) - ref_logits.log_softmax(-1)).abs().max() < 1e-4  # unembed centring shifts by a constant
    assert abs(folded_diff - diff) < 1e-4 and abs(folded_sum - diff) < 1e-4  # DLA sums to the logit difference
    assert abs(plain_sum - diff) > 1e-3  # without folding it does not (the issue's -4.31 vs -5.33)
    only_fold = vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", fold_ln=True)
    with torch.no_grad():
        assert (only_fold(clean) - ref_logits).abs().max() < 1e-4
    with pytest.raises(ValueError, match="RMSNorm"):
        vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu", center_writing_weights=True)


def test_vision_hook_points_fire_in_run_with_cache(tiny_pllava, clip_path):
    sample = vl.VideoQA(video=str(clip_path), **SAMPLE)
    plain = tiny_pllava.prepare(sample, num_frames=4)
    inputs = tiny_pllava.prepare(sample, num_frames=4, keep_pixels=True)
    n_tower = len(tiny_pllava.vision.blocks)
    assert n_tower == tiny_pllava.vision.tower.config.num_hidden_layers > 0
    with torch.no_grad():
        logits, cache = tiny_pllava.run_with_cache(inputs)
        ref = tiny_pllava(plain)
    assert torch.allclose(logits, ref, atol=1e-5)
    T, h, w = plain.layout.video_grid
    names = ["vision.hook_pixel_values", "vision.hook_patch_features", "vision.hook_out.projector",
             "vision.hook_out.pool", "vision.hook_video_embeds"] + [f"vision.blocks.{i}.{h}" for i in range(n_tower)
                                                                    for h in ("hook_resid_post", "hook_pattern")]
    assert all(n in cache for n in names), sorted(k for k in cache.keys() if k.startswith("vision"))
    assert cache["vision.hook_out.pool"].shape == (T, h, w, tiny_pllava.cfg.d_model)
    assert cache["vision.hook_out.projector"].shape[-1] == tiny_pllava.cfg.d_model
    assert cache["vision.blocks.0.hook_resid_post"].shape[0] == 4  # one row per sampled frame
    pattern = cache["vision.blocks.1.hook_pattern"]  # [frames, heads, 1 + patches, 1 + patches]
    n_tok = cache["vision.blocks.1.hook_resid_post"].shape[1]
    assert pattern.shape == (4, tiny_pllava.vision.tower.config.num_attention_heads, n_tok, n_tok)
    assert torch.allclose(pattern.sum(-1), torch.ones(()), atol=1e-5)
    assert tiny_pllava.vision.tower.config._attn_implementation != "videolens_hooked"  # switched back
    assert "vision.hook_out.pool" not in tiny_pllava.run_with_cache(plain)[1]  # precomputed embeddings: no tower run

    def zero(act, hook):
        return torch.zeros_like(act)
    with torch.no_grad():  # an edit inside the tower flows to the answer
        edited = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[(f"vision.blocks.{n_tower - 2}.hook_resid_post", zero)])
        later = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[("vision.hook_out.projector", zero)])
    assert not torch.allclose(edited, ref, atol=1e-4) and not torch.allclose(later, edited, atol=1e-4)

    def uniform(pattern, hook):
        return torch.full_like(pattern, 1.0 / pattern.shape[-1])
    with torch.no_grad():  # an edited tower attention pattern changes what the tower computes
        flat = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[("vision.blocks.0.hook_pattern", uniform)])
    assert not torch.allclose(flat, ref, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(tiny_pllava(inputs), ref, atol=1e-5)  # hooks are gone afterwards


def test_prompts_of_different_lengths_batch_with_left_padding(tiny_pllava, clip_path, pair):
    clean, corrupt = pair
    longer = tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), question="What did the person do first in this clip?",
                                            candidates=["Took the towel.", "Put down the blanket."],
                                            answer="Took the towel."), num_frames=4)
    three = tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), question="What?", candidates=["a", "b", "c"],
                                           answer="c"), num_frames=4)
    assert longer.seq_len > clean.seq_len
    batch = stack_inputs([clean, longer, corrupt])
    assert batch.shape == (3, longer.seq_len) and batch.attention_mask.sum(1).tolist() == [
        clean.seq_len, longer.seq_len, corrupt.seq_len]
    with pytest.raises(ValueError, match="other option letters"):
        stack_inputs([clean, three])
    probs = tiny_pllava.option_probs(batch)
    listed = tiny_pllava.prepare([clean.sample, longer.sample], num_frames=4)
    assert torch.equal(listed.tokens, stack_inputs([clean, longer]).tokens)
    listed = tiny_pllava.prepare([clean.sample, longer.sample], num_frames=4)
    assert torch.equal(listed.tokens, stack_inputs([clean, longer]).tokens)
    with torch.no_grad():
        logits = tiny_pllava(batch)
        for row, single in enumerate((clean, longer, corrupt)):
            ref = tiny_pllava(single)
            assert (logits[row, -1] - ref[0, -1]).abs().max() < 1e-4  # padding changes nothing
            one = tiny_pllava.option_probs(single)
            assert probs[row].keys() == one.keys() and all(abs(probs[row][L] - one[L]) < 1e-5 for L in one)
            assert torch.equal(batch[row].tokens, single.tokens) and batch[row].layout == single.layout
        loss = tiny_pllava(batch, return_type="loss", loss_per_token=True)
        assert (loss[1, :] - tiny_pllava(longer, return_type="loss", loss_per_token=True)[0]).abs().max() < 1e-4
        pad = batch.shape[1] - clean.seq_len
        assert float(loss[0, :pad].abs().sum()) == 0.0  # padding is no target
