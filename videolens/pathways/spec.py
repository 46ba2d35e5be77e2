"""Pathway specs: which attention edge types each layer keeps (data), and their per-layer plan.

A spec (Map the Flow's methods, "Effective pathways"; the paper's Finding 4) is a JSON object::

    {
      "name": "llava-next-7b-video-ft",
      "n_layers": 32,                                   # depth the layer numbers refer to
      "kept": {                                         # edge type -> 0-indexed inclusive ranges
        "cross_frame": [[5, 14]],                       #   where it is KEPT; blocked in every
        "video_to_question": [[5, 19]],                 #   other layer
        "question_to_last": [[15, 24]]
      },
      "always_blocked": {                               # edge type -> layers where it is blocked:
        "last_to_last": "all",                          #   every layer,
        "video_to_last": "all",
        "video_to_video": {"after": "video_to_question"},   # after the last kept layer of a
        "question_to_question": {"after": "question_to_last"},  # "kept" entry,
        "within_frame": [[30, 31]]                      #   or explicit ranges
      },
      "edge_types": {"my_type": ["video->frame:0"]},    # optional: spec-local edge types
      "model": "...", "video_grid": [8, 12, 12], "source": "...", "paper": {...},  # metadata
      "random_block_ratio": 0.58                      # optional: the official random control's ratio
    }

Edge types name lists of ``videolens.hooked.edges.EdgePair`` strings (``"KEY->QUERY[relation]"`` over
TokenLayout groups); the built-in ones are in ``EDGE_TYPES``. Edges of types the spec does not
name (system prompt, the text between video and question, the answer prefix, ...) are always kept.
Blocking wins: an edge that a "kept" type and a blocked type share is blocked.

**Depth rule** (``map_layers``): a spec written for ``n_layers = L`` applies to a model with
``L'`` layers by relative depth. Source layer ``i`` covers the depth interval ``[i/L, (i+1)/L)``;
target layer ``j`` belongs to a mapped range ``[a, b]`` when its centre ``(j + 0.5) / L'`` lies in
``[a/L, (b+1)/L)``. With ``L' == L`` this is the identity; ranges that tile the source depth tile
the target depth (so "kept" and "after" never overlap or leave a gap); a non-empty range that
would map to no layer keeps the single target layer holding the centre of the range. ``"after"``
is resolved after mapping: the layers after the last mapped kept layer.

Example::

    spec = load_spec("llava-next-7b-video-ft")
    plan = spec.plan(32)                  # LayerPlan
    plan.blocked_types(0)                 # ('cross_frame', 'video_to_question', 'question_to_last', ...)
    plan.blocked_pairs(0)                 # EdgePairs blocked in layer 0
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..hooked.edges import EdgePair
from ..errors import VideolensError
from ..registry import Registry

__all__ = [
    "EDGE_TYPES",
    "SpecError",
    "PathwaySpec",
    "LayerPlan",
    "map_layers",
]  # loading, validation and register_edge_type: videolens.pathways.loading

Range = Tuple[int, int]

#: Built-in edge types: name -> EdgePair strings ("KEY->QUERY[relation]"), Map the Flow's methods.
EDGE_TYPES: Registry[Tuple[str, ...]] = Registry("edge type", {
    "cross_frame": ("video->video[cross_frame]",),  # frame j -> frame i, j < i
    "within_frame": ("video->video[same_frame]",),
    "video_to_video": ("video->video",),  # all video edges, within frame too
    "video_to_question": ("video->question",),
    "video_to_last": ("video->last",),
    "question_to_last": ("question->last",),  # question text and option lines -> last
    "question_to_question": ("question->question",),
    "last_to_last": ("last->last",),  # only the self edge: blocked under self_edges="block" (official)
    "non_option_question_to_last": ("non_option_question->last",),
    "true_option_to_last": ("true_option->last",),
    "false_options_to_last": ("false_options->last",),
    "video_to_non_option_question": ("video->non_option_question",),
    "video_to_true_option": ("video->true_option",),
    "non_option_question_to_true_option": ("non_option_question->true_option",),
})

#: Span names a TokenLayout may carry besides GROUP_RESOLVERS (videolens.prompting.prompts.BuiltPrompt).
_SPAN_GROUPS = ("system", "question_text", "answer_prefix", "bos", "placeholder")



class SpecError(VideolensError, ValueError):
    """A malformed pathway spec; the message names the file and the offending entry."""


# ---- depth mapping ----------------------------------------------------------------------------
def map_layers(ranges: Sequence[Range], src_layers: int, dst_layers: int) -> Tuple[int, ...]:
    """Map inclusive layer ranges of a ``src_layers``-deep model to a ``dst_layers``-deep one.

    Target layer ``j`` is in the image of ``[a, b]`` when ``(j + 0.5) / dst`` lies in
    ``[a / src, (b + 1) / src)`` (relative depth); a range that would map to nothing keeps the
    single layer holding the range's centre. Identity when ``src == dst``.

    Returns:
        Sorted target layer indices.
    """
    out = set()
    for a, b in ranges:
        lo = math.ceil(a * dst_layers / src_layers - 0.5)
        hi = math.ceil((b + 1) * dst_layers / src_layers - 0.5) - 1
        lo, hi = max(lo, 0), min(hi, dst_layers - 1)
        if hi < lo:
            centre = (a + b + 1) / 2 / src_layers
            lo = hi = min(dst_layers - 1, int(centre * dst_layers))
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


# ---- the spec ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathwaySpec:
    """A validated pathway spec (see the module docstring for the format).

    Attributes:
        name: spec name (records, tables).
        n_layers: depth the layer numbers refer to.
        edge_types: every edge type the spec names -> its EdgePairs.
        kept: edge type -> inclusive layer ranges where it is kept (blocked elsewhere).
        always_blocked: edge type -> ``"all"``, ``("after", kept_name)`` or a tuple of ranges.
        meta: everything else in the file (model, video_grid, source, paper numbers).
        origin: the file or name it came from (for messages).
    """

    name: str
    n_layers: int
    edge_types: Dict[str, Tuple[EdgePair, ...]]
    kept: Dict[str, Tuple[Range, ...]]
    always_blocked: Dict[str, Union[str, Tuple[str, str], Tuple[Range, ...]]]
    meta: Dict[str, Any] = field(default_factory=dict)
    origin: str = "<dict>"
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def digest(self) -> str:
        """Short hash of the spec's content (stored with runs, so a resume with an edited spec fails)."""
        text = json.dumps(self.raw, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def random_block_ratio(self) -> Optional[float]:
        """The official scripts' ``--random_block_ratio`` for this model (the spec file's
        ``random_block_ratio``), or None."""
        r = self.meta.get("random_block_ratio")
        return None if r is None else float(r)

    def plan(self, n_layers: Optional[int] = None, self_edges: str = "block") -> "LayerPlan":
        """The per-layer plan for a model with ``n_layers`` layers (default: the spec's own depth),
        mapped by relative depth (``map_layers``). ``self_edges``: ``"block"`` (official: the
        diagonal is blocked too for last_to_last, video_to_video and question_to_question) or
        ``"keep"`` (never block self edges; a difference from the paper)."""
        from ..hooked.edges import check_self_edges

        check_self_edges(self_edges)
        n = self.n_layers if n_layers is None else int(n_layers)
        if n < 1:
            raise ValueError(f"n_layers must be >= 1, got {n}")
        kept = {t: map_layers(r, self.n_layers, n) for t, r in self.kept.items()}
        blocked: Dict[str, Tuple[int, ...]] = {}
        for t, kept_layers in kept.items():
            blocked[t] = tuple(l for l in range(n) if l not in set(kept_layers))
        for t, sel in self.always_blocked.items():
            if sel == "all":
                layers: Tuple[int, ...] = tuple(range(n))
            elif isinstance(sel, tuple) and len(sel) == 2 and sel[0] == "after":
                last = max(kept[sel[1]])
                layers = tuple(range(last + 1, n))
            else:
                layers = map_layers(sel, self.n_layers, n)
            blocked[t] = tuple(sorted(set(blocked.get(t, ())) | set(layers)))
        per_layer = tuple(tuple(t for t in blocked if l in blocked[t]) for l in range(n))
        return LayerPlan(self.name, n, per_layer, {t: self.edge_types[t] for t in blocked}, kept, blocked,
                         self_edges, self.random_block_ratio)


@dataclass(frozen=True)
class LayerPlan:
    """A spec resolved for one depth: which edge types each layer blocks.

    Attributes:
        spec_name: the spec's name.
        n_layers: model depth.
        per_layer: ``per_layer[l]`` = names of the edge types blocked in layer ``l``.
        pairs: edge type -> EdgePairs.
        kept_layers / blocked_layers: edge type -> layer indices (after depth mapping).
        self_edges: ``"block"`` (official) or ``"keep"``: whether blocked edge types include the
            diagonal where key and query groups overlap (``videolens.hooked.edges``).
        random_block_ratio: the spec's official random-control ratio (None: use the plan's own
            blocked fraction).
    """

    spec_name: str
    n_layers: int
    per_layer: Tuple[Tuple[str, ...], ...]
    pairs: Dict[str, Tuple[EdgePair, ...]]
    kept_layers: Dict[str, Tuple[int, ...]]
    blocked_layers: Dict[str, Tuple[int, ...]]
    self_edges: str = "block"
    random_block_ratio: Optional[float] = None

    def blocked_types(self, layer: int) -> Tuple[str, ...]:
        """Names of the edge types blocked in ``layer``."""
        return self.per_layer[layer]

    def blocked_pairs(self, layer: int) -> Tuple[EdgePair, ...]:
        """EdgePairs blocked in ``layer`` (their union is that layer's blocked edge set)."""
        return tuple(p for t in self.per_layer[layer] for p in self.pairs[t])

    def describe(self) -> List[str]:
        """One line per edge type: kept / blocked layers, for printing."""
        lines = []
        for t in self.pairs:
            kept = self.kept_layers.get(t)
            what = f"kept {_fmt_layers(kept)}" if kept is not None else f"blocked {_fmt_layers(self.blocked_layers[t])}"
            lines.append(f"{t:24s} {what}")
        return lines


def _fmt_layers(layers: Sequence[int]) -> str:
    if not layers:
        return "none"
    runs, start, prev = [], layers[0], layers[0]
    for l in list(layers[1:]) + [None]:
        if l is not None and l == prev + 1:
            prev = l
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if l is not None:
            start = prev = l
    return "L" + ",".join(runs)


