"""Attention edge counts, as the paper counts them (Map the Flow's methods, "Effective pathways").

Per layer the full causal count is ``S (S + 1) / 2`` (every query attends to itself and every
earlier key); the kept count is the full count minus the blocked edges of that layer. Totals
sum over layers; the kept fraction is total kept / total full. For the 7B model, 32 layers at
S = 1267 give 32 x 1267 x 1268 / 2 = 25.7M full edges.

Counts are exact and cheap: layers that block the same edge types share one count, and each
count is a sum over row chunks of the union mask (``videolens.hooked.edges.iter_blocked_rows``), never 32 dense
masks. ``synthetic_layout`` builds the paper's token layouts (no tokenizer needed) to count
edges for a model one cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch

from ..hooked.edges import EdgePair
from ..prompting.layout import Span, TokenLayout
from ..hooked.edges import iter_blocked_rows
from .spec import LayerPlan

__all__ = ["EdgeCounts", "count_edges", "count_blocked", "full_edges", "synthetic_layout", "format_count"]


def full_edges(seq_len: int) -> int:
    """Causal edges of one layer: ``S (S + 1) / 2``."""
    return seq_len * (seq_len + 1) // 2


def count_blocked(layout: TokenLayout, pairs: Tuple[EdgePair, ...], self_edges: str = "block") -> int:
    """Number of distinct edges in the union of ``pairs`` on ``layout`` (causal; the diagonal per
    ``self_edges``, ``videolens.hooked.edges``)."""
    if not pairs:
        return 0
    return sum(int(chunk.sum()) for _, chunk in iter_blocked_rows(layout, tuple(pairs), self_edges=self_edges))


@dataclass(frozen=True)
class EdgeCounts:
    """Per-layer attention edge counts of one sample under one plan.

    Attributes:
        full: per-layer full causal count ``S (S + 1) / 2`` (list of ints, one per layer).
        kept: per-layer count of edges left open.
    """

    full: Tuple[int, ...]
    kept: Tuple[int, ...]

    @property
    def blocked(self) -> Tuple[int, ...]:
        """Per-layer blocked count (full - kept)."""
        return tuple(f - k for f, k in zip(self.full, self.kept))

    @property
    def total_full(self) -> int:
        return sum(self.full)

    @property
    def total_kept(self) -> int:
        return sum(self.kept)

    @property
    def kept_fraction(self) -> float:
        """Total kept / total full (the paper's "edges kept")."""
        return self.total_kept / self.total_full

    def summary(self) -> str:
        """``"42.1% (10.8M/25.7M)"``, the paper's "edges kept" cell."""
        return f"{100 * self.kept_fraction:.1f}% ({format_count(self.total_kept)}/{format_count(self.total_full)})"


def count_edges(layout: TokenLayout, plan: LayerPlan) -> EdgeCounts:
    """Edge counts of ``plan`` on ``layout``: per layer full and kept (Map the Flow's methods).

    Layers that block the same set of edge types are counted once.
    """
    S = layout.seq_len
    full = full_edges(S)
    by_set: Dict[Tuple[str, ...], int] = {}
    kept: List[int] = []
    for l in range(plan.n_layers):
        key = plan.blocked_types(l)
        if key not in by_set:
            by_set[key] = count_blocked(layout, plan.blocked_pairs(l), plan.self_edges)
        kept.append(full - by_set[key])
    return EdgeCounts(tuple([full] * plan.n_layers), tuple(kept))


def format_count(n: float) -> str:
    """12345678 -> '12.3M', 40100 -> '40.1K', 999 -> '999'."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def synthetic_layout(
    video_grid: Sequence[int],
    n_prefix: int,
    n_between: int,
    n_question: int,
    n_after: int,
    n_options: int = 4,
    true_letter: str = "A",
) -> TokenLayout:
    """A TokenLayout of the paper's prompt shape, for counting edges without a model.

    Positions, in order: ``n_prefix`` (BOS, system prompt, role) | video ``T*h*w`` | ``n_between``
    (text between video and question) | question ``n_question`` (question text, then the option
    lines, which share about the second half of it equally) | ``n_after`` (the rest; the final
    position is ``last``). ``S = n_prefix + T*h*w + n_between + n_question + n_after``.

    Raises:
        ValueError: a part too short (``n_after`` >= 1, ``n_question`` > ``n_options``).
    """
    T, h, w = (int(x) for x in video_grid)
    if n_after < 1 or n_question <= n_options or n_prefix < 0 or n_between < 0:
        raise ValueError("need n_after >= 1, n_question > n_options, n_prefix >= 0, n_between >= 0")
    v0 = n_prefix
    q0 = v0 + T * h * w + n_between
    S = q0 + n_question + n_after
    letters = tuple(chr(65 + i) for i in range(n_options))
    per_opt = max(1, (n_question // 2) // n_options)
    opt0 = q0 + n_question - per_opt * n_options
    spans = {
        "system": Span(0, n_prefix),
        "video": Span(v0, v0 + T * h * w),
        "question": Span(q0, q0 + n_question),
        "non_option_question": Span(q0, opt0),
        "question_text": Span(q0, opt0),
        "answer_prefix": Span(q0 + n_question, S),
    }
    for i, L in enumerate(letters):
        spans[f"option:{L}"] = Span(opt0 + i * per_opt, opt0 + (i + 1) * per_opt)
    return TokenLayout(S, spans, (T, h, w), torch.arange(v0, v0 + T * h * w), letters, true_letter)
