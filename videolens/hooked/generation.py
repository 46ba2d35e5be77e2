"""Greedy decoding after a video prompt, with TransformerLens' key-value cache (``HookedVideoLLM.generate``)."""

from __future__ import annotations

import dataclasses
from typing import List

import torch

from .._tl_compat import new_kv_cache
from ..errors import NonFiniteError
from ..prompting.inputs import VideoLLMInput

__all__ = ["greedy_tokens", "generate"]


@torch.no_grad()
def greedy_tokens(model, inputs: VideoLLMInput, max_new_tokens: int = 16, stop_at_eos: bool = True,
                  use_past_kv_cache: bool = True) -> List[int]:
    """The greedy continuation of one prompt as token ids; stops at EOS (not included),
    ``max_new_tokens`` or the context's end. With ``use_past_kv_cache`` (default) each step runs one
    position on TransformerLens' key-value cache; without it each step reruns the whole sequence
    (prompt, video and the tokens so far), as TL does.

    Raises:
        videolens.errors.BatchedInputError: a batch (``generate`` takes its rows one at a time).
        videolens.errors.NonFiniteError: NaN/inf logits at a decoding step.
    """
    inputs.one_row("greedy_tokens")
    eos = getattr(model.tokenizer, "eos_token_id", None)
    out: List[int] = []
    if use_past_kv_cache:
        cache = new_kv_cache(model.cfg, model.device, 1)
        logits = model(inputs, past_kv_cache=cache, attention_mask=torch.ones_like(inputs.tokens))
    else:
        logits = model(inputs)
    for step in range(max_new_tokens):
        if not bool(torch.isfinite(logits[0, -1]).all()):
            raise NonFiniteError(f"generate: NaN/inf logits at decoding step {step}; no token is chosen from them")
        nxt = int(logits[0, -1].argmax())
        if stop_at_eos and eos is not None and nxt == eos:
            break
        out.append(nxt)
        if len(out) + inputs.seq_len >= model.cfg.n_ctx:
            break
        tok = torch.tensor([[nxt]], device=model.device)
        if use_past_kv_cache:
            logits = model(tok, past_kv_cache=cache, attention_mask=torch.ones_like(tok))
        else:
            grown = torch.cat([inputs.tokens.to(model.device), torch.tensor([out], device=model.device)], dim=1)
            logits = model(dataclasses.replace(inputs, tokens=grown))
    return out


def generate(model, inputs: VideoLLMInput, max_new_tokens: int = 16, stop_at_eos: bool = True,
             use_past_kv_cache: bool = True, return_type: str = "input"):
    """``HookedVideoLLM.generate`` on a video input (greedy), with TransformerLens' ``return_type``:
    ``"input"`` / ``"str"`` the decoded continuation (a video prompt has no text form to repeat);
    ``"tokens"`` the prompt's tokens followed by the continuation, ``[batch, pos]`` as TL returns
    them (a batch's rows right-padded with the pad token where their continuations differ in length;
    a left-padded batch's rows unpadded first). A batch gives one continuation per row (a list of
    strings for ``"str"``).

    Raises:
        ValueError: an unknown ``return_type`` (``"embeds"`` is not offered for video inputs).
    """
    if return_type not in ("input", "str", "tokens"):
        raise ValueError(f"return_type must be 'input', 'str' or 'tokens' for a video input, got {return_type!r}")
    rows = [inputs[i] for i in range(inputs.batch_size)]
    new = [greedy_tokens(model, r, max_new_tokens, stop_at_eos, use_past_kv_cache) for r in rows]
    if return_type == "tokens":
        seqs = [torch.cat([r.tokens[0].to(model.device), torch.tensor(n, dtype=r.tokens.dtype, device=model.device)])
                for r, n in zip(rows, new)]
        pad = getattr(model.tokenizer, "pad_token_id", None) or 0
        return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad)
    texts = [model.tokenizer.decode(n) for n in new]
    return texts[0] if inputs.batch_size == 1 else texts
