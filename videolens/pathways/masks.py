"""Boolean blocked-edge masks, built a few query rows at a time.

Same convention as ``videolens.edges``: ``bool [S, S]`` indexed ``[query, key]``, True = blocked,
only causal edges are ever set, and the diagonal follows ``self_edges`` (``"block"``: the official
code, e.g. ``video->video`` after the video-to-question layers blocks each video token's edge to
itself; ``"keep"``: never). ``write_blocked_`` gives the same mask as ``edges.blocked_mask`` (tested),
but fills a caller-owned buffer in row chunks, so its temporaries stay far below one ``S x S``
mask; the released code of the paper held an ``S x S x heads`` float mask per layer (about 3.5 GB
a sample for the 7B model).

``random_blocked_`` draws the random control: a given number of distinct lower-triangle edges
among positions at or after the video start, from a seeded generator; the diagonal is eligible in
the official rule (``diagonal=True``, official analysis/effective_pathway_analysis.py) and not in
videolens' per-layer matched control.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator, Optional, Tuple

import torch
from jaxtyping import Bool

from ..edges import RELATIONS, EdgePair, EmptyRowError, check_self_edges
from ..layout import TokenLayout

__all__ = ["write_blocked_", "iter_blocked_rows", "assert_no_empty_rows", "random_blocked_", "seed_for",
           "lower_triangle_size"]


def _chunk_rows(S: int, n_keys: int) -> int:
    """Rows per chunk so that a chunk's [rows, keys] temporaries hold at most ~S*S/256 elements."""
    budget = max(4096, S * S // 256)
    return max(1, budget // max(1, n_keys))


def _contiguous(pos: torch.Tensor) -> bool:
    return len(pos) > 0 and int(pos[-1]) - int(pos[0]) + 1 == len(pos)


def _write_pair(out: torch.Tensor, row_start: int, layout: TokenLayout, pair: EdgePair, self_edges: str = "block") -> None:
    """OR the causal edges of ``pair`` (diagonal per ``self_edges``) whose query lies in rows
    ``[row_start, row_start + out.shape[0])`` into ``out`` (``[rows, S]``)."""
    check_self_edges(self_edges)
    if pair.relation not in RELATIONS:
        raise KeyError(f"unknown relation {pair.relation!r}; known: {sorted(RELATIONS)}")
    rel = RELATIONS[pair.relation]
    q_all = layout.positions(pair.query)
    k = layout.positions(pair.key)
    q_all = q_all[(q_all >= row_start) & (q_all < row_start + out.shape[0])]
    if len(q_all) == 0 or len(k) == 0:
        return
    k_dev = k.to(out.device)
    k_slice = slice(int(k[0]), int(k[-1]) + 1) if _contiguous(k) else None
    step = _chunk_rows(layout.seq_len, len(k))
    for i in range(0, len(q_all), step):
        q = q_all[i : i + step]
        block = rel(layout, q, k).to(out.device)
        qd = q.to(out.device)[:, None]
        block &= (k_dev[None, :] <= qd) if self_edges == "block" else (k_dev[None, :] < qd)
        rows = q - row_start
        if k_slice is not None and _contiguous(q):
            out[int(rows[0]) : int(rows[-1]) + 1, k_slice] |= block
        else:
            r = rows.to(out.device)[:, None]
            out[r, k_dev[None, :]] |= block


def write_blocked_(
    out: Bool[torch.Tensor, "S S"], layout: TokenLayout, pairs: Iterable[EdgePair], self_edges: str = "block"
) -> Bool[torch.Tensor, "S S"]:
    """Fill ``out`` (zeroed first) with the union of the edges of ``pairs``; returns ``out``.

    Equal to ``videolens.edges.blocked_mask(layout, pairs, self_edges)`` but written in place, a few query
    rows at a time (temporaries of at most ~S*S/64 elements).

    Raises:
        ValueError: ``out`` is not ``[S, S]`` bool for this layout.
        KeyError: an unknown token group or relation.
    """
    S = layout.seq_len
    if out.shape != (S, S) or out.dtype != torch.bool:
        raise ValueError(f"out must be a bool [{S}, {S}] tensor, got {out.dtype} {tuple(out.shape)}")
    out.zero_()
    for pair in pairs:
        _write_pair(out, 0, layout, pair, self_edges)
    return out


def iter_blocked_rows(
    layout: TokenLayout, pairs: Tuple[EdgePair, ...], rows_per_chunk: Optional[int] = None, self_edges: str = "block"
) -> Iterator[Tuple[int, Bool[torch.Tensor, "rows S"]]]:
    """Yield ``(row_start, blocked[rows, S])`` chunks of the union mask of ``pairs`` without ever
    holding the ``S x S`` mask (used to count edges). The chunk buffer is reused between yields."""
    S = layout.seq_len
    rows = rows_per_chunk or max(1, min(S, (1 << 20) // max(1, S)))
    buf = torch.zeros(rows, S, dtype=torch.bool)
    for r0 in range(0, S, rows):
        view = buf[: min(rows, S - r0)]
        view.zero_()
        for pair in pairs:
            _write_pair(view, r0, layout, pair, self_edges)
        yield r0, view


def assert_no_empty_rows(mask: Bool[torch.Tensor, "S S"], rows_per_chunk: int = 64) -> None:
    """Raise ``videolens.edges.EmptyRowError`` when some query would have every causal key blocked.

    Same check as ``videolens.edges.check_rows`` (tested against it), done in row chunks so it
    needs no extra ``S x S`` tensors."""
    S = mask.shape[-1]
    empty = []
    for r0 in range(0, S, rows_per_chunk):
        sub = mask[r0 : r0 + rows_per_chunk]
        q = torch.arange(r0, r0 + sub.shape[0], device=mask.device)
        keys = torch.arange(S, device=mask.device)
        allowed = (keys[None, :] <= q[:, None]) & ~sub
        empty.extend((q[~allowed.any(-1)]).tolist())
        if len(empty) >= 10:
            break
    if empty:
        raise EmptyRowError(f"blocking these edges leaves query position(s) {empty[:10]} with no key")


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
