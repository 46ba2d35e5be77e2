"""Pooled token units: a video prompt shortened to what a person can read.

Every position of the prompt belongs to exactly one *unit*:

- video tokens pooled per frame (``f3``) or per (frame, row, column) patch (``f3[2,5]``), or per
  block of patches (``f3[0:3,6:9]``, ``block=(3, 3)``);
- query positions (the positions whose attention is shown) one unit each, labelled with their
  region and token (``Q:move``, ``B:left``, ``last``);
- the rest of the text pooled per contiguous region (``<sys>``, ``<Q>``, ``<A>``, ``<prompt>``).

Regions come from ``TokenLayout.spans`` (the paper's token groups), never from decoded
strings. Pooled attention over units (``videolens.viz.pooling``) takes, for a unit of queries,
the mean over its query positions, and, for a unit of keys, the sum over its key positions, so
every pooled row still sums to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Int

from ..prompting.layout import TokenLayout

__all__ = ["TokenUnits", "token_units", "position_regions", "VIDEO_POOLS"]

VIDEO_POOLS = ("frame", "patch")

# span name prefix -> region label; later entries win (more specific)
_REGION_ORDER: Tuple[Tuple[str, str], ...] = (
    ("system", "sys"),
    ("video", "time"),
    ("question", "Q"),
    ("non_option_question", "Q"),
    ("question_text", "Q"),
    ("option:", "{letter}"),
    ("answer_prefix", "prompt"),
    ("bos", "bos"),
)


def position_regions(layout: TokenLayout) -> List[str]:
    """Region label of every position: ``sys``, ``bos``, ``video`` (video tokens), ``time``
    (text inside the video block, e.g. timestamps), ``Q``, the option letter, ``prompt``
    (answer prefix) or ``text`` (everything else)."""
    regions = ["text"] * layout.seq_len
    for prefix, label in _REGION_ORDER:
        for name, span in layout.spans.items():
            hit = name.startswith(prefix) if prefix.endswith(":") else name == prefix
            if not hit:
                continue
            lab = name.split(":", 1)[1] if label == "{letter}" else label
            for p in span:
                regions[p] = lab
    for p in layout.video_positions.tolist():
        regions[p] = "video"
    return regions


def _clean(tok: str) -> str:
    t = tok.replace("\u2581", " ").replace("\u0120", " ").replace("\n", "\\n").strip()
    return t or "\u2423"


@dataclass
class TokenUnits:
    """The units of one prompt.

    Attributes:
        labels: one label per unit, in sequence order.
        kinds: ``"video"``, ``"query"`` or ``"text"`` per unit.
        index: ``[S]`` unit of each position.
        counts: ``[n_units]`` positions per unit.
        video_units: ``[T, hb, wb]`` unit of each video block (``hb = wb = 1`` for frame pooling).
        video_block: ``[n_units]`` flat block ``f*hb*wb + rb*wb + cb`` of each video unit, -1 for text.
        query_positions: ``[n_query]`` the query positions, sorted.
        video_pool: ``"frame"`` or ``"patch"``; block: ``(rows, cols)`` of a patch block.
    """

    labels: List[str]
    kinds: List[str]
    index: Int[torch.Tensor, "S"]
    counts: Int[torch.Tensor, "n_units"]
    video_units: Int[torch.Tensor, "T hb wb"]
    video_block: Int[torch.Tensor, "n_units"]
    query_positions: Int[torch.Tensor, "n_query"]
    video_pool: str
    block: Tuple[int, int]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def query_units(self) -> Int[torch.Tensor, "n"]:
        """Units holding query positions, in order (a unit appears once)."""
        return torch.unique(self.index[self.query_positions])

    def positions_of(self, unit: int) -> Int[torch.Tensor, "n"]:
        return (self.index == unit).nonzero().flatten()


def _block_label(f: int, rb: int, cb: int, block: Tuple[int, int], h: int, w: int) -> str:
    ph, pw = block
    if (ph, pw) == (1, 1):
        return f"f{f}[{rb},{cb}]"
    r0, c0 = rb * ph, cb * pw
    return f"f{f}[{r0}:{min(h, r0 + ph)},{c0}:{min(w, c0 + pw)}]"


def token_units(
    layout: TokenLayout,
    query_positions: Sequence[int],
    str_tokens: Optional[Sequence[str]] = None,
    video: str = "frame",
    block: Tuple[int, int] = (1, 1),
) -> TokenUnits:
    """Split a prompt into units (see the module docstring).

    Args:
        layout: the prompt's layout.
        query_positions: positions shown as queries (each its own unit unless it is a video token,
            which keeps its video pooling).
        str_tokens: token strings (``model.to_str_tokens(inputs.tokens[0])``) for query labels;
            without them query units are labelled ``Q@117``.
        video: ``"frame"`` (one unit per frame) or ``"patch"`` (per ``block`` of patches).
        block: ``(rows, cols)`` of patches per unit for ``video="patch"``; ``(1, 1)`` is one
            unit per video token.

    Raises:
        ValueError: unknown ``video``, a bad ``block``, or query positions out of range.
    """
    if video not in VIDEO_POOLS:
        raise ValueError(f"video must be one of {VIDEO_POOLS}, got {video!r}")
    ph, pw = (int(block[0]), int(block[1]))
    if ph < 1 or pw < 1:
        raise ValueError(f"block must be positive (rows, cols), got {block}")
    S = layout.seq_len
    qpos = torch.as_tensor(list(query_positions), dtype=torch.long).unique()
    if qpos.numel() == 0:
        raise ValueError("no query positions")
    if int(qpos.min()) < 0 or int(qpos.max()) >= S:
        raise ValueError(f"query positions must lie in [0, {S})")
    is_query = torch.zeros(S, dtype=torch.bool)
    is_query[qpos] = True
    regions = position_regions(layout)
    T, h, w = layout.video_grid
    hb, wb = (1, 1) if video == "frame" else (-(-h // ph), -(-w // pw))

    # a key per position; consecutive equal keys of text merge, video keys merge anywhere
    vid_key: Dict[int, tuple] = {}
    for p, f, r, c in zip(layout.video_positions.tolist(), layout.video_frame_index.tolist(),
                          layout.video_row_index.tolist(), layout.video_col_index.tolist()):
        rb, cb = (0, 0) if video == "frame" else (r // ph, c // pw)
        vid_key[p] = ("video", f, rb, cb, bool(is_query[p]))

    labels: List[str] = []
    kinds: List[str] = []
    index = torch.empty(S, dtype=torch.long)
    seen: Dict[tuple, int] = {}
    video_units = torch.full((T, hb, wb), -1, dtype=torch.long)
    blocks: List[int] = []
    prev_text: Optional[tuple] = None
    for p in range(S):
        if p in vid_key:
            key = vid_key[p]
            if key not in seen:
                _, f, rb, cb, q = key
                seen[key] = len(labels)
                labels.append(f"f{f}" if video == "frame" else _block_label(f, rb, cb, (ph, pw), h, w))
                kinds.append("query" if q else "video")
                blocks.append(f * hb * wb + rb * wb + cb)
                if video_units[f, rb, cb] < 0:
                    video_units[f, rb, cb] = seen[key]
            index[p] = seen[key]
            prev_text = None
            continue
        reg = regions[p]
        if is_query[p]:
            if p == S - 1:
                lab = "last"
            elif str_tokens is not None:
                lab = f"{reg}:{_clean(str(str_tokens[p]))}"
            else:
                lab = f"{reg}@{p}"
            index[p] = len(labels)
            labels.append(lab)
            kinds.append("query")
            blocks.append(-1)
            prev_text = None
            continue
        key = ("text", reg)
        if prev_text == key:
            index[p] = len(labels) - 1
            continue
        index[p] = len(labels)
        labels.append(f"<{reg}>")
        kinds.append("text")
        blocks.append(-1)
        prev_text = key
    counts = torch.bincount(index, minlength=len(labels))
    return TokenUnits(labels, kinds, index, counts, video_units, torch.tensor(blocks, dtype=torch.long),
                      qpos.sort().values, video, (ph, pw))
