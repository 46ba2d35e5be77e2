"""Batched knockout conditions: several conditions of the fast engine in one batch (a speed setting:
the numbers agree with one condition at a time up to float rounding).

The fast engine (``videolens.knockout.engine.FastEngine``) recomputes, per condition, the rows
``q0:`` (from the first blocked query) of layers ``a..L-1`` (from the window's first layer). Run
one at a time, those passes are small: on a GPU they are launch-bound. Here conditions that share
``q0`` (the same recomputed rows) run as one batch, one row per condition, with **staggered
entry**: the batch walks the layers upwards, and a condition joins it at its own first layer
``a`` with the clean run's ``blocks.{a}.hook_resid_pre`` rows ``q0:``. So each condition computes
exactly the layers and rows it computes alone (no padding, no wasted layers), its own mask applies
in its own window only, and every row attends to the same frozen clean keys and values of the
positions before ``q0``. Results equal the one-by-one engine up to float rounding
(tests/test_knockout_batched.py, 1e-5 in fp32).

Example::

    from videolens.knockout.batched import run_batched
    logits = run_batched(model, clean, [(hook, [0, 1, 2]), (hook, [3, 4, 5])], batch_size=16)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Bool, Float

from .._tl_compat import final_logits, frozen_kv_cache
from ..hooked.attention import ScoreMaskHook
from .hooks import KnockoutHook, hook_name

__all__ = ["RowMasks", "run_batched", "check_batch_conditions", "Condition"]

Condition = Tuple[KnockoutHook, Sequence[int]]
"""One knockout condition: the hook (its mask) and the layers where it applies."""


def check_batch_conditions(n) -> None:
    """Raises ValueError unless ``n`` (conditions per batch) is an integer >= 1."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"batch_conditions must be a positive number of conditions, got {n!r}")


class RowMasks(ScoreMaskHook):
    """One layer's knockout masks, one per batch row, for queries ``q0:`` of ``S`` positions.

    Args:
        masks: ``bool [batch, 1 or n_heads, S - q0, S]``, True = blocked.
        q0: the first recomputed query position.
    """

    no_empty_rows = True  # every row is a KnockoutHook's rows (checked there) or no edge at all

    def __init__(self, masks: Bool[torch.Tensor, "batch h_or_1 query key"], q0: int):
        self.masks, self.q0 = masks, q0

    def blocked(self, q_offset, n_query, n_key, n_heads, device):
        if q_offset != self.q0 or n_query != self.masks.shape[-2] or n_key != self.masks.shape[-1]:
            raise ValueError(f"batched knockout masks are for queries {self.q0}: of {self.masks.shape[-1]} "
                             f"positions; the forward has {n_query} queries from {q_offset} of {n_key} keys")
        return self.masks


def _rows(hook: KnockoutHook, q0: int, n_heads: int, device) -> Bool[torch.Tensor, "h query key"]:
    S = hook.seq_len
    return hook.blocked(q0, S - q0, S, n_heads, device)


@torch.no_grad()
def _run_group(model, clean, q0: int, conds: Sequence[Condition]) -> Float[torch.Tensor, "batch d_vocab"]:
    """Conditions sharing ``q0``, sorted by their first layer: last-position logits ``[batch, d_vocab]``."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    device = clean.logits.device
    starts = [min(layers) for _, layers in conds]
    windows = [frozenset(int(l) for l in layers) for _, layers in conds]
    rows = [_rows(hook, q0, H, device) for hook, _ in conds]
    per_head = any(r.shape[0] != 1 for r in rows)
    if per_head:
        rows = [r.expand(H, -1, -1) for r in rows]
    none = torch.zeros_like(rows[0])
    resid: Optional[torch.Tensor] = None
    for l in range(starts[0], L):
        n_new = sum(1 for a in starts if a == l)
        if n_new:
            new = clean.resid_pre[l][:, q0:].expand(n_new, -1, -1)
            resid = new.clone() if resid is None else torch.cat([resid, new])
        B = resid.shape[0]
        active = [l in windows[b] for b in range(B)]
        hooks = []
        if any(active):
            masks = torch.stack([rows[b] if active[b] else none for b in range(B)])
            hooks = [(hook_name(l), RowMasks(masks, q0))]
        keys = [clean.keys[l][:, :q0] if i == l else None for i in range(L)]
        values = [clean.values[l][:, :q0] if i == l else None for i in range(L)]
        kv = frozen_kv_cache(keys, values, q0, device, batch=B)
        with model.hooks(fwd_hooks=hooks):
            resid = model(resid, start_at_layer=l, stop_at_layer=l + 1, past_kv_cache=kv)
    return final_logits(model, resid[:, -1:])[:, -1]


def run_batched(model, clean, conditions: Sequence[Condition], batch_size: int,
                on_done: Optional[Callable[[int], object]] = None) -> List[Float[torch.Tensor, "d_vocab"]]:
    """Last-position logits ``[d_vocab]`` of each condition, computed in batches of ``batch_size``.

    Args:
        model: a ``HookedVideoLLM``.
        clean: the sample's ``CleanRun`` from ``FastEngine.clean``.
        conditions: ``(KnockoutHook, layers)`` pairs, in any order; the result follows it.
        batch_size: conditions per batch (>= 1); conditions with different first blocked queries
            never share a batch.
        on_done: called with the number of conditions each batch finished (a progress bar's
            ``update``).

    Returns:
        One logits vector per condition, equal to ``FastEngine.run`` on it up to float rounding;
        a condition that blocks nothing gets the clean logits.

    Raises:
        ValueError: ``batch_size`` < 1, or a ``clean`` run without the fast engine's cache.
    """
    check_batch_conditions(batch_size)
    if clean.resid_pre is None:
        raise ValueError("batched knockout needs a CleanRun made by FastEngine.clean")
    out: List[Optional[torch.Tensor]] = [None] * len(conditions)
    groups: Dict[int, List[int]] = defaultdict(list)
    for i, (hook, layers) in enumerate(conditions):
        if hook.first_query is None or not len(layers):
            out[i] = clean.logits  # nothing blocked: the clean run, exactly
            if on_done is not None:
                on_done(1)
        else:
            groups[hook.first_query].append(i)
    for q0, idx in groups.items():
        idx.sort(key=lambda i: min(conditions[i][1]))
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            logits = _run_group(model, clean, q0, [conditions[i] for i in chunk])
            for i, row in zip(chunk, logits):
                out[i] = row
            if on_done is not None:
                on_done(len(chunk))
    return out
