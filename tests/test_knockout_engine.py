"""The fast knockout engine against the plain full forward (fp32, 1e-5), and sweep records."""

from __future__ import annotations

import math

import pytest
import torch

import videolens as vl
from videolens.hooked.attention import fast_attention
from videolens.knockout import TARGETS, get_engine, knockout_logits, sweep

TOL = 1e-5
from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


@pytest.fixture(scope="module")
def model8(tmp_path_factory):
    from videolens.testing import make_tiny_pllava

    path = make_tiny_pllava(tmp_path_factory.mktemp("ckpt8") / "pllava8", n_layers=8)
    return vl.HookedVideoLLM.from_pretrained(path, device="cpu")


@pytest.fixture(scope="module")
def inputs8(model8, clip_path):
    return model8.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))


def _plain_full(model, inputs, target, window, **kw):
    with fast_attention(model, False):  # TransformerLens' own attention, a whole forward per condition
        return sweep(model, inputs, target, window=window, method="full", **kw)


_DEFAULT_GRID = {("cross-frame", 1), ("vql-to-ql", 2), ("question-and-options-to-last", 5), ("vq-to-true-opt", 8)}
_GRID = [(t, w) if (t, w) in _DEFAULT_GRID else pytest.param(t, w, marks=pytest.mark.slow)
         for t in sorted(TARGETS) for w in (1, 2, 5, 8)]  # each target and window once by default, all under -m slow


@pytest.mark.parametrize("target,window", _GRID)
def test_fast_equals_full(model8, inputs8, target, window):
    fast = sweep(model8, inputs8, target, window=window, method="fast")
    full = _plain_full(model8, inputs8, target, window)
    assert len(fast) == len(full) == len(TARGETS[target].pairs) * model8.cfg.n_layers
    for a, b in zip(fast, full):
        assert (a["pair"], a["layer"], a["layers"]) == (b["pair"], b["layer"], b["layers"])
        for L in a["ko_probs"]:
            assert abs(a["ko_probs"][L] - b["ko_probs"][L]) < TOL, (a["pair"], a["layer"], L)
        assert a["ko_letter"] == b["ko_letter"] or abs(a["ko_prob"] - a["ko_true_prob"]) < TOL
    # the knockouts do something, so this comparison can fail
    assert max(abs(r["rel_change"]) for r in fast if r["n_blocked"]) > 1.0


def test_fast_equals_full_chosen_heads(model8, inputs8):
    fast = sweep(model8, inputs8, "vql-to-ql", window=3, heads=[0, 2])
    full = _plain_full(model8, inputs8, "vql-to-ql", 3, heads=[0, 2])
    allh = sweep(model8, inputs8, "vql-to-ql", window=3)
    assert max(abs(a["ko_prob"] - b["ko_prob"]) for a, b in zip(fast, full)) < TOL
    assert max(abs(a["ko_prob"] - b["ko_prob"]) for a, b in zip(fast, allh)) > 1e-4


def test_fast_equals_full_any_layers_and_custom_pairs(model8, inputs8):
    clean = get_engine("fast").clean(model8, inputs8)
    for pairs in (["frames_before:2->frame:2"], ["video->video[same_frame]"], ["question->question"]):
        for layers in ([0, 3, 6], [5], [2, 3, 4, 5, 6, 7]):
            fast = knockout_logits(model8, inputs8, pairs, layers, method="fast", clean=clean)
            with fast_attention(model8, False):
                full = knockout_logits(model8, inputs8, pairs, layers, method="full")
            assert torch.allclose(fast.softmax(-1), full.softmax(-1), atol=TOL, rtol=0), (pairs, layers)


@pytest.mark.parametrize("method", ["fast", "full"])
def test_one_off_knockout_is_one_forward(model8, inputs8, method):
    """Without clean= a condition is one hooked forward of the prompt (a clean run for a single
    condition would be a second one), and it equals the engine's path through a clean run."""
    forwards = []
    last = model8.cfg.n_layers - 1  # every path through the model passes its last block
    counter = [(f"blocks.{last}.hook_resid_pre", lambda x, hook: forwards.append(x.shape[1]))]
    with model8.hooks(fwd_hooks=counter):
        one = knockout_logits(model8, inputs8, "video->video[cross_frame]", [2, 3], method=method)
    assert forwards == [inputs8.seq_len]
    clean = get_engine(method).clean(model8, inputs8)
    via_clean = knockout_logits(model8, inputs8, "video->video[cross_frame]", [2, 3], method=method, clean=clean)
    assert (one - via_clean).abs().max() <= TOL
    assert (one - clean.logits).abs().max() > 1e-3  # the knockout moves the logits
    other = model8.prepare(vl.VideoQA(video=inputs8.video, question="Is it red?", candidates=["yes", "no"], answer="no"))
    with pytest.raises(ValueError, match="another input"):
        knockout_logits(model8, other, "video->last", [2], method=method, clean=clean)


