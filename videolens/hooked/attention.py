"""A fast attention path for HookedTransformer blocks: ``torch.nn.functional.scaled_dot_product_attention``.

TransformerLens computes attention with explicit matmuls and several full passes over the
``[batch, head, query, key]`` scores, so every score and pattern can be hooked. Most analyses never
look at them, and a knockout only needs some scores set to -inf before the softmax. This module
swaps each block's attention for a subclass whose ``forward``

- runs SDPA when no hook, cache or gradient hook needs that layer's ``hook_attn_scores`` or
  ``hook_pattern``; hooks on ``hook_attn_scores`` that are ``ScoreMaskHook`` objects (for example
  ``videolens.knockout.knockout_hooks``) are folded into SDPA's boolean attention mask;
- falls back to TransformerLens' own ``forward`` otherwise (any other hook on those two points,
  a cache asking for them, padding masks, configurations it does not cover);
- fires every other hook point (``hook_q/k/v``, ``hook_rot_q/k``, ``hook_z``) as before, and
  supports TransformerLens' key-value cache (``past_kv_cache``) with the same rotary offsets.

Both paths give the same outputs up to float rounding (tests/test_attention_fast_path.py).

Example::

    from videolens.hooked.attention import fast_attention
    logits = model(inputs)                      # SDPA in every layer
    _, cache = model.run_with_cache(inputs)     # caches patterns: plain path in every layer
    with fast_attention(model, False):          # force TransformerLens' plain path
        logits = model(inputs)
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch.nn.attention import SDPBackend, sdpa_kernel

from transformer_lens.utilities import get_act_name

from .._tl_compat import attn_scale, project_z, qkv_rotated, swap_class
from .edges import check_rows

__all__ = [
    "ScoreMaskHook",
    "KnockoutHook",
    "scores_hook_name",
    "has_fast_attention",
    "install_fast_attention",
    "fast_attention",
    "sdpa_supported",
]

_FALLBACK_ARCHITECTURES = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")

MASKED_SDPA_BACKENDS: Optional[List[SDPBackend]] = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""SDPA backends allowed for masked calls (knockouts) on CUDA; None lets torch choose. Measured on an
H200 in bf16 (benchmarks/knockout_sweep.py --paper --width 2048): torch's own choice (cuDNN
attention, which plans each new shape) took the batched sweep 11.8 s, the memory-efficient kernel
1.9 s; alone, one call of either takes about the same."""


class ScoreMaskHook:
    """A ``hook_attn_scores`` hook that only sets some scores to -inf, and can say which.

    Subclasses implement ``blocked(q_offset, n_query, n_key, n_heads, device)``: a bool tensor
    ``[1 or n_heads, n_query, n_key]`` (the same for every batch row) or
    ``[batch, 1 or n_heads, n_query, n_key]`` (one mask per row), True where the score of (query ``q_offset + i``, key ``j``)
    is blocked. Called as a TransformerLens hook it applies that mask to the scores
    ``[batch, head, query, key]`` (queries are the last ``n_query`` of the ``n_key`` positions, as
    with a key-value cache); the fast attention path reads ``blocked`` instead and passes the mask
    to SDPA, so both paths block the same edges.
    """

    #: True when the mask was checked to leave every row some key (lets the fast path skip a
    #: check); False for arbitrary masks.
    no_empty_rows: bool = False

    def blocked(self, q_offset: int, n_query: int, n_key: int, n_heads: int,
                device: torch.device) -> Bool[torch.Tensor, "*b_or_none h_or_1 query key"]:
        raise NotImplementedError

    def __call__(self, scores: Float[torch.Tensor, "batch head query key"], hook=None):
        Q, K = scores.shape[-2], scores.shape[-1]
        mask = self.blocked(K - Q, Q, K, scores.shape[1], scores.device)
        return scores.masked_fill(mask if mask.ndim == 4 else mask[None], float("-inf"))


