"""Attention edges between named token groups, as boolean (query, key) masks.

An edge ``key -> query`` lets the query position read the key position. An ``EdgePair`` names a
key group and a query group of the TokenLayout (``video``, ``frame:3``, ``question``,
``non_option_question``, ``option:B``, ``true_option``, ``false_options``, ``last``,
``span:a:b``, ...) and a relation that filters the pairs between them (``all``; ``cross_frame``:
key frame < query frame, the paper's cross-frame target; ``same_frame``). Relations are a registry.

Masks are ``bool [S, S]`` indexed ``[query, key]``, True where an edge is blocked; only causal
edges (key <= query) are ever set. Self edges (a query's edge to itself, the diagonal) follow
``self_edges``: ``"block"`` (default, the official code: a pair whose key and query groups share a
position blocks that position's edge to itself, so ``last->last`` blocks the last token's diagonal;
the official code, map-the-flow) or ``"keep"`` (never block a self edge: videolens' earlier rule, a difference
from the paper). A mask that leaves a row with no key at all raises ``EmptyRowError`` before running.

This module is the one mask builder: knockouts, attribution, open-ended knockouts and the pathway
masker all write their masks with ``blocked_mask`` (the masker into one reused buffer), and edge
counts read the same rows chunk by chunk (``iter_blocked_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Tuple, Union

import torch
from jaxtyping import Bool, Int

from ..errors import VideolensError
from ..prompting.layout import GROUP_RESOLVERS, TokenLayout, register_group
from ..registry import Registry

__all__ = [
    "EdgePair", "PairsLike", "RELATIONS", "SELF_EDGES", "as_pairs", "pair_mask", "blocked_mask", "iter_blocked_rows",
    "check_rows", "row_counts", "EmptyRowError", "parse_pair",
]

SELF_EDGES = ("block", "keep")
"""Self-edge policies: ``"block"`` (the official code, default) or ``"keep"`` (never block a self edge)."""


def check_self_edges(self_edges: str) -> str:
    """Raises ValueError unless ``self_edges`` is one of ``SELF_EDGES``."""
    if self_edges not in SELF_EDGES:
        raise ValueError(f"self_edges must be one of {SELF_EDGES}, got {self_edges!r}")
    return self_edges


class EmptyRowError(VideolensError, ValueError):
    """A mask would leave some query position with no key to attend to."""


@dataclass(frozen=True)
class EdgePair:
    """Edges from every position of group ``key`` to every position of group ``query`` that
    satisfy ``relation``. ``name`` labels records and plots (default ``"key->query"``)."""

    key: str
    query: str
    relation: str = "all"
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        rel = "" if self.relation == "all" else f"[{self.relation}]"
        return f"{self.key}->{self.query}{rel}"


def _frame_ids(layout: TokenLayout, positions: torch.Tensor) -> torch.Tensor:
    """Frame of each position, -1 for non-video positions."""
    return layout.frame_lookup()[positions]


def _rel_all(layout, q, k):
    return torch.ones(len(q), len(k), dtype=torch.bool)


def _rel_cross_frame(layout, q, k):
    fq, fk = _frame_ids(layout, q), _frame_ids(layout, k)
    return (fk[None, :] < fq[:, None]) & (fk[None, :] >= 0)


def _rel_same_frame(layout, q, k):
    fq, fk = _frame_ids(layout, q), _frame_ids(layout, k)
    return (fk[None, :] == fq[:, None]) & (fk[None, :] >= 0)


RELATIONS: Registry[Callable[[TokenLayout, torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("edge relation", {
    "all": _rel_all,
    "cross_frame": _rel_cross_frame,
    "same_frame": _rel_same_frame,
})


def parse_pair(text: str) -> EdgePair:
    """``"video->last"`` or ``"video->video[cross_frame]"`` -> EdgePair."""
    rel = "all"
    if text.endswith("]") and "[" in text:
        text, rel = text[:-1].split("[", 1)
    if "->" not in text:
        raise ValueError(f"edge {text!r} must read 'KEY->QUERY' (e.g. 'video->last')")
    key, query = (s.strip() for s in text.split("->", 1))
    return EdgePair(key, query, rel)


def as_pairs(pairs: "PairsLike") -> Tuple[EdgePair, ...]:
    """``"video->last"``, an ``EdgePair``, or an iterable of them -> tuple of EdgePair.

    Raises:
        TypeError: an element is neither an EdgePair nor a string. ValueError: a string that is not ``KEY->QUERY``.
    """
    if isinstance(pairs, (str, EdgePair)):
        pairs = [pairs]
    out = tuple(parse_pair(p) if isinstance(p, str) else p for p in pairs)
    for p in out:
        if not isinstance(p, EdgePair):
            raise TypeError(f"edge pairs must be EdgePair or 'KEY->QUERY' strings, got {type(p).__name__}")
    return out


PairsLike = Union[str, EdgePair, Iterable[Union[str, EdgePair]]]


def _chunk_rows(S: int, n_keys: int) -> int:
    """Rows per chunk so that a chunk's [rows, keys] temporaries hold at most ~S*S/16 elements (a
    few such bool temporaries stay far below the one ``S x S`` mask; smaller chunks cost Python
    time: at S*S/256 building a cross-frame mask took a quarter of the knockout's forward on CPU)."""
    budget = max(4096, S * S // 16)
    return max(1, budget // max(1, n_keys))


def _contiguous(pos: torch.Tensor) -> bool:
    return len(pos) > 0 and int(pos[-1]) - int(pos[0]) + 1 == len(pos)


def _write_pair(out: torch.Tensor, row_start: int, layout: TokenLayout, pair: EdgePair, self_edges: str) -> None:
    """OR the causal edges of ``pair`` (diagonal per ``self_edges``) whose query lies in rows
    ``[row_start, row_start + out.shape[0])`` into ``out`` (``[rows, S]``), a few query rows at a
    time so that temporaries stay far below one ``S x S`` mask (the released code of the paper held
    an ``S x S x heads`` float mask per layer, about 3.5 GB a sample for the 7B model)."""
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


def _square_bool(out: torch.Tensor, S: int) -> None:
    if out.shape != (S, S) or out.dtype != torch.bool:
        raise ValueError(f"out must be a bool [{S}, {S}] tensor, got {out.dtype} {tuple(out.shape)}")


def pair_mask(
    layout: TokenLayout, pair: EdgePair, out: torch.Tensor | None = None, self_edges: str = "block"
) -> Bool[torch.Tensor, "S S"]:
    """Mark (OR into ``out``, kept as it is otherwise) the causal edges of one pair (the diagonal
    per ``self_edges``, module doc). Returns the mask ``bool [S, S]`` [query, key].

    Raises:
        KeyError: unknown relation or token group. ValueError: unknown ``self_edges``, or ``out``
        not ``bool [S, S]``.
    """
    S = layout.seq_len
    if out is None:
        out = torch.zeros(S, S, dtype=torch.bool)
    _square_bool(out, S)
    _write_pair(out, 0, layout, pair, self_edges)
    return out


def blocked_mask(layout: TokenLayout, pairs: PairsLike, self_edges: str = "block",
                 out: torch.Tensor | None = None) -> Bool[torch.Tensor, "S S"]:
    """Union of the edges of ``pairs`` (``EdgePair`` s or ``"KEY->QUERY[relation]"`` strings):
    ``bool [S, S]`` indexed [query, key], True = blocked (self edges per ``self_edges``, module doc).

    With ``out`` (a caller-owned ``bool [S, S]`` buffer, on any device) the mask is written there,
    cleared first, and returned: the pathway masker reuses one buffer for every layer.

    Raises:
        KeyError: unknown relation or token group. ValueError: unknown ``self_edges``, or ``out``
        not ``bool [S, S]``. TypeError: a pair that is neither an EdgePair nor a string.
    """
    pairs = as_pairs(pairs)
    S = layout.seq_len
    if out is None:
        out = torch.zeros(S, S, dtype=torch.bool)
    else:
        _square_bool(out, S)
        out.zero_()
    for p in pairs:
        _write_pair(out, 0, layout, p, self_edges)
    return out


def iter_blocked_rows(
    layout: TokenLayout, pairs: PairsLike, rows_per_chunk: Optional[int] = None, self_edges: str = "block"
) -> Iterator[Tuple[int, Bool[torch.Tensor, "rows S"]]]:
    """Yield ``(row_start, blocked[rows, S])`` chunks of ``blocked_mask(layout, pairs)`` without
    ever holding the ``S x S`` mask (used to count edges). The chunk buffer is reused between yields."""
    pairs = as_pairs(pairs)
    S = layout.seq_len
    rows = rows_per_chunk or max(1, min(S, (1 << 20) // max(1, S)))
    buf = torch.zeros(rows, S, dtype=torch.bool)
    for r0 in range(0, S, rows):
        view = buf[: min(rows, S - r0)]
        view.zero_()
        for pair in pairs:
            _write_pair(view, r0, layout, pair, self_edges)
        yield r0, view


def row_counts(mask: Bool[torch.Tensor, "S S"], rows_per_chunk: Optional[int] = None) -> Int[torch.Tensor, "S"]:
    """Blocked causal keys (key <= query) of every query row of a ``[query, key]`` mask, on the
    mask's device. Computed ``rows_per_chunk`` rows at a time (default: rows holding about 4M
    elements), so no ``S x S`` temporary is made."""
    S = mask.shape[-1]
    step = rows_per_chunk or max(1, (4 << 20) // max(1, S))
    counts = torch.empty(mask.shape[0], dtype=torch.long, device=mask.device)
    for r0 in range(0, mask.shape[0], step):
        sub = mask[r0 : r0 + step]
        counts[r0 : r0 + sub.shape[0]] = torch.tril(sub, diagonal=r0).sum(-1)  # keys k <= r0 + i
    return counts


def check_rows(mask: Bool[torch.Tensor, "S S"], rows_per_chunk: Optional[int] = None,
               counts: Optional[Int[torch.Tensor, "S"]] = None) -> None:
    """Raise ``EmptyRowError`` when a query row would have every causal key blocked (the official
    code would then spread that row uniformly over every position, future ones included).

    Args:
        mask: ``bool [S, S]`` [query, key], True = blocked.
        rows_per_chunk: rows counted at a time (``row_counts``).
        counts: ``row_counts(mask)`` when the caller has it already.

    Checked on the mask's device with no extra ``S x S`` tensor and one read back to the host."""
    if counts is None:
        counts = row_counts(mask, rows_per_chunk)
    q = torch.arange(len(counts), device=counts.device)
    empty = (counts == q + 1).nonzero().flatten()[:10].tolist()  # row q has q + 1 causal keys
    if empty:
        raise EmptyRowError(f"blocking these edges leaves query position(s) {empty} with no key")


# ---- more token groups for edge sets: video tokens of the frames before / after frame i ----------
def _frames_before(layout: TokenLayout, arg: str) -> torch.Tensor:
    """``frames_before:i``: video tokens of frames ``< i`` (negative i counts from the end)."""
    i = _frame_arg(layout, arg, "frames_before")
    lookup = layout.frame_lookup()
    return ((lookup >= 0) & (lookup < i)).nonzero().flatten()


def _frames_after(layout: TokenLayout, arg: str) -> torch.Tensor:
    """``frames_after:i``: video tokens of frames ``> i``."""
    i = _frame_arg(layout, arg, "frames_after")
    return (layout.frame_lookup() > i).nonzero().flatten()


def _frame_arg(layout: TokenLayout, arg: str, name: str) -> int:
    if not arg:
        raise KeyError(f"group {name!r} needs a frame index, e.g. '{name}:3'")
    i, T = int(arg), layout.n_frames
    if not -T <= i < T:
        raise KeyError(f"frame {i} out of range for {T} frames")
    return i % T


for _name, _fn in (("frames_before", _frames_before), ("frames_after", _frames_after)):
    if _name not in GROUP_RESOLVERS:
        register_group(_name, _fn)