def test_records(model8, inputs8):
    recs = sweep(model8, inputs8, "vql-to-ql", window=9 if model8.cfg.n_layers >= 9 else 5, layers=[0, 7])
    assert [(r["pair"], r["layer"]) for r in recs] == [
        (p, l) for p in ["video->question", "video->last", "question->last", "last->last"] for l in (0, 7)]
    probs = model8.option_probs(inputs8)
    base = max(probs, key=probs.get)
    with torch.no_grad():
        full = model8(inputs8)[0, -1].softmax(-1)
    argmax_t = int(full.argmax())
    for r in recs:
        assert r["target"] == "vql-to-ql" and r["window"] == 5
        assert r["layers"] == ([0, 1, 2] if r["layer"] == 0 else [5, 6, 7])
        # the official metric: the baseline's full-vocabulary argmax token
        assert r["base_answer_t"] == argmax_t and abs(r["base_prob"] - float(full[argmax_t])) < 1e-5
        assert r["base_letter"] == base and r["true_letter"] == "B"
        assert abs(r["letter_base_prob"] - probs[base]) < 1e-5 and abs(r["base_true_prob"] - probs["B"]) < 1e-5
        assert math.isclose(r["rel_change"], (r["ko_prob"] - r["base_prob"]) / r["base_prob"] * 100, rel_tol=1e-9)
        assert math.isclose(r["letter_rel_change"], (r["letter_ko_prob"] - r["letter_base_prob"])
                            / r["letter_base_prob"] * 100, rel_tol=1e-9)
        assert math.isclose(r["rel_change_true"], (r["ko_true_prob"] - r["base_true_prob"]) / r["base_true_prob"] * 100,
                            rel_tol=1e-9)
        assert r["ko_letter"] == max(r["ko_probs"], key=r["ko_probs"].get)
    last = [r for r in recs if r["pair"] == "last->last"]
    assert all(r["n_blocked"] == 1 and r["rel_change"] != 0.0 for r in last)  # the diagonal is blocked
    kept = sweep(model8, inputs8, "vql-to-ql", window=5, layers=[0], self_edges="keep")
    assert [r["n_blocked"] for r in kept if r["pair"] == "last->last"] == [0]


def test_correct_samples_only(model8, clip_path):
    probs = None
    for answer in SAMPLE["candidates"]:
        inputs = model8.prepare(vl.VideoQA(video=str(clip_path), question=SAMPLE["question"],
                                           candidates=SAMPLE["candidates"], answer=answer))
        probs = probs or model8.option_probs(inputs)
        right_letter = inputs.layout.true_letter == max(probs, key=probs.get)
        # the official rule: the full-vocabulary argmax token is the true letter's token
        right = int(model8(inputs)[0, -1].argmax()) == inputs.option_token_ids[inputs.layout.true_letter]
        for mode, keep in (("correct", right), ("wrong", not right), ("correct_option", right_letter)):
            recs = sweep(model8, inputs, "cross-frame", window=3, samples=mode)
            assert (len(recs) == model8.cfg.n_layers) if keep else (recs == [])


def test_sweep_argument_errors(model8, inputs8):
    with pytest.raises(ValueError, match="larger than the model"):
        sweep(model8, inputs8, "cross-frame", window=model8.cfg.n_layers + 1)
    with pytest.raises(KeyError, match="known targets"):
        sweep(model8, inputs8, "no-such-target", window=3)
    with pytest.raises(ValueError, match="method"):
        sweep(model8, inputs8, "cross-frame", window=3, method="fastest")
    with pytest.raises(ValueError, match="samples"):
        sweep(model8, inputs8, "cross-frame", window=3, samples="some")


