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

from .._tl_compat import attn_scale, project_z, qkv_rotated, qkv_shared_past, shares_past, swap_class
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


PACK_SHARED_PAST = True
"""Batches whose rows share a frozen past (the knockout engines' batched conditions) attend as one
packed sequence: the past keys and values once, not copied into every row (``_packed_forward``;
False: every row gets its own copy, as TransformerLens' key-value cache joins them). At 7B a batch
of 192 one-row conditions at 1265 positions copies about 4 GB of keys and values a layer
otherwise. Taken where the new rows of the batch are at most as many as the past positions."""


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


def _allowed(masks: List[ScoreMaskHook], offset: int, Q: int, K: int, H: int,
             device) -> Bool[torch.Tensor, "b_or_1 h_or_1 query key"]:
    """True where query ``offset + i`` may attend to key ``j``: causal, and no score mask blocks it."""
    qpos = torch.arange(offset, offset + Q, device=device)
    allowed = (torch.arange(K, device=device)[None, :] <= qpos[:, None])[None, None]  # [1, 1, Q, K]
    for m in masks:
        blocked = m.blocked(offset, Q, K, H, device)
        allowed = allowed & ~(blocked if blocked.ndim == 4 else blocked[None])
    return allowed


def _efficient_takes_gqa(qh, kh, vh, allowed) -> bool:
    """Whether torch's memory-efficient SDPA kernel accepts these grouped-query inputs as they are
    (``enable_gqa``; torch's own check). Where it does not (it admitted only flash and math for
    grouped heads in the torch versions this was written against), a masked call would fall to the
    math kernel, which writes every ``[batch, head, query, key]`` score in float32."""
    from torch.backends.cuda import SDPAParams, can_use_efficient_attention

    try:
        return bool(can_use_efficient_attention(SDPAParams(qh, kh, vh, allowed, 0.0, False, True), False))
    except Exception:  # a torch whose SDPAParams takes other arguments: repeating the heads is always right
        return False


