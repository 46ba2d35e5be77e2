"""The random control of pathway evaluation (spec masks are built by ``videolens.hooked.edges.blocked_mask``).

Same convention as ``videolens.hooked.edges``: ``bool [S, S]`` indexed ``[query, key]``, True = blocked.
``random_blocked_`` draws the random control: a given number of distinct lower-triangle edges
among positions at or after the video start, from a seeded generator; the diagonal is eligible in
the official rule (``diagonal=True``, official analysis/effective_pathway_analysis.py) and not in
videolens' per-layer matched control.
"""

from __future__ import annotations

import hashlib
from typing import Tuple

import torch
from jaxtyping import Bool

from ..prompting.layout import TokenLayout

__all__ = ["random_blocked_", "seed_for", "lower_triangle_size"]


# ---- random control ---------------------------------------------------------------------------
def lower_triangle_size(layout: TokenLayout, diagonal: bool = False) -> int:
    """Number of edges the random control may block: key < query (key <= query with ``diagonal``,
    the official rule), both at or after the video start."""
    n = layout.seq_len - layout.video.start
    return n * (n + 1) // 2 if diagonal else n * (n - 1) // 2


def seed_for(seed: int, *keys: object) -> int:
    """A stable 63-bit seed from ``seed`` and any keys (sample id, layer); same across processes."""
    text = ":".join(str(x) for x in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def _tri_index(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Linear index t over the strict lower triangle (row r >= 1, col c < r, row-major) -> (r, c)."""
    r = torch.floor((1 + torch.sqrt(1 + 8 * t.double())) / 2).long()
    r -= (r * (r - 1) // 2 > t).long()
    r += ((r + 1) * r // 2 <= t).long()
    return r, t - r * (r - 1) // 2


def random_blocked_(
    out: Bool[torch.Tensor, "S S"], layout: TokenLayout, n_block: int, generator: torch.Generator,
    diagonal: bool = False,
) -> Bool[torch.Tensor, "S S"]:
    """Fill ``out`` with ``n_block`` distinct random blocked edges: key < query (key <= query with
    ``diagonal``, the official rule of analysis/effective_pathway_analysis.py), both positions at
    or after the video start (the paper's random control, as the official code draws it).

    Every set of ``n_block`` such edges is equally likely. Edges are drawn in small batches and
    de-duplicated against ``out`` itself (when more than half are to be blocked, the edges to keep
    are drawn instead), so memory stays at the one mask. Reproducible for a given generator state.

    Raises:
        ValueError: ``n_block`` is negative or more than ``lower_triangle_size(layout)``.
    """
    S, v0 = layout.seq_len, layout.video.start
    total = lower_triangle_size(layout, diagonal)
    # the triangle with its diagonal, over n positions, is the strict triangle over n + 1 positions
    # with the row shifted down by one
    shift = 1 if diagonal else 0
    if not 0 <= n_block <= total:
        raise ValueError(f"cannot block {n_block} random edges: only {total} lie after the video start")
    if out.shape != (S, S) or out.dtype != torch.bool:
        raise ValueError(f"out must be a bool [{S}, {S}] tensor, got {out.dtype} {tuple(out.shape)}")
    out.zero_()
    invert = n_block > total // 2
    if invert:  # start from every eligible edge blocked, then free total - n_block of them
        keys = torch.arange(v0, S, device=out.device)
        step = max(1, (1 << 16) // max(1, S - v0))
        for r0 in range(v0, S, step):
            r1 = min(S, r0 + step)
            rows = torch.arange(r0, r1, device=out.device)
            out[r0:r1, v0:] = (keys[None, :] <= rows[:, None]) if diagonal else (keys[None, :] < rows[:, None])
    target = not invert
    remaining = total - n_block if invert else n_block
    while remaining > 0:
        size = min(max(2 * remaining, 256), 1 << 14)
        t = torch.randint(total, (size,), generator=generator)
        r, c = _tri_index(t)
        fresh = (out[(r - shift + v0).to(out.device), (c + v0).to(out.device)] != target).cpu()
        t = torch.unique(t[fresh])
        if len(t) > remaining:
            t = t[torch.randperm(len(t), generator=generator)[:remaining]]
        r, c = _tri_index(t)
        out[(r - shift + v0).to(out.device), (c + v0).to(out.device)] = target
        remaining -= len(t)
    return out