@pytest.mark.parametrize("plain_attention", [False, True])
def test_batched_conditions_equal_one_by_one(model8, inputs8, plain_attention):
    """``batch_conditions``: staggered batches of conditions (every target in one-layer windows and
    two in whole-model windows on SDPA; two targets, window 3 on the plain path; batches that split
    groups) equal the one-by-one fast engine (itself == the plain full forward,
    above), on the SDPA path and on TransformerLens' own attention (4-D per-row masks through the
    score hook); one target also against the plain full forward directly."""
    with fast_attention(model8, not plain_attention):
        grid = ([("cross-frame", 3, 5), ("vql-to-ql", 3, 5)] if plain_attention else
                [(t, 1, 3) for t in sorted(TARGETS)] + [("cross-frame", 8, 64), ("vq-to-true-opt", 8, 64)])
        for target, window, batch in grid:
            single = sweep(model8, inputs8, target, window=window, batch_conditions=1)
            batched = sweep(model8, inputs8, target, window=window, batch_conditions=batch)
            assert [(r["pair"], r["layer"]) for r in batched] == [(r["pair"], r["layer"]) for r in single]
            err = max(abs(a["ko_probs"][L] - b["ko_probs"][L]) for a, b in zip(batched, single)
                      for L in a["ko_probs"])
            assert err < TOL, (target, window, batch)
        # heads: per-row masks of n_heads
        single = sweep(model8, inputs8, "vql-to-ql", window=3, heads=[0, 2], batch_conditions=1)
        batched = sweep(model8, inputs8, "vql-to-ql", window=3, heads=[0, 2], batch_conditions=7)
        assert max(abs(a["ko_prob"] - b["ko_prob"]) for a, b in zip(batched, single)) < TOL
    full = _plain_full(model8, inputs8, "vql-to-ql", 3)
    batched = sweep(model8, inputs8, "vql-to-ql", window=3, batch_conditions=16)
    assert max(abs(a["ko_prob"] - b["ko_prob"]) for a, b in zip(batched, full)) < TOL
    assert max(abs(r["rel_change"]) for r in batched) > 1.0  # the knockouts do something


def test_batched_conditions_run_each_condition_in_its_own_window(model8, inputs8):
    """A batch holds conditions of different windows and pairs; swapping one's window changes only it."""
    from videolens.knockout import knockout_hooks
    from videolens.knockout.batched import run_batched
    from videolens.knockout.engine import FastEngine

    eng = FastEngine()
    clean = eng.clean(model8, inputs8)
    hook = knockout_hooks(model8, "video->last", [0], layout=inputs8)[0][1]
    other = knockout_hooks(model8, "question->last", [0], layout=inputs8)[0][1]
    conds = [(hook, [0, 1]), (other, [2, 3, 4]), (hook, [5]), (hook, [])]
    got = run_batched(model8, clean, conds, batch_size=8)
    for (h, layers), g in zip(conds, got):
        assert torch.allclose(g, eng.run(model8, clean, h, layers), atol=TOL, rtol=0)
    assert torch.equal(got[3], clean.logits)  # nothing blocked: the clean logits
    assert (got[0] - got[2]).abs().max() > 1e-4  # windows differ, so the results do
    with pytest.raises(ValueError, match="positive"):
        sweep(model8, inputs8, "cross-frame", window=3, batch_conditions=0)


def test_settings_object_runs_the_same_sweep_as_keyword_options(model8, inputs8):
    from videolens.knockout import KnockoutSettings

    kw = sweep(model8, inputs8, "vql-to-ql", window=3, layers=[0, 5], heads=[1])
    s = KnockoutSettings(targets="vql-to-ql", window=3, layers=(0, 5), heads=(1,), samples="all")
    assert sweep(model8, inputs8, settings=s) == kw
    # several targets: one sweep, the records of each target in order
    both = KnockoutSettings(targets=("cross-frame", "vql-to-ql"), window=3, layers=(0, 5), heads=(1,), samples="all")
    cf = sweep(model8, inputs8, "cross-frame", window=3, layers=[0, 5], heads=[1])
    assert sweep(model8, inputs8, settings=both) == cf + kw
    assert both.header() == {"targets": ["cross-frame", "vql-to-ql"], "window": 3, "samples": "all",
                             "self_edges": "block", "heads": [1], "layers": [0, 5]}


