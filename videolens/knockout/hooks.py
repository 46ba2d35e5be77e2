"""Knockout hooks: block attention edges by setting pre-softmax scores to -inf (Map the Flow's methods).

An edge set is a list of ``EdgePair`` (key group -> query group, ``videolens.hooked.edges``) plus the
layers (and optionally heads) where it applies. ``knockout_hooks`` turns it into TransformerLens
``fwd_hooks`` on ``blocks.{l}.attn.hook_attn_scores``; the hooks are ``KnockoutHook`` objects
(``videolens.hooked.attention``, a ``ScoreMaskHook`` with a fixed mask),
so the fast attention path (``videolens.hooked.attention``) folds them into SDPA's mask instead of
materialising the scores.

Example::

    from videolens.knockout import knockout_hooks
    hooks = knockout_hooks(model, ["video->last", "question->last"], layers=range(10, 19),
                           layout=inputs.layout)
    logits = model.run_with_hooks(inputs, fwd_hooks=hooks)
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch

from ..hooked.attention import KnockoutHook, scores_hook_name
from ..hooked.edges import PairsLike, as_pairs, blocked_mask
from ..layers import resolve_heads, resolve_layers
from ..prompting.layout import TokenLayout

__all__ = ["KnockoutHook", "knockout_hooks", "as_pairs", "hook_name", "PairsLike"]

hook_name = scores_hook_name
"""``blocks.{layer}.attn.hook_attn_scores``: where knockouts apply (``videolens.hooked.attention.scores_hook_name``)."""


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
        videolens.hooked.edges.EmptyRowError: the mask would leave a query with no key (before running).
        ValueError: a non-square mask, layers or heads out of range, pairs without a layout.
        KeyError: unknown token group or relation in a pair.
    """
    if isinstance(mask_or_pairs, torch.Tensor):
        mask = mask_or_pairs
    else:
        if layout is None:
            raise ValueError("knockout_hooks: edge pairs need layout= (a TokenLayout or the VideoLLMInput)")
        layout = getattr(layout, "layout", layout)
        mask = blocked_mask(layout, mask_or_pairs, self_edges)
    if heads is not None:
        heads = resolve_heads(heads, model.cfg.n_heads)
    hook = KnockoutHook(mask, heads)
    return [(hook_name(l), hook) for l in resolve_layers(layers, model.cfg.n_layers)]