def expand_kv_heads(kh: Float[torch.Tensor, "batch kv_head key d_head"], vh: Float[torch.Tensor, "batch kv_head key d_head"],
                    n_heads: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Grouped keys and values repeated to ``n_heads`` heads (query head ``h`` reads key-value head
    ``h // (n_heads / kv_heads)``, as ``enable_gqa`` and TransformerLens' grouped-query attention)."""
    rep = n_heads // kh.shape[1]
    return kh.repeat_interleave(rep, dim=1), vh.repeat_interleave(rep, dim=1)


def _masked_sdpa(qh, kh, vh, allowed, scale: float, masks: List[ScoreMaskHook]) -> torch.Tensor:
    """SDPA with a boolean mask (``MASKED_SDPA_BACKENDS`` on CUDA, grouped keys and values repeated
    to every head where the memory-efficient kernel would refuse them: ``_efficient_takes_gqa``);
    rows with no allowed key give 0, as TransformerLens' NaN-to-zero, where a mask may leave such rows."""
    gqa = kh.shape[1] != qh.shape[1]
    if gqa and qh.is_cuda and not _efficient_takes_gqa(qh, kh, vh, allowed):
        kh, vh = expand_kv_heads(kh, vh, qh.shape[1])
        gqa = False
    backends = (sdpa_kernel(MASKED_SDPA_BACKENDS) if MASKED_SDPA_BACKENDS is not None and qh.is_cuda
                else contextlib.nullcontext())
    with backends:
        z = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed, scale=scale, enable_gqa=gqa)
    if not all(m.no_empty_rows for m in masks) and not bool(allowed.any(-1).all()):
        z = torch.nan_to_num(z, nan=0.0)  # as TransformerLens: an empty row attends to nothing
    return z


def _sdpa_inputs(q, k, v) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[batch, pos, head, d_head]`` -> ``[batch, head, pos, d_head]``, keys and values in the
    queries' dtype (contiguous on the CPU, whose kernel runs about 5% faster on them; the copies cost
    less: benchmarks/forward.py)."""
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if not qh.is_cuda:
        qh, kh, vh = qh.contiguous(), kh.contiguous(), vh.contiguous()
    if kh.dtype != qh.dtype:
        kh, vh = kh.to(qh.dtype), vh.to(qh.dtype)
    return qh, kh, vh


def max_packed_batch(n_new: int, n_past: int) -> int:
    """The largest batch ``_packed_forward`` takes: rows of ``n_new`` new positions each over
    ``n_past`` shared ones, the batch's new rows at most as many as the past positions (so each
    query scores at most twice the keys it would alone)."""
    return n_past // max(1, n_new)


def _packable(attn, entry, attention_mask, query_input) -> bool:
    """Whether ``_packed_forward`` serves this call (``PACK_SHARED_PAST``): a frozen past shared by
    every row of a batch of several, no hook on ``hook_rot_k`` (it would take the joined per-row
    keys), and a batch within ``max_packed_batch``."""
    if not PACK_SHARED_PAST or entry is None or not shares_past(attn, entry, attention_mask):
        return False
    B, Q = query_input.shape[:2]
    return 1 < B <= max_packed_batch(Q, entry.past_keys.size(1)) and _score_masks(attn.hook_rot_k) == []


def _packed_forward(attn, query_input, key_input, value_input, entry,
                    masks: List[ScoreMaskHook]) -> Float[torch.Tensor, "batch pos head d_head"]:
    """The batch's queries as one sequence over the shared past and every row's new keys: one SDPA
    call whose keys are the past once and the ``B * Q`` new rows, each query allowed its own row's
    new keys (causal) and the past keys its masks allow. The same attention as ``B`` rows each
    over its own copy of the past, without writing ``B`` copies of the past keys and values."""
    q, past_k, k, past_v, v, P = qkv_shared_past(attn, query_input, key_input, value_input, entry)
    B, Q, H, d = q.shape
    allowed = _allowed(masks, P, Q, P + Q, H, q.device)  # [b_or_1, h_or_1, Q, P + Q]
    b, h = allowed.shape[:2]
    own = torch.eye(B, dtype=torch.bool, device=q.device)[:, None, None, :, None]  # row b's keys only
    new = (own & allowed[..., P:][:, :, :, None, :]).reshape(B, h, Q, B * Q)  # [B, h, Q, B * Q]
    packed = torch.cat([allowed[..., :P].expand(B, h, Q, P), new], dim=-1)
    packed = packed.transpose(0, 1).reshape(1, h, B * Q, P + B * Q)
    keys = torch.cat([past_k, k.reshape(1, B * Q, *k.shape[2:])], dim=1)
    values = torch.cat([past_v, v.reshape(1, B * Q, *v.shape[2:])], dim=1)
    qh, kh, vh = _sdpa_inputs(q.reshape(1, B * Q, H, d), keys, values)
    z = _masked_sdpa(qh, kh, vh, packed, 1.0 / attn_scale(attn), masks)  # [1, H, B * Q, d]
    return z.transpose(1, 2).reshape(B, Q, H, d)


def _sdpa_forward(attn, query_input, key_input, value_input, past_kv_cache_entry, attention_mask,
                  masks: List[ScoreMaskHook]) -> Float[torch.Tensor, "batch pos d_model"]:
    """``AbstractAttention.forward`` (TransformerLens 3.9) for the supported configurations, with
    the scores, softmax and pattern replaced by one SDPA call."""
    if _packable(attn, past_kv_cache_entry, attention_mask, query_input):
        return project_z(attn, _packed_forward(attn, query_input, key_input, value_input, past_kv_cache_entry, masks))
    q, k, v, offset = qkv_rotated(attn, query_input, key_input, value_input, past_kv_cache_entry, attention_mask)
    B, Q, H, _ = q.shape
    K = k.shape[1]
    qh, kh, vh = _sdpa_inputs(q, k, v)
    scale = 1.0 / attn_scale(attn)
    if not masks and offset == 0 and Q == K:
        z = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale, enable_gqa=kh.shape[1] != H)
    else:
        z = _masked_sdpa(qh, kh, vh, _allowed(masks, offset, Q, K, H, q.device), scale, masks)
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
