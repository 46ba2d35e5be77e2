"""The SDPA attention path against TransformerLens' plain path: same outputs, same hooks firing,
fallback whenever scores or patterns are needed."""

from __future__ import annotations

import pytest
import torch

from videolens.hooked.attention import ScoreMaskHook, fast_attention, has_fast_attention, sdpa_supported
from videolens.knockout import knockout_hooks

TOL = 1e-5


def paths(model):
    return [b.attn.last_path for b in model.blocks]


def test_installed_and_used_by_default(tiny_pllava, inputs):
    assert all(has_fast_attention(b.attn) for b in tiny_pllava.blocks)
    assert sdpa_supported(tiny_pllava.cfg)
    with torch.no_grad():
        fast = tiny_pllava(inputs)
        assert paths(tiny_pllava) == ["sdpa"] * tiny_pllava.cfg.n_layers
        with fast_attention(tiny_pllava, False):
            plain = tiny_pllava(inputs)
            assert paths(tiny_pllava) == ["plain"] * tiny_pllava.cfg.n_layers
    assert torch.allclose(fast, plain, atol=TOL, rtol=0)


NON_SCORE_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_z", "hook_attn_out",
                   "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out")


def test_other_hooks_fire_with_the_same_values(tiny_pllava, inputs):
    names = lambda n: n.endswith(NON_SCORE_HOOKS)  # noqa: E731
    with torch.no_grad():
        _, fast = tiny_pllava.run_with_cache(inputs, names_filter=names)
        assert paths(tiny_pllava) == ["sdpa"] * tiny_pllava.cfg.n_layers
        with fast_attention(tiny_pllava, False):
            _, plain = tiny_pllava.run_with_cache(inputs, names_filter=names)
    assert sorted(fast.keys()) == sorted(plain.keys())
    assert len(fast.keys()) == tiny_pllava.cfg.n_layers * len(NON_SCORE_HOOKS)
    for k in fast.keys():
        assert torch.allclose(fast[k], plain[k], atol=TOL, rtol=0), k


def test_caching_patterns_falls_back(tiny_pllava, inputs):
    with torch.no_grad():
        logits, cache = tiny_pllava.run_with_cache(inputs)
        assert paths(tiny_pllava) == ["plain"] * tiny_pllava.cfg.n_layers
        assert "blocks.0.attn.hook_pattern" in cache.cache_dict
        seen = []
        spy = [("blocks.1.attn.hook_attn_scores", lambda x, hook: seen.append(1))]
        tiny_pllava.run_with_hooks(inputs, fwd_hooks=spy)
        assert paths(tiny_pllava) == ["sdpa", "plain", "sdpa"] and seen == [1]
        out = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[("blocks.2.attn.hook_pattern", lambda x, hook: None)])
        assert paths(tiny_pllava) == ["sdpa", "sdpa", "plain"]
    assert torch.allclose(out, logits, atol=TOL, rtol=0)


def test_pattern_edit_is_honoured(tiny_pllava, inputs):
    """A hook that changes the pattern forces the plain path, so its edit takes effect."""
    def uniform(pattern, hook):
        causal = torch.ones_like(pattern).tril()
        return causal / causal.sum(-1, keepdim=True)

    with torch.no_grad():
        edited = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
        with fast_attention(tiny_pllava, False):
            ref = tiny_pllava.run_with_hooks(inputs, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)])
        clean = tiny_pllava(inputs)
    assert torch.allclose(edited, ref, atol=TOL, rtol=0)
    assert (edited - clean).abs().max() > 1e-3


@pytest.mark.parametrize("heads", [None, [1, 3]])
def test_knockout_hooks_fold_into_sdpa(tiny_pllava, inputs, heads):
    hooks = knockout_hooks(tiny_pllava, ["video->last", "question->last", "video->video[cross_frame]"],
                           layers=[0, 2], heads=heads, layout=inputs)
    with torch.no_grad():
        fast = tiny_pllava.run_with_hooks(inputs, fwd_hooks=hooks)
        assert paths(tiny_pllava) == ["sdpa"] * 3
        with fast_attention(tiny_pllava, False):
            plain = tiny_pllava.run_with_hooks(inputs, fwd_hooks=hooks)
        clean = tiny_pllava(inputs)
    assert torch.allclose(fast, plain, atol=TOL, rtol=0)
    assert (fast - clean).abs().max() > 1e-3


class BlockRowZero(ScoreMaskHook):
    """Blocks every key of query 3, itself included (an empty row)."""

    def blocked(self, q_offset, n_query, n_key, n_heads, device):
        m = torch.zeros(1, n_query, n_key, dtype=torch.bool, device=device)
        if q_offset <= 3 < q_offset + n_query:
            m[:, 3 - q_offset] = True
        return m


def test_empty_row_attends_to_nothing_as_transformerlens(tiny_pllava, inputs):
    hooks = [("blocks.1.attn.hook_attn_scores", BlockRowZero())]
    with torch.no_grad():
        fast = tiny_pllava.run_with_hooks(inputs, fwd_hooks=hooks)
        assert paths(tiny_pllava)[1] == "sdpa"
        with fast_attention(tiny_pllava, False):
            plain = tiny_pllava.run_with_hooks(inputs, fwd_hooks=hooks)
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, plain, atol=TOL, rtol=0)


def test_key_value_cache_and_generation(tiny_pllava, inputs):
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    with torch.no_grad():
        full = tiny_pllava(inputs)
        tokens = inputs.tokens
        cut = tokens.shape[1] - 5
        prefix = inputs.layout.video_positions.max().item() + 1
        assert cut > prefix
        # prefix through the model with a cache, then the last 5 tokens incrementally
        cache = TransformerLensKeyValueCache.init_cache(tiny_pllava.cfg, tiny_pllava.device, 1)
        resid = tiny_pllava(inputs, stop_at_layer=0)  # embeddings with the video spliced in
        tiny_pllava(resid[:, :cut], start_at_layer=0, past_kv_cache=cache)
        step = tiny_pllava(resid[:, cut:], start_at_layer=0, past_kv_cache=cache)
        assert paths(tiny_pllava) == ["sdpa"] * 3
        with fast_attention(tiny_pllava, False):
            text_plain = tiny_pllava.generate(inputs, max_new_tokens=4)
        text_fast = tiny_pllava.generate(inputs, max_new_tokens=4)
    assert torch.allclose(step[0, -1], full[0, -1], atol=TOL, rtol=0)
    assert text_fast == text_plain


def test_gradients_match(tiny_pllava, inputs):
    def grad_of_embed(enabled):
        with fast_attention(tiny_pllava, enabled):
            resid = tiny_pllava(inputs, stop_at_layer=0).detach().requires_grad_(True)
            logits = tiny_pllava(resid, start_at_layer=0)
            logits[0, -1].log_softmax(-1)[inputs.option_token_ids["B"]].backward()
        return resid.grad

    assert torch.allclose(grad_of_embed(True), grad_of_embed(False), atol=TOL, rtol=0)
