"""Knockout hooks: block attention edges by setting pre-softmax scores to -inf (Map the Flow's methods).

An edge set is a list of ``EdgePair`` (key group -> query group, ``videolens.edges``) plus the
layers (and optionally heads) where it applies. ``knockout_hooks`` turns it into TransformerLens
``fwd_hooks`` on ``blocks.{l}.attn.hook_attn_scores``; the hooks are ``ScoreMaskHook`` objects,
so the fast attention path (``videolens.attention``) folds them into SDPA's mask instead of
materialising the scores.

Example::

    from videolens.knockout import knockout_hooks
    hooks = knockout_hooks(model, ["video->last", "question->last"], layers=range(10, 19),
                           layout=inputs.layout)
    logits = model.run_with_hooks(inputs, fwd_hooks=hooks)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Bool
from transformer_lens.utilities import get_act_name

from ..attention import ScoreMaskHook
from ..edges import EdgePair, blocked_mask, check_rows, parse_pair
from ..layers import resolve_layers
from ..layout import TokenLayout

__all__ = ["KnockoutHook", "EdgeSet", "knockout_hooks", "knockout_mask", "as_pairs", "hook_name", "PairsLike"]

PairsLike = Union[str, EdgePair, Iterable[Union[str, EdgePair]]]


def hook_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_attn_scores``: where knockouts apply."""
    return get_act_name("attn_scores", layer)


def as_pairs(pairs: PairsLike) -> Tuple[EdgePair, ...]:
    """``"video->last"``, an ``EdgePair``, or an iterable of them -> tuple of EdgePair."""
    if isinstance(pairs, (str, EdgePair)):
        pairs = [pairs]
    out = tuple(parse_pair(p) if isinstance(p, str) else p for p in pairs)
    for p in out:
        if not isinstance(p, EdgePair):
            raise TypeError(f"edge pairs must be EdgePair or 'KEY->QUERY' strings, got {type(p).__name__}")
    return out


def knockout_mask(layout: TokenLayout, pairs: PairsLike, self_edges: str = "block") -> Bool[torch.Tensor, "S S"]:
    """The blocked edges of ``pairs`` on one prompt: ``bool [S, S]`` indexed [query, key].

    Only causal edges are set; self edges follow ``self_edges`` (``"block"``: the official code,
    ``last->last`` blocks the last position's diagonal; ``"keep"``: never; ``videolens.edges``).

    Raises:
        KeyError: unknown token group or relation. ValueError: unknown ``self_edges``.
    """
    return blocked_mask(layout, as_pairs(pairs), self_edges)


def _validate_mask(mask: torch.Tensor) -> Bool[torch.Tensor, "S S"]:
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise ValueError(f"a knockout mask is bool [S, S] (query, key); got shape {tuple(mask.shape)}")
    mask = mask.detach().to("cpu", torch.bool)
    check_rows(mask)  # raises EmptyRowError before anything runs
    return mask.tril()  # non-causal entries are -inf already


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
        self.mask = _validate_mask(mask)
        self.heads = None if heads is None else tuple(int(h) for h in heads)
        rows = self.mask.any(-1).nonzero().flatten()
        self._first_query = int(rows[0]) if len(rows) else None
        self._n_edges = int(self.mask.sum())
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


def knockout_hooks(
    model,
    mask_or_pairs: Union[torch.Tensor, PairsLike],
    layers: Union[int, Iterable[int]],
    heads: Optional[Sequence[int]] = None,
    layout: Union[TokenLayout, object, None] = None,
    self_edges: str = "block",
) -> List[Tuple[str, KnockoutHook]]:
    """TransformerLens ``fwd_hooks`` that knock out attention edges in ``layers``.

    Args:
        model: the HookedTransformer / HookedVideoLLM (for the layer and head counts).
        mask_or_pairs: a ``bool [S, S]`` mask indexed [query, key] (True = blocked), or edge pairs
            (``"video->last"``, ``EdgePair``, or a list of them), which need ``layout``.
        layers: layers where the edges are blocked (``videolens.layers``: an int, ints, ``"0-4"``;
            negative counts from the end).
        heads: head indices (None: every head).
        layout: the ``TokenLayout`` (or a ``VideoLLMInput``) the pairs refer to.
        self_edges: ``"block"`` (official: a pair covering a query's own position blocks it) or
            ``"keep"`` (never block self edges); ignored for a mask.

    Returns:
        ``[("blocks.{l}.attn.hook_attn_scores", hook), ...]`` for ``run_with_hooks`` / ``hooks()``;
        one ``KnockoutHook`` shared by all layers.

    Raises:
        videolens.edges.EmptyRowError: the mask would leave a query with no key (before running).
        ValueError: a non-square mask, layers or heads out of range, pairs without a layout.
        KeyError: unknown token group or relation in a pair.
    """
    if isinstance(mask_or_pairs, torch.Tensor):
        mask = mask_or_pairs
    else:
        if layout is None:
            raise ValueError("knockout_hooks: edge pairs need layout= (a TokenLayout or the VideoLLMInput)")
        layout = getattr(layout, "layout", layout)
        mask = knockout_mask(layout, mask_or_pairs, self_edges)
    if heads is not None:
        heads = [int(h) for h in heads]
        bad = [h for h in heads if not 0 <= h < model.cfg.n_heads]
        if bad or not heads:
            raise ValueError(f"heads {heads} out of range for {model.cfg.n_heads} heads")
    hook = KnockoutHook(mask, heads)
    return [(hook_name(l), hook) for l in resolve_layers(layers, model.cfg.n_layers)]


@dataclass(frozen=True)
class EdgeSet:
    """Edges to knock out, declared by token groups: pairs, and the layers / heads where they apply.

    Attributes:
        pairs: ``EdgePair`` s (or ``"KEY->QUERY[relation]"`` strings), blocked together.
        layers: layer indices (None: every layer).
        heads: head indices (None: every head).
        self_edges: ``"block"`` (official) or ``"keep"`` (``videolens.edges``).
    """

    pairs: Tuple[EdgePair, ...]
    layers: Optional[Tuple[int, ...]] = None
    heads: Optional[Tuple[int, ...]] = None
    self_edges: str = "block"

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", as_pairs(self.pairs))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))

    def mask(self, layout: TokenLayout) -> Bool[torch.Tensor, "S S"]:
        """``bool [S, S]`` [query, key], True = blocked."""
        return knockout_mask(layout, self.pairs, self.self_edges)

    def hooks(self, model, layout) -> List[Tuple[str, KnockoutHook]]:
        """``knockout_hooks`` for this edge set on one prompt."""
        layers = range(model.cfg.n_layers) if self.layers is None else self.layers
        return knockout_hooks(model, self.pairs, layers, self.heads, layout, self.self_edges)
