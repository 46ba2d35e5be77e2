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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from jaxtyping import Bool

from .errors import VideolensError
from .layout import GROUP_RESOLVERS, TokenLayout, register_group
from .registry import Registry

__all__ = [
    "EdgePair", "RELATIONS", "SELF_EDGES", "pair_mask", "blocked_mask", "check_rows", "EmptyRowError", "parse_pair",
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


def pair_mask(
    layout: TokenLayout, pair: EdgePair, out: torch.Tensor | None = None, self_edges: str = "block"
) -> Bool[torch.Tensor, "S S"]:
    """Mark (OR into ``out``) the causal edges of one pair (the diagonal per ``self_edges``,
    module doc). Returns the mask ``bool [S, S]`` [query, key].

    Raises:
        KeyError: unknown relation or token group. ValueError: unknown ``self_edges``.
    """
    check_self_edges(self_edges)
    S = layout.seq_len
    if out is None:
        out = torch.zeros(S, S, dtype=torch.bool)
    if pair.relation not in RELATIONS:
        raise KeyError(f"unknown relation {pair.relation!r}; known: {sorted(RELATIONS)}")
    q = layout.positions(pair.query)
    k = layout.positions(pair.key)
    if len(q) == 0 or len(k) == 0:
        return out
    causal = (k[None, :] <= q[:, None]) if self_edges == "block" else (k[None, :] < q[:, None])
    block = RELATIONS[pair.relation](layout, q, k) & causal
    out[q[:, None], k[None, :]] |= block
    return out


def blocked_mask(layout: TokenLayout, pairs: Iterable[EdgePair], self_edges: str = "block") -> Bool[torch.Tensor, "S S"]:
    """Union of the edges of ``pairs``: ``bool [S, S]`` indexed [query, key], True = blocked
    (self edges per ``self_edges``, module doc)."""
    out = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
    for p in pairs:
        pair_mask(layout, p, out, self_edges)
    return out


def check_rows(mask: Bool[torch.Tensor, "S S"]) -> None:
    """Raise ``EmptyRowError`` when a query row would have every causal key blocked (the official
    code would then spread that row uniformly over every position, future ones included)."""
    S = mask.shape[-1]
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    allowed = causal & ~mask
    empty = (~allowed.any(-1)).nonzero().flatten()
    if len(empty):
        raise EmptyRowError(f"blocking these edges leaves query position(s) {empty[:10].tolist()} with no key")


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