@pytest.mark.parametrize("build,err,msg", [
    (lambda S: S(targets=()), ValueError, "no target"),
    (lambda S: S(targets="no-such-target"), vl.knockout.UnknownTargetError, "unknown knockout target"),
    (lambda S: S(targets="cross-frame", window=0), ValueError, "positive"),
    (lambda S: S(targets="cross-frame", samples="some"), ValueError, "samples must be one of"),
    (lambda S: S(targets="cross-frame", self_edges="never"), ValueError, "self_edges"),
    (lambda S: S(targets="cross-frame", method="fastest"), ValueError, "unknown knockout method"),
    (lambda S: S(targets="cross-frame", heads=(0, 0)), ValueError, "distinct"),
    (lambda S: S(targets="cross-frame", batch_conditions=0), ValueError, "batch_conditions"),
    (lambda S: S.from_options("cross-frame", {"windw": 3}), TypeError, "unknown knockout option"),
])
def test_settings_are_checked_when_built(build, err, msg):
    from videolens.knockout import KnockoutSettings

    with pytest.raises(err, match=msg):
        build(KnockoutSettings)


def test_settings_are_checked_against_the_model_and_not_mixed_with_options(model8, inputs8):
    from videolens.knockout import KnockoutSettings

    with pytest.raises(ValueError, match="larger than the model"):
        KnockoutSettings(targets="cross-frame", window=9).check(model8)
    with pytest.raises(ValueError, match="out of range"):
        KnockoutSettings(targets="cross-frame", heads=(7,), window=3).check(model8)
    with pytest.raises(ValueError, match="centre layer"):
        KnockoutSettings(targets="cross-frame", layers=(8,), window=3).check(model8)
    s = KnockoutSettings(targets="cross-frame", window=3)
    with pytest.raises(TypeError, match="not both"):
        sweep(model8, inputs8, "cross-frame", settings=s)
    with pytest.raises(TypeError, match="not both"):
        sweep(model8, inputs8, settings=s, window=5)


