"""Forward hooks that block attention edges layer by layer: the pathway spec and the random control.

Each hook sits on ``blocks.{l}.attn.hook_attn_scores`` (``[batch, head, query, key]``, scaled
and causally masked by TransformerLens) and sets the blocked edges to ``-inf`` in every head
(Map the Flow's methods, attention knockout). The hooks are ``videolens.hooked.attention.ScoreMaskHook``
objects, the protocol the knockout hooks (``videolens.knockout``) use: on TransformerLens' plain
path ``ScoreMaskHook`` applies the -inf itself, and the fast SDPA path folds the mask into
SDPA's attention mask without materialising the scores.

A layer's ``bool [S, S]`` mask is built when that layer runs, into one buffer owned by the
masker and broadcast over batch and heads, so the masker holds one ``S x S`` boolean mask at any
time (never an ``S x S x heads`` mask per layer); consecutive layers that block the same edge
types reuse it without rebuilding.

Example::

    plan = load_spec("llava-next-7b-video-ft").plan(model.cfg.n_layers)
    masker = PathwayMasker(inputs.layout, plan)
    logits = model.run_with_hooks(inputs, fwd_hooks=masker.fwd_hooks())
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from jaxtyping import Bool

from ..hooked.attention import ScoreMaskHook, scores_hook_name
from ..hooked.edges import blocked_mask, check_rows
from ..prompting.layout import TokenLayout
from .masks import random_blocked_, seed_for
from .spec import LayerPlan

__all__ = ["PathwayMasker", "RandomMasker", "LayerMaskHook"]


class LayerMaskHook(ScoreMaskHook):
    """The ``hook_attn_scores`` hook of one layer: asks its masker for that layer's mask when the
    layer runs.

    Raises (when called):
        ValueError: the forward does not cover the whole prompt the mask was built for.
    """

    def __init__(self, masker: "_Masker", layer: int):
        self.masker, self.layer = masker, layer

    def blocked(self, q_offset: int, n_query: int, n_key: int, n_heads: int,
                device: torch.device) -> Bool[torch.Tensor, "1 query key"]:
        S = self.masker.layout.seq_len
        if n_key != S or q_offset + n_query != n_key:
            raise ValueError(
                f"this pathway mask is for {S} positions; the forward has {n_key} keys and {n_query} queries "
                "(build the masker for this input)"
            )
        self.masker.calls += 1
        return self.masker.mask(self.layer, device)[q_offset:][None]

    def __repr__(self) -> str:
        return f"LayerMaskHook({type(self.masker).__name__}, layer={self.layer})"


class _Masker:
    """One reusable ``[S, S]`` bool buffer and the hooks that fill and apply it per layer."""

    def __init__(self, layout: TokenLayout, n_layers: int):
        self.layout = layout
        self.n_layers = n_layers
        self._buf: Optional[torch.Tensor] = None
        self._key: object = None
        self.builds = 0  # masks built (tests and benchmarks read these)
        self.calls = 0

    def active(self, layer: int) -> bool:
        raise NotImplementedError

    def _key_for(self, layer: int) -> object:
        raise NotImplementedError

    def _fill(self, buf: torch.Tensor, layer: int) -> None:
        raise NotImplementedError

    def mask(self, layer: int, device: Optional[torch.device] = None) -> Bool[torch.Tensor, "S S"]:
        """The blocked-edge mask of ``layer`` (True = blocked), in the shared buffer: valid until
        the next call for another layer.

        Raises:
            videolens.hooked.edges.EmptyRowError: some query would be left with no key.
        """
        S = self.layout.seq_len
        device = torch.device(device) if device is not None else torch.device("cpu")
        if self._buf is None or self._buf.device != device:
            self._buf = None  # drop the old buffer before making a new one
            self._buf = torch.zeros(S, S, dtype=torch.bool, device=device)
            self._key = None
        key = self._key_for(layer)
        if key != self._key:
            self._key = None
            self._fill(self._buf, layer)
            check_rows(self._buf)
            self._key = key
            self.builds += 1
        return self._buf

    def fwd_hooks(self) -> List[Tuple[str, LayerMaskHook]]:
        """``(hook name, hook)`` pairs for ``model.run_with_hooks(inputs, fwd_hooks=...)``, one per
        layer that blocks something."""
        return [(scores_hook_name(l), LayerMaskHook(self, l)) for l in range(self.n_layers) if self.active(l)]

    def release(self) -> None:
        """Free the buffer."""
        self._buf, self._key = None, None


class PathwayMasker(_Masker):
    """Hooks that apply a ``LayerPlan`` to one input.

    Args:
        layout: the input's TokenLayout.
        plan: the spec resolved for the model's depth (``spec.plan(model.cfg.n_layers)``).
    """

    def __init__(self, layout: TokenLayout, plan: LayerPlan):
        super().__init__(layout, plan.n_layers)
        self.plan = plan

    def active(self, layer: int) -> bool:
        return bool(self.plan.blocked_types(layer))

    def _key_for(self, layer: int) -> object:
        return self.plan.blocked_types(layer)

    def _fill(self, buf: torch.Tensor, layer: int) -> None:
        blocked_mask(self.layout, self.plan.blocked_pairs(layer), self.plan.self_edges, out=buf)


class RandomMasker(_Masker):
    """Hooks that block ``n_block[l]`` random edges in layer ``l`` (the paper's random control):
    lower-triangle edges among positions at or after the video start (the
    diagonal eligible when ``diagonal``, as in the official code), drawn afresh for each layer from
    a generator seeded with ``(seed, key, layer)`` (the official code is unseeded).

    Args:
        layout: the input's TokenLayout.
        n_block: edges to block per layer (``pathways.evaluate.random_block_counts``).
        seed: the run's seed.
        key: anything that tells samples apart (the sample id), so each sample gets its own draw.
        diagonal: whether self edges may be drawn.
    """

    def __init__(self, layout: TokenLayout, n_block: Sequence[int], seed: int = 0, key: object = "",
                 diagonal: bool = False):
        super().__init__(layout, len(n_block))
        self.n_block = tuple(int(n) for n in n_block)
        self.seed, self.key = int(seed), key
        self.diagonal = bool(diagonal)

    def active(self, layer: int) -> bool:
        return self.n_block[layer] > 0

    def _key_for(self, layer: int) -> object:
        return layer

    def _fill(self, buf: torch.Tensor, layer: int) -> None:
        g = torch.Generator().manual_seed(seed_for(self.seed, self.key, layer))
        random_blocked_(buf, self.layout, self.n_block[layer], g, self.diagonal)
