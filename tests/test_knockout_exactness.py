"""Knockout against transformers: eager LlamaForCausalLM with a per-layer float 4D mask [B, 1, S, S]
(0 allowed, -inf blocked, causality included; REFERENCE section 2), same inputs_embeds, probabilities
within 1e-4."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import videolens as vl
from videolens.hooked.edges import blocked_mask
from videolens.knockout import TARGETS, layer_window, sweep

TOL = 1e-4
SAMPLE = dict(question="What is the bird doing?",
              candidates=["It flies away.", "It sleeps.", "It walks toward the camera."], answer="It sleeps.")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from videolens.testing import make_tiny_pllava

    return make_tiny_pllava(tmp_path_factory.mktemp("ckpt8x") / "pllava8", seed=3, n_layers=6)


def hf_reference(ckpt):
    """The language model of the checkpoint as transformers' LlamaForCausalLM with eager attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = json.loads((ckpt / "config.json").read_text())
    sd = load_file(str(ckpt / "model.safetensors"))
    tcfg = {k: v for k, v in cfg["text_config"].items() if k != "model_type"}
    lm = LlamaForCausalLM(LlamaConfig(**tcfg, attn_implementation="eager")).eval()
    missing, unexpected = lm.load_state_dict(
        {k[len("language_model."):]: v for k, v in sd.items() if k.startswith("language_model.")}, strict=False)
    assert not missing and not unexpected
    return lm


def float_mask(blocked: torch.Tensor) -> torch.Tensor:
    """[1, 1, S, S]: 0 where allowed, -inf where blocked or above the diagonal."""
    S = blocked.shape[0]
    allowed = torch.ones(S, S, dtype=torch.bool).tril() & ~blocked
    return torch.zeros(S, S).masked_fill(~allowed, float("-inf"))[None, None]


def hf_probs(lm, embeds, masks_per_layer, option_ids):
    handles = []
    for layer, mask in zip(lm.model.layers, masks_per_layer):
        def pre(module, args, kwargs, mask=mask):
            kwargs["attention_mask"] = mask
            return args, kwargs
        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with torch.no_grad():
            logits = lm(inputs_embeds=embeds).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return logits.float().softmax(-1)[option_ids]


def test_knockout_matches_transformers_eager(ckpt, clip_path):
    model = vl.HookedVideoLLM.from_pretrained(ckpt, device="cpu")
    inputs = model.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))
    lm = hf_reference(ckpt)
    # the same inputs_embeds: token embeddings with the video tokens written over the placeholders
    emb = lm.model.embed_tokens(inputs.tokens.clamp(max=lm.config.vocab_size - 1)).detach()
    emb[0, inputs.layout.video_positions] = inputs.video_embeds.reshape(-1, emb.shape[-1])
    ids = torch.tensor([inputs.option_token_ids[L] for L in inputs.layout.letters])
    n, window = model.cfg.n_layers, 3
    causal = float_mask(torch.zeros(inputs.seq_len, inputs.seq_len, dtype=torch.bool))

    base = hf_probs(lm, emb, [causal] * n, ids)
    ours = torch.tensor(list(model.option_probs(inputs).values()))
    assert torch.allclose(base, ours, atol=TOL, rtol=0)

    largest = 0.0
    for name, target in TARGETS.items():
        recs = sweep(model, inputs, name, window=window)
        for r, (pair, centre) in zip(recs, [(p, c) for p in target.pairs for c in range(n)]):
            ko = float_mask(blocked_mask(inputs.layout, pair))
            win = layer_window(centre, window, n)
            ref = hf_probs(lm, emb, [ko if l in win else causal for l in range(n)], ids)
            got = torch.tensor([r["ko_probs"][L] for L in inputs.layout.letters])
            assert torch.allclose(ref, got, atol=TOL, rtol=0), (name, pair.label, centre, ref, got)
            largest = max(largest, float(((ref - base).abs() / base).max()))
    assert largest > 1e-2  # the reference knockouts move the probabilities (relative): the test can fail
