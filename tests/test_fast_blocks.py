"""``videolens.hooked.block``: ``OneNormBlock`` (ln1 once for q, k and v) and ``AddcmulGatedMLP``
(the gate product and bias in one op) against TransformerLens' own ``TransformerBlock`` and
``GatedMLP``: bitwise equal outputs and caches (the MLP's bias zero, as in every family here; within
float rounding otherwise), the same hooks firing, TL's forward whenever a hook is on ln1 or the
configuration is not the standard pre-norm block."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components import GatedMLP, TransformerBlock

from videolens.hooked.block import AddcmulGatedMLP, OneNormBlock, install_fast_blocks, one_norm_supported


def _paths(model):
    return [b.last_path for b in model.blocks]


BASE = dict(n_layers=2, d_model=32, n_ctx=24, d_head=8, n_heads=4, d_vocab=50, act_fn="silu", seed=0)
CONFIGS = {
    "rms-gated-rotary": dict(normalization_type="RMS", gated_mlp=True, positional_embedding_type="rotary"),
    "layernorm-gelu": dict(normalization_type="LN", act_fn="gelu"),
    "norm-before-and-after": dict(normalization_type="RMS", gated_mlp=True, use_normalization_before_and_after=True,
                                  positional_embedding_type="rotary"),
    "hook-mlp-in": dict(normalization_type="LN", use_hook_mlp_in=True),
    "gqa": dict(normalization_type="RMS", gated_mlp=True, n_key_value_heads=2, positional_embedding_type="rotary"),
}
FALLBACK = {  # TransformerLens' forward runs: a configuration OneNormBlock does not cover
    "parallel": dict(normalization_type="LN", parallel_attn_mlp=True),
    "attn-only": dict(normalization_type="LN", attn_only=True),
    "split-qkv-input": dict(normalization_type="LN", use_split_qkv_input=True),
    "shortformer": dict(normalization_type="LN", positional_embedding_type="shortformer"),
}


def _model(extra, mlp_bias: bool = False):
    model = HookedTransformer(HookedTransformerConfig(**{**BASE, **extra}))
    for p in model.parameters():  # norms away from 1 so a wrong norm shows
        torch.nn.init.normal_(p, 0.0, 0.3)
    if not mlp_bias:  # the gated MLPs of every family here have no bias
        for b in model.blocks:
            if isinstance(getattr(b, "mlp", None), GatedMLP):
                torch.nn.init.zeros_(b.mlp.b_in)
    return model.eval()


TOKENS = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_equal_to_transformerlens_bitwise(name):
    model = _model(CONFIGS[name])
    assert one_norm_supported(model.cfg)
    with torch.no_grad():
        logits, cache = model.run_with_cache(TOKENS, names_filter=lambda n: "ln1" not in n)
        install_fast_blocks(model)
        assert all(type(b) is OneNormBlock for b in model.blocks)
        assert all(type(b.mlp) is AddcmulGatedMLP for b in model.blocks) == bool(model.cfg.gated_mlp)
        fast_logits, fast_cache = model.run_with_cache(TOKENS, names_filter=lambda n: "ln1" not in n)
        assert _paths(model) == ["one_norm"] * 2
    assert torch.equal(logits, fast_logits)
    assert set(cache.keys()) == set(fast_cache.keys())
    for k in cache.keys():
        assert torch.equal(cache[k], fast_cache[k]), k


@pytest.mark.parametrize("name", list(FALLBACK))
def test_other_configurations_run_transformerlens_forward(name):
    model = _model(FALLBACK[name])
    assert not one_norm_supported(model.cfg) or name == "shortformer"
    with torch.no_grad():
        plain = model(TOKENS)
        install_fast_blocks(model)
        fast = model(TOKENS)
    assert _paths(model) == ["plain"] * 2
    assert torch.equal(plain, fast)


def test_gated_mlp_with_a_bias_within_float_rounding():
    """An edited (non-zero) b_in: addcmul rounds the sum once where TL rounds twice."""
    model = _model(CONFIGS["rms-gated-rotary"], mlp_bias=True)
    names = lambda n: "mlp" in n  # noqa: E731
    with torch.no_grad():
        logits, cache = model.run_with_cache(TOKENS, names_filter=names)
        install_fast_blocks(model)
        fast_logits, fast_cache = model.run_with_cache(TOKENS, names_filter=names)
    assert not torch.equal(logits, torch.zeros_like(logits))
    torch.testing.assert_close(fast_logits, logits, rtol=1e-5, atol=1e-5)
    assert set(cache.keys()) == set(fast_cache.keys()) and len(cache.keys()) == 2 * 4
    for k in cache.keys():
        torch.testing.assert_close(fast_cache[k], cache[k], rtol=1e-5, atol=1e-5)


def test_gated_mlp_gradients_match():
    model = _model(CONFIGS["rms-gated-rotary"], mlp_bias=True)
    grads = []
    for install in (False, True):
        if install:
            install_fast_blocks(model)
        model.zero_grad()
        model(TOKENS, return_type="loss").backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if "mlp" in n})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6)


@pytest.fixture()
def ln1_calls(tiny_pllava):
    """Calls of block 0's ln1 module, counted by wrapping its forward (no torch hook: one of those
    switches the block to TransformerLens' forward)."""
    ln1, calls = tiny_pllava.blocks[0].ln1, []
    inner = ln1.forward
    ln1.forward = lambda x: calls.append(1) or inner(x)
    try:
        yield calls
    finally:
        del ln1.forward