def test_auto_batch_size_follows_the_free_memory(model8, monkeypatch):
    """``"auto"`` takes as many conditions as the memory share holds: 1 when little is free, the
    CPU cap on a CPU (the packing limit for groups that pack), more on CUDA, and a per-head mask
    costs more than a shared one."""
    from videolens.knockout import batched

    per = batched.bytes_per_condition(model8.cfg, 100, 120, per_head=False)
    assert batched.bytes_per_condition(model8.cfg, 100, 120, per_head=True) > per > 0
    assert batched.bytes_per_condition(model8.cfg, 200, 220, per_head=False) > per
    monkeypatch.setattr(batched, "free_memory", lambda device: 10 * per)
    assert batched.auto_batch_size(model8, 100, 120, False, "cpu") == min(2, batched.CPU_MAX_BATCH)
    assert batched.auto_batch_size(model8, 100, 120, False, "cuda") == 8  # 0.8 of 10 conditions' memory
    monkeypatch.setattr(batched, "free_memory", lambda device: per // 10)
    assert batched.auto_batch_size(model8, 100, 120, False, "cuda") == 1  # never below one condition
    monkeypatch.setattr(batched, "free_memory", lambda device: 10**6 * per)
    assert batched.auto_batch_size(model8, 100, 120, False, "cpu") == batched.CPU_MAX_BATCH
    assert batched.free_memory("cpu") > 0  # this machine's MemAvailable
    # a group that packs (few new rows beside many frozen positions): up to the packing limit on the CPU
    assert batched.packs_batches(model8)
    assert batched.auto_batch_size(model8, 1, 120, False, "cpu") == 119
    assert batched.auto_batch_size(model8, 10, 120, False, "cpu") == 11
    assert batched.auto_batch_size(model8, 30, 120, False, "cpu") == batched.CPU_MAX_BATCH  # 4 x 30 > 90: no
    with fast_attention(model8, False):  # TransformerLens' attention does not pack
        assert not batched.packs_batches(model8)
        assert batched.auto_batch_size(model8, 1, 120, False, "cpu") == batched.CPU_MAX_BATCH
    from videolens.hooked import attention

    monkeypatch.setattr(attention, "PACK_SHARED_PAST", False)
    assert batched.auto_batch_size(model8, 1, 120, False, "cpu") == batched.CPU_MAX_BATCH


def test_auto_batches_and_out_of_memory_retries_give_the_one_by_one_numbers(model8, inputs8, monkeypatch):
    """``batch_size="auto"`` equals one by one; a batch that runs out of memory is halved and retried
    (warned), every condition computed once, and later batches keep the smaller size."""
    from videolens.knockout import batched
    from videolens.knockout.engine import FastEngine

    one = sweep(model8, inputs8, "vql-to-ql", window=3, batch_conditions=1)
    auto = sweep(model8, inputs8, "vql-to-ql", window=3, batch_conditions="auto")
    assert max(abs(a["ko_prob"] - b["ko_prob"]) for a, b in zip(auto, one)) < TOL
    clean = FastEngine().clean(model8, inputs8)
    hook = vl.knockout.knockout_hooks(model8, "video->last", [0], layout=inputs8)[0][1]
    conds = [(hook, [l]) for l in range(8)]
    run_group, sizes = batched._run_group, []

    def small_memory(model, clean, q0, group):
        sizes.append(len(group))
        if len(group) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run_group(model, clean, q0, group)

    monkeypatch.setattr(batched, "_run_group", small_memory)
    with pytest.warns(RuntimeWarning) as warned:
        got = batched.run_batched(model8, clean, conds, batch_size=8)
    assert [str(w.message) for w in warned] == [
        f"batched knockout: out of memory with {n} conditions per batch; retrying with {n // 2}" for n in (8, 4)]
    assert sizes == [8, 4, 2, 2, 2, 2]
    for (h, layers), g in zip(conds, got):
        assert torch.allclose(g, FastEngine().run(model8, clean, h, layers), atol=TOL, rtol=0)
    monkeypatch.setattr(batched, "_run_group", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")))
    with pytest.raises(torch.OutOfMemoryError):  # one condition alone does not fit: the error itself
        batched.run_batched(model8, clean, conds[:1], batch_size=1)
    monkeypatch.setattr(batched, "_run_group", lambda *a: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not a memory error: raised at once
        batched.run_batched(model8, clean, conds, batch_size=8)


def test_batched_reading_of_conditions_equals_one_at_a_time(model8, inputs8):
    """The sweep reads its records' values for many conditions at once (one copy to the host per
    batch); they equal the values read one condition at a time, chunk boundaries included."""
    from videolens.knockout.sweep import _option_probs, _read_conditions

    g = torch.Generator().manual_seed(0)
    results = [3 * torch.randn(model8.cfg.d_vocab, generator=g) for _ in range(5)]
    answer_t, true_t = 7, inputs8.option_token_ids[inputs8.layout.letters[0]]
    for rows in (2, 256):
        read = _read_conditions(inputs8, results, answer_t, true_t, rows=rows)
        for r, logits in zip(read, results):
            full = logits.float().softmax(-1)
            assert r.finite and r.argmax_t == int(full.argmax())
            assert r.option_probs == _option_probs(inputs8, logits)
            assert (r.max_prob, r.answer_prob, r.true_prob) == (float(full.max()), float(full[answer_t]), float(full[true_t]))
    assert _read_conditions(inputs8, results[:1], answer_t, None)[0].true_prob is None
    bad = results[0].clone()
    bad[3] = float("nan")
    assert not _read_conditions(inputs8, [bad], answer_t, true_t)[0].finite


def test_one_hook_active_in_every_row_is_broadcast_not_copied(model8, inputs8, monkeypatch):
    """Where every row of a batch is in its window with the same hook, the layer gets that mask once
    ([1, h, q, k], broadcast over the batch) instead of a copy a row; the logits equal one by one."""
    from videolens.knockout import batched, knockout_hooks
    from videolens.knockout.engine import FastEngine

    made = []
    real = batched.RowMasks

    class Spy(real):
        def __init__(self, masks, q0):
            made.append(masks.shape[0])
            super().__init__(masks, q0)

    monkeypatch.setattr(batched, "RowMasks", Spy)
    clean = FastEngine().clean(model8, inputs8)
    cross = knockout_hooks(model8, "video->video[cross_frame]", [0], layout=inputs8)[0][1]
    other = knockout_hooks(model8, "frames_before:1->frame:1", [0], layout=inputs8)[0][1]  # the same first query
    for conds, shared in (([(cross, [2, 3, 4])] * 3, True), ([(cross, [2, 3, 4]), (other, [2, 3, 4])], False)):
        made.clear()
        got = batched.run_batched(model8, clean, conds, batch_size=8)
        assert set(made) == ({1} if shared else {len(conds)})
        for (h, layers), g in zip(conds, got):
            assert torch.allclose(g, FastEngine().run(model8, clean, h, layers), atol=TOL, rtol=0)


def test_packed_shared_past_equals_per_row_copies(model8, inputs8, monkeypatch):
    """Batched rows over the shared frozen past attend as one packed sequence (the past keys and
    values once; ``attention.PACK_SHARED_PAST``): the same logits as every row over its own copy,
    for one-row and many-row groups, per-head masks included. Not taken where a hook reads
    ``hook_rot_k`` (it sees every row's joined keys, as TransformerLens gives them) or where the
    batch's new rows outnumber the past positions (cross-frame)."""
    from videolens.hooked import attention
    from videolens.knockout import knockout_hooks
    from videolens.knockout.batched import run_batched
    from videolens.knockout.engine import FastEngine

    packed_shapes = []
    real = attention._packed_forward
    monkeypatch.setattr(attention, "_packed_forward",
                        lambda attn, q_in, *a: packed_shapes.append(tuple(q_in.shape[:2])) or real(attn, q_in, *a))
    clean = FastEngine().clean(model8, inputs8)
    conds = []
    for pair in ("video->last", "question->last", "video->question", "video->video[cross_frame]"):
        for heads in (None, [0, 2]):
            hook = knockout_hooks(model8, pair, [0], layout=inputs8, heads=heads)[0][1]
            conds += [(hook, [l]) for l in range(0, 8, 2)] + [(hook, [1, 2, 3])]
    got = torch.stack(run_batched(model8, clean, conds, batch_size=6))
    monkeypatch.setattr(attention, "PACK_SHARED_PAST", False)
    n_packed = len(packed_shapes)
    ref = torch.stack(run_batched(model8, clean, conds, batch_size=6))
    assert len(packed_shapes) == n_packed  # switched off: the per-row path only
    S = inputs8.seq_len
    assert {q for _, q in packed_shapes} >= {1} and max(q for _, q in packed_shapes) > 1  # one-row and many-row groups
    assert all(b * q <= S - q for b, q in packed_shapes) and all(b > 1 for b, _ in packed_shapes)
    assert (got - ref).abs().max() < TOL
    # a hook on hook_rot_k: the per-row path, the hook seeing every row's joined keys [batch, S, kv_heads, d_head]
    monkeypatch.setattr(attention, "PACK_SHARED_PAST", True)
    packed_shapes.clear()
    seen = []
    one_row = [c for c in conds if c[0].first_query == S - 1][:4]
    with model8.hooks(fwd_hooks=[("blocks.7.attn.hook_rot_k", lambda k, hook: seen.append(tuple(k.shape)))]):
        hooked = torch.stack(run_batched(model8, clean, one_row, batch_size=4))
    assert seen and all(s[:2] == (4, S) for s in seen)  # layer 7: every condition has joined the batch
    assert (4, 1) in packed_shapes  # layer 6 (all four joined, no hook there) still packs
    assert (hooked - torch.stack(run_batched(model8, clean, one_row, batch_size=4))).abs().max() < TOL


def test_grouped_keys_repeated_to_every_head_equal_enable_gqa():
    """``expand_kv_heads`` (used on CUDA where the memory-efficient kernel refuses grouped heads)
    gives SDPA the same attention as ``enable_gqa``."""
    from videolens.hooked.attention import _efficient_takes_gqa, expand_kv_heads

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, h, n, 16, generator=g) for h, n in ((8, 5), (2, 9), (2, 9)))
    mask = torch.rand(3, 1, 5, 9, generator=g) > 0.3
    mask[..., 0] = True
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    ke, ve = expand_kv_heads(k, v, 8)
    assert ke.shape == (3, 8, 9, 16) and torch.equal(ke[:, 5], k[:, 1])  # head 5 of 8 reads group 1 of 2
    assert torch.allclose(torch.nn.functional.scaled_dot_product_attention(q, ke, ve, attn_mask=mask), ref, atol=1e-6)
    assert _efficient_takes_gqa(q, k, v, mask) is False  # a CPU tensor: torch's CUDA kernel check says no
