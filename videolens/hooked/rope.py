"""LongRoPE's two tables in a HookedTransformer: short factors for short sequences, long factors
for long ones (Phi-3-128k; Mini-InternVL-Chat-4B-V1-5's released code).

TransformerLens 3.9 has no LongRoPE. Its rotary tables are buffers every block reads, so
``RopeSwitch`` writes one of two precomputed table sets into them before each forward, chosen the
way transformers and the official Phi-3 code choose: the long factors, at every position, once the
largest position id + 1 exceeds ``original_max_position_embeddings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from .._tl_compat import set_rotary_tables

__all__ = ["RopeSwitch"]


@dataclass
class RopeSwitch:
    """Two ``(sin, cos)`` table sets ``[n_ctx, d_head]`` and the length above which the long one is used.

    Attributes:
        threshold: ``original_max_position_embeddings`` (4096 for Phi-3-mini-128k).
        short, long: the table sets (attention factor included).
        current: ``"short"`` or ``"long"``, the set now in the blocks.
    """

    threshold: int
    short: Tuple[torch.Tensor, torch.Tensor]
    long: Tuple[torch.Tensor, torch.Tensor]
    current: str = ""

    def select(self, model, n_positions: int) -> str:
        """Write the set for a forward over positions ``0 .. n_positions - 1`` into every block
        (only when it changes); returns ``"short"`` or ``"long"``."""
        want = "long" if n_positions > self.threshold else "short"
        if want != self.current:
            sin, cos = self.long if want == "long" else self.short
            for block in model.blocks:
                set_rotary_tables(block.attn, sin, cos)
            self.current = want
        return want

    def to(self, device) -> "RopeSwitch":
        self.short = tuple(t.to(device) for t in self.short)
        self.long = tuple(t.to(device) for t in self.long)
        self.current = ""
        return self