def test_ln1_runs_once_and_a_hook_on_it_brings_back_three_calls(tiny_pllava, inputs, ln1_calls):
    """The norm module runs once a layer; a hook on ln1 makes the block TransformerLens' again (the
    hook fires three times a layer there, with the same values)."""
    seen = []
    with torch.no_grad():
        clean = tiny_pllava(inputs)
        assert len(ln1_calls) == 1 and _paths(tiny_pllava)[0] == "one_norm"
        ln1_calls.clear()
        hooked = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[("blocks.0.ln1.hook_normalized",
                                                                lambda x, hook: seen.append(x.clone()))])
        assert len(ln1_calls) == 3 and len(seen) == 3 and _paths(tiny_pllava)[0] == "plain"
        ln1_calls.clear()
        install_fast_blocks(tiny_pllava, False)
        try:
            assert type(tiny_pllava.blocks[0]) is TransformerBlock and type(tiny_pllava.blocks[0].mlp) is GatedMLP
            plain = tiny_pllava(inputs)
            assert len(ln1_calls) == 3
        finally:
            install_fast_blocks(tiny_pllava)
    assert torch.equal(clean, hooked) and torch.equal(clean, plain)
    assert all(torch.equal(seen[0], s) for s in seen[1:])


def test_a_torch_hook_on_the_ln1_module_runs_transformerlens_forward(tiny_pllava, inputs, ln1_calls):
    outputs = []
    handle = tiny_pllava.blocks[0].ln1.register_forward_hook(lambda m, a, o: outputs.append(o))
    try:
        with torch.no_grad():
            tiny_pllava(inputs)
    finally:
        handle.remove()
    assert len(outputs) == 3 and len(ln1_calls) == 3 and _paths(tiny_pllava)[0] == "plain"


def test_an_ln1_edit_reaches_queries_keys_and_values(tiny_pllava, inputs):
    """An edit on ln1 runs through TransformerLens' forward: its three calls all take it."""
    edit = [("blocks.1.ln1.hook_normalized", lambda x, hook: x * 0.5)]
    with torch.no_grad():
        fast = tiny_pllava.run_with_hooks(inputs, fwd_hooks=edit)
        install_fast_blocks(tiny_pllava, False)
        try:
            plain = tiny_pllava.run_with_hooks(inputs, fwd_hooks=edit)
        finally:
            install_fast_blocks(tiny_pllava)
        assert not torch.equal(fast, tiny_pllava(inputs))
    assert torch.equal(fast, plain)


def test_a_block_of_another_class_is_refused():
    class Other(torch.nn.Module):
        pass

    fake = type("M", (), {"blocks": [Other()]})()
    with pytest.raises(TypeError, match="Other is not TransformerLens' TransformerBlock"):
        install_fast_blocks(fake)
