"""The TransformerLens internals videolens uses (videolens._tl_compat) against TransformerLens'
own forward: if an upgrade changes them, these fail."""

from __future__ import annotations

import pytest
import torch

import videolens as vl
from videolens import _tl_compat as tlc
from videolens.hooked.attention import fast_attention

from conftest import SAMPLE  # noqa: E402 (the shared two-option question)


@pytest.fixture(scope="module")
def inputs(tiny_pllava, clip_path):
    return tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))


def test_version_check():
    tlc.check_version("3.9.0")
    tlc.check_version("3.12.1")
    for bad in ("4.0.0", "3.8.2", "2.16.0", "garbage"):
        with pytest.raises(ImportError, match="transformer_lens >= 3.9, < 4"):
            tlc.check_version(bad)


@torch.no_grad()
def test_attention_steps_equal_transformer_lens(tiny_pllava, inputs):
    """q/k/v with rotary, SDPA, and the output projection give TransformerLens' own hook values."""
    with fast_attention(tiny_pllava, False):
        _, cache = tiny_pllava.run_with_cache(inputs)
    attn = tiny_pllava.blocks[1].attn
    x = tiny_pllava.blocks[1].ln1(cache["blocks.1.hook_resid_pre"])
    q, k, v, offset = tlc.qkv_rotated(attn, x, x, x, None, None)
    assert offset == 0
    assert torch.allclose(q, cache["blocks.1.attn.hook_rot_q"], atol=1e-6)
    assert torch.allclose(k, cache["blocks.1.attn.hook_rot_k"], atol=1e-6)
    assert torch.allclose(v, cache["blocks.1.attn.hook_v"], atol=1e-6)
    out = tlc.project_z(attn, cache["blocks.1.attn.hook_z"])
    assert torch.allclose(out, cache["blocks.1.hook_attn_out"], atol=1e-5)
    assert tlc.attn_scale(attn) == pytest.approx(tiny_pllava.cfg.d_head ** 0.5)


@torch.no_grad()
def test_tail_and_caches_equal_transformer_lens(tiny_pllava, inputs):
    logits, cache = tiny_pllava.run_with_cache(inputs)
    L = tiny_pllava.cfg.n_layers
    assert torch.allclose(tlc.final_logits(tiny_pllava, cache[f"blocks.{L - 1}.hook_resid_post"]), logits, atol=1e-5)
    # a frozen cache of the first q0 positions, then the rest from layer 0: the same last logits
    q0 = inputs.seq_len - 5
    keys = [cache[f"blocks.{l}.attn.hook_k"][:, :q0] for l in range(L)]
    values = [cache[f"blocks.{l}.attn.hook_v"][:, :q0] for l in range(L)]
    kv = tlc.frozen_kv_cache(keys, values, q0, logits.device)
    out = tiny_pllava(cache["blocks.0.hook_resid_pre"][:, q0:], start_at_layer=0, past_kv_cache=kv)
    assert torch.allclose(out[0, -1], logits[0, -1], atol=1e-5)


def test_swap_class_refuses_unrelated_classes(tiny_pllava):
    with pytest.raises(TypeError):
        tlc.swap_class(tiny_pllava.blocks[0].attn, torch.nn.Linear)


@torch.no_grad()
def test_scoped_hooks_act_as_transformer_lens_hooks_and_leave_the_rest(tiny_pllava, inputs):
    """scoped_hooks runs the same hooks as model.hooks(); on exit it removes exactly its own, even
    after an error, and a user's hooks (permanent, or added outside the context) stay."""
    model = tiny_pllava
    double = [("blocks.0.hook_resid_post", lambda x, hook: 2 * x)]
    with model.hooks(fwd_hooks=double):
        ref = model(inputs)
    with tlc.scoped_hooks(model, double):
        ours = model(inputs)
        assert model.context_level == 1
    assert torch.equal(ours, ref)
    seen = []
    model.add_hook("blocks.1.hook_resid_pre", lambda x, hook: seen.append("user") or x)
    model.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append("permanent") or x, is_permanent=True)
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with tlc.scoped_hooks(model, double + [("blocks.1.hook_resid_pre", lambda x, hook: x)]):
                raise RuntimeError("inside")
        assert model.context_level == 0
        assert len(model.mod_dict["blocks.1.hook_resid_pre"].fwd_hooks) == 1  # the user's, not the scoped one
        assert len(model.mod_dict["blocks.0.hook_resid_post"].fwd_hooks) == 1  # the permanent one only
        plain = model(inputs)
        assert seen == ["permanent", "user"]
        assert not torch.equal(plain, ref)  # the doubling hook is gone
    finally:
        model.reset_hooks(including_permanent=True)
    with pytest.raises(KeyError):
        with tlc.scoped_hooks(model, [("blocks.0.no_such_hook", lambda x, hook: x)]):
            pass
    assert model.context_level == 0


@torch.no_grad()
def test_a_shared_frozen_past_is_rotated_once_with_the_same_values(tiny_pllava, inputs):
    """qkv_rotated on a frozen past broadcast to the batch (the knockout engines' cache) rotates the
    past keys once; q, k, v equal TransformerLens' way (join, then rotate every key) bit for bit,
    hook_rot_k sees the whole key set, and a per-row past still takes TransformerLens' way."""
    model = tiny_pllava
    attn = model.blocks[1].attn
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n in ("blocks.1.hook_resid_pre", "blocks.1.attn.hook_k",
                                                                          "blocks.1.attn.hook_v"))
    q0, B = inputs.seq_len // 2, 3
    x = model.blocks[1].ln1(cache["blocks.1.hook_resid_pre"][:, q0:]).expand(B, -1, -1)
    keys, values = cache["blocks.1.attn.hook_k"][:, :q0], cache["blocks.1.attn.hook_v"][:, :q0]
    shared = tlc.frozen_kv_cache([keys], [values], q0, "cpu", batch=B).entries[0]
    assert tlc._shared_past(attn, shared)
    seen = []
    attn.hook_rot_k.add_hook(lambda k, hook: seen.append(k.shape[1]) or k)
    try:
        q, k, v, offset = tlc.qkv_rotated(attn, x, x, x, shared, None)
    finally:
        attn.hook_rot_k.remove_hooks()
    assert offset == q0 and seen == [inputs.seq_len]
    # TransformerLens' way: join the pre-rotary keys, rotate them all from position 0
    qr, kr, vr = attn.calculate_qkv_matrices(x, x, x)
    kr, vr = torch.cat([keys.expand(B, -1, -1, -1), kr], 1), torch.cat([values.expand(B, -1, -1, -1), vr], 1)
    assert torch.equal(q, attn.apply_rotary(qr, q0)) and torch.equal(k, attn.apply_rotary(kr, 0)) and torch.equal(v, vr)
    per_row = tlc.frozen_kv_cache([keys.repeat(B, 1, 1, 1)], [values.repeat(B, 1, 1, 1)], q0, "cpu", batch=B).entries[0]
    assert not tlc._shared_past(attn, per_row)
    assert torch.equal(tlc.qkv_rotated(attn, x, x, x, per_row, None)[1], k)