def scores_hook_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_attn_scores``: where score masks (knockouts, pathways) apply."""
    return get_act_name("attn_scores", layer)


def _validate_mask(mask: torch.Tensor) -> Tuple[Bool[torch.Tensor, "S S"], Int[torch.Tensor, "S"]]:
    """The mask on the CPU, non-causal entries cleared (they are -inf already), and its blocked
    keys per query row (``videolens.hooked.edges.row_counts``)."""
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"a knockout mask is bool [S, S] (query, key); got shape {tuple(mask.shape)}")
    mask = mask.detach().to("cpu", torch.bool).tril()
    counts = mask.sum(-1)  # row_counts of a mask with no entry above the diagonal
    check_rows(mask, counts=counts)  # raises EmptyRowError before anything runs
    return mask, counts


class KnockoutHook(ScoreMaskHook):
    """Sets the scores of blocked (query, key) edges to -inf, in every head or in ``heads``.

    Args:
        mask: ``bool [S, S]`` indexed [query, key], True = blocked.
        heads: head indices to knock out (None: all heads).

    Works on a full forward (scores ``[batch, head, S, S]``) and on an incremental one with a
    key-value cache (scores ``[batch, head, Q, S]`` for the last ``Q`` queries).

    Raises (when called):
        ValueError: the forward has another number of key positions than the mask.
    """

    no_empty_rows = True  # validated below: the fast attention path needs no empty-row check

    def __init__(self, mask: Bool[torch.Tensor, "S S"], heads: Optional[Sequence[int]] = None):
        self.mask, counts = _validate_mask(mask)
        self.heads = None if heads is None else tuple(int(h) for h in heads)
        rows = counts.nonzero().flatten()
        self._first_query = int(rows[0]) if len(rows) else None
        self._n_edges = int(counts.sum())
        self._last: Optional[tuple] = None  # (key, tensor): reused across the layers of a window

    @property
    def seq_len(self) -> int:
        return int(self.mask.shape[0])

    @property
    def first_query(self) -> Optional[int]:
        """First query position with a blocked edge (None for an empty edge set)."""
        return self._first_query

    @property
    def n_edges(self) -> int:
        """Number of blocked edges (per layer and head)."""
        return self._n_edges

    def blocked(self, q_offset: int, n_query: int, n_key: int, n_heads: int,
                device: torch.device) -> Bool[torch.Tensor, "h_or_1 query key"]:
        if n_key != self.seq_len or q_offset + n_query != n_key:
            raise ValueError(
                f"this knockout mask is for {self.seq_len} positions; the forward has {n_key} keys and "
                f"{n_query} queries (build the mask for this input)"
            )
        key = (str(device), q_offset, n_query, n_heads)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        rows = self.mask[q_offset:n_key].to(device)
        if self.heads is None:
            out = rows[None]
        else:
            if max(self.heads) >= n_heads:
                raise ValueError(f"heads {self.heads} out of range for {n_heads} heads")
            out = torch.zeros(n_heads, n_query, n_key, dtype=torch.bool, device=device)
            out[list(self.heads)] = rows
        self._last = (key, out)
        return out

    def __repr__(self) -> str:
        heads = "all" if self.heads is None else list(self.heads)
        return f"KnockoutHook(S={self.seq_len}, edges={self.n_edges}, heads={heads})"


def sdpa_supported(cfg) -> bool:
    """Whether the fast path covers this configuration (else the plain path always runs).

    Covered: causal global attention with rotary or learned absolute positions, no ALiBi or
    relative bias, no score soft-cap, no attention sinks, no log-n scaling, no 4-bit weights, no
    per-head ``hook_result`` (``use_attn_result``), no split q/k/v inputs, no OLMo-style q/k norms.
    """
    softcap = getattr(cfg, "attn_scores_soft_cap", None)
    return (
        cfg.positional_embedding_type in ("rotary", "standard")
        and (cfg.attention_dir == "causal")
        and not (softcap is not None and softcap > 0)
        and not getattr(cfg, "use_attention_sinks", False)
        and not getattr(cfg, "use_logn_attn", False)
        and not cfg.load_in_4bit
        and not cfg.use_attn_result
        and not cfg.use_split_qkv_input
        and not cfg.use_attn_in
        and getattr(cfg, "clip_qkv", None) is None
        and cfg.original_architecture not in _FALLBACK_ARCHITECTURES
    )


def _score_masks(hp) -> Optional[List[ScoreMaskHook]]:
    """The ScoreMaskHooks on a HookPoint, [] when it has no hooks, None when any other hook
    (forward, pre-forward, backward, a conversion) is there."""
    if hp._forward_pre_hooks or hp._backward_hooks or getattr(hp, "_backward_pre_hooks", None) or hp.bwd_hooks:
        return None
    if getattr(hp, "hook_conversion", None) is not None:
        return None
    n = len(hp._forward_hooks)
    if n == 0:
        return []
    users = [h.user_hook for h in hp.fwd_hooks]
    if len(users) != n or not all(isinstance(u, ScoreMaskHook) for u in users):
        return None
    return users


def _sdpa_plan(attn, additive_attention_mask, attention_mask, position_bias) -> Optional[List[ScoreMaskHook]]:
    """The score masks to fold into SDPA for this call, or None when the plain path must run."""
    if not attn.use_sdpa or additive_attention_mask is not None or position_bias is not None:
        return None
    if attn.attn_type != "global" or getattr(attn, "_attention_dir_override", None) not in (None, "causal"):
        return None
    if not sdpa_supported(attn.cfg):
        return None
    if attention_mask is not None and not bool(attention_mask.all()):
        return None  # padding: TransformerLens' own handling (NaN rows -> 0) stays in charge
    if _score_masks(attn.hook_pattern) != []:
        return None
    return _score_masks(attn.hook_attn_scores)


def _sdpa_forward(attn, query_input, key_input, value_input, past_kv_cache_entry, attention_mask,
                  masks: List[ScoreMaskHook]) -> Float[torch.Tensor, "batch pos d_model"]:
    """``AbstractAttention.forward`` (TransformerLens 3.9) for the supported configurations, with
    the scores, softmax and pattern replaced by one SDPA call."""
    q, k, v, offset = qkv_rotated(attn, query_input, key_input, value_input, past_kv_cache_entry, attention_mask)
    B, Q, H, _ = q.shape
    K = k.shape[1]
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if not qh.is_cuda:  # the CPU kernel runs about 5% faster on [batch, head, pos, d_head]-contiguous inputs (the
        qh, kh, vh = qh.contiguous(), kh.contiguous(), vh.contiguous()  # copies cost less; benchmarks/forward.py)
    if kh.dtype != qh.dtype:
        kh, vh = kh.to(qh.dtype), vh.to(qh.dtype)
    gqa = kh.shape[1] != H
    scale = 1.0 / attn_scale(attn)
    if not masks and offset == 0 and Q == K:
        z = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        qpos = torch.arange(offset, offset + Q, device=q.device)
        allowed = (torch.arange(K, device=q.device)[None, :] <= qpos[:, None])[None, None]  # [1, 1, Q, K]
        for m in masks:
            blocked = m.blocked(offset, Q, K, H, q.device)
            allowed = allowed & ~(blocked if blocked.ndim == 4 else blocked[None])
        backends = (sdpa_kernel(MASKED_SDPA_BACKENDS) if MASKED_SDPA_BACKENDS is not None and qh.is_cuda
                    else contextlib.nullcontext())
        with backends:
            z = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed, scale=scale, enable_gqa=gqa)
        if not all(m.no_empty_rows for m in masks) and not bool(allowed.any(-1).all()):
            z = torch.nan_to_num(z, nan=0.0)  # as TransformerLens: an empty row attends to nothing
    return project_z(attn, z.transpose(1, 2))  # z: [batch, pos, head_index, d_head]


_FAST_CLASSES: Dict[type, type] = {}


def _fast_class(cls: Type) -> Type:
    if cls in _FAST_CLASSES.values():
        return cls
    if cls not in _FAST_CLASSES:

        class Fast(cls):
            use_sdpa = True
            last_path: Optional[str] = None

            def forward(self, query_input, key_input, value_input, past_kv_cache_entry=None,
                        additive_attention_mask=None, attention_mask=None, position_bias=None):
                masks = _sdpa_plan(self, additive_attention_mask, attention_mask, position_bias)
                if masks is None:
                    self.last_path = "plain"
                    return super().forward(query_input, key_input, value_input, past_kv_cache_entry,
                                           additive_attention_mask, attention_mask, position_bias)
                self.last_path = "sdpa"
                return _sdpa_forward(self, query_input, key_input, value_input, past_kv_cache_entry,
                                     attention_mask, masks)

        Fast.__name__ = Fast.__qualname__ = f"Fast{cls.__name__}"
        Fast.__module__ = __name__
        globals()[Fast.__name__] = Fast  # pickle finds it here (torch.save of a model or a cache)
        _FAST_CLASSES[cls] = Fast
    return _FAST_CLASSES[cls]


def __getattr__(name: str):
    """``videolens.hooked.attention.FastAttention`` (and ``Fast<any TL component>``) made on first use, so a
    model or cache saved with ``torch.save`` loads in a fresh process (PEP 562 module attribute)."""
    if name.startswith("Fast"):
        from transformer_lens import components

        base = getattr(components, name[4:], None)
        if isinstance(base, type):
            return _fast_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def has_fast_attention(attn: torch.nn.Module) -> bool:
    """Whether an attention module carries the fast path (``attn.use_sdpa`` switches it;
    ``attn.last_path`` says which path its latest forward took: ``"sdpa"`` or ``"plain"``)."""
    return type(attn) in _FAST_CLASSES.values()


def install_fast_attention(model: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """Give every ``blocks.{l}.attn`` of a HookedTransformer the SDPA fast path (in place).

    Parameters, buffers, hook names and the state dict are untouched: only the class of each
    attention module changes (to a subclass of its TransformerLens class). Returns ``model``.
    """
    for block in model.blocks:
        attn = block.attn
        swap_class(attn, _fast_class(type(attn)))
        attn.use_sdpa = enabled
    return model


@contextlib.contextmanager
def fast_attention(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Context manager: run with the fast path on (``True``) or off (``False``), then restore."""
    before = [getattr(b.attn, "use_sdpa", False) for b in model.blocks]
    install_fast_attention(model, enabled)
    try:
        yield
    finally:
        for b, was in zip(model.blocks, before):
            b.attn.use_sdpa = was
