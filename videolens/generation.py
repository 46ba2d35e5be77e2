"""Greedy decoding after a video prompt, with TransformerLens' key-value cache (``HookedVideoLLM.generate``)."""

from __future__ import annotations

from typing import List

import torch

from ._tl_compat import new_kv_cache
from .inputs import VideoLLMInput

__all__ = ["greedy_decode", "greedy_tokens"]


@torch.no_grad()
def greedy_tokens(model, inputs: VideoLLMInput, max_new_tokens: int = 16, stop_at_eos: bool = True) -> List[int]:
    """The greedy continuation of one prompt as token ids, with TransformerLens' key-value cache;
    stops at EOS (not included), ``max_new_tokens`` or the context's end."""
    cache = new_kv_cache(model.cfg, model.device, 1)
    mask = torch.ones_like(inputs.tokens)
    logits = model(inputs, past_kv_cache=cache, attention_mask=mask)
    out: List[int] = []
    eos = getattr(model.tokenizer, "eos_token_id", None)
    for _ in range(max_new_tokens):
        nxt = int(logits[0, -1].argmax())
        if stop_at_eos and eos is not None and nxt == eos:
            break
        out.append(nxt)
        if len(out) + inputs.seq_len >= model.cfg.n_ctx:
            break
        tok = torch.tensor([[nxt]], device=model.device)
        logits = model(tok, past_kv_cache=cache, attention_mask=torch.ones_like(tok))
    return out


def greedy_decode(model, inputs: VideoLLMInput, max_new_tokens: int = 16, stop_at_eos: bool = True) -> str:
    """The decoded greedy continuation of one prompt (it ends with ``Best option:(``, so a trained
    model continues with the letter); ``greedy_tokens`` decoded."""
    return model.tokenizer.decode(greedy_tokens(model, inputs, max_new_tokens, stop_at_eos))
