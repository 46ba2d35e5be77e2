"""Forward hooks that block attention edges layer by layer: the pathway spec and the random control.

Each hook sits on ``blocks.{l}.attn.hook_attn_scores`` (``[batch, head, query, key]``, scaled
and causally masked by TransformerLens) and sets the blocked edges to ``-inf`` in every head
(REFERENCE section 2, attention knockout). The layer's ``bool [S, S]`` mask is built when the
layer runs, into one buffer owned by the masker, and broadcast over batch and heads, so the
extra memory is one ``S x S`` boolean mask at any time; consecutive layers that block the same
edge types reuse it without rebuilding.

Example::

    plan = load_spec("llava-next-7b-video-ft").plan(model.cfg.n_layers)
    masker = PathwayMasker(inputs.layout, plan)
    logits = model.run_with_hooks(inputs, fwd_hooks=masker.fwd_hooks())
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Bool, Float

from ..layout import TokenLayout
from .masks import assert_no_empty_rows, random_blocked_, seed_for, write_blocked_
from .spec import LayerPlan

__all__ = ["PathwayMasker", "RandomMasker", "block_scores_", "hook_name"]

Hook = Tuple[str, Callable]


def hook_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_attn_scores``."""
    return f"blocks.{layer}.attn.hook_attn_scores"


def block_scores_(
    scores: Float[torch.Tensor, "batch head query key"], mask: Bool[torch.Tensor, "query key"]
) -> Float[torch.Tensor, "batch head query key"]:
    """Set blocked edges to ``-inf`` in place, broadcasting the ``[S, S]`` mask over batch and heads.

    Raises:
        ValueError: the scores are not ``[..., S, S]`` for this mask (e.g. a cached generation step).
    """
    if tuple(scores.shape[-2:]) != tuple(mask.shape):
        raise ValueError(
            f"attention scores are {tuple(scores.shape[-2:])} (query, key) but the mask is {tuple(mask.shape)}: "
            "pathway masks need the whole prompt in one forward pass"
        )
    return scores.masked_fill_(mask, float("-inf"))


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
            videolens.edges.EmptyRowError: some query would be left with no key.
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
            assert_no_empty_rows(self._buf)
            self._key = key
            self.builds += 1
        return self._buf

    def fwd_hooks(self) -> List[Hook]:
        """``(hook name, fn)`` pairs for ``model.run_with_hooks(inputs, fwd_hooks=...)``, one per
        layer that blocks something."""
        return [(hook_name(l), self._hook(l)) for l in range(self.n_layers) if self.active(l)]

    def _hook(self, layer: int) -> Callable:
        def fn(scores, hook=None):
            self.calls += 1
            return block_scores_(scores, self.mask(layer, scores.device))

        return fn

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
        write_blocked_(buf, self.layout, self.plan.blocked_pairs(layer))


class RandomMasker(_Masker):
    """Hooks that block ``n_block[l]`` random edges in layer ``l`` (REFERENCE section 2, random
    control): lower-triangle edges among positions at or after the video start, never the
    diagonal, drawn afresh for each layer from a generator seeded with ``(seed, key, layer)``.

    Args:
        layout: the input's TokenLayout.
        n_block: edges to block per layer (usually ``EdgeCounts.blocked`` of the pathway plan).
        seed: the run's seed.
        key: anything that tells samples apart (the sample id), so each sample gets its own draw.
    """

    def __init__(self, layout: TokenLayout, n_block: Sequence[int], seed: int = 0, key: object = ""):
        super().__init__(layout, len(n_block))
        self.n_block = tuple(int(n) for n in n_block)
        self.seed, self.key = int(seed), key

    def active(self, layer: int) -> bool:
        return self.n_block[layer] > 0

    def _key_for(self, layer: int) -> object:
        return layer

    def _fill(self, buf: torch.Tensor, layer: int) -> None:
        g = torch.Generator().manual_seed(seed_for(self.seed, self.key, layer))
        random_blocked_(buf, self.layout, self.n_block[layer], g)
