"""Attention pooled to frames and patches, for chosen query positions and layers.

``video_attention`` runs the model once with a hook on ``blocks.{l}.attn.hook_pattern`` for the
chosen layers, pools each layer's pattern ``[heads, S, S]`` to units (``videolens.viz.units``)
inside the hook, and keeps only the pooled ``[heads, n_units, n_units]`` (averaged over the
layers). The full S x S x heads pattern is never cached or serialised, so the paper's layout
(8x12x12 = 1,152 video tokens, about 1,270 positions, 32 heads) pools in well under a second a
layer.

Pooling (exact): for a query unit U and a key unit K,
``pooled[h, U, K] = mean_{q in U} sum_{k in K} pattern[h, q, k]``; every pooled row sums to 1.

Example::

    view = video_attention(model, inputs, query="last", layers=range(2, 5), heads="mean")
    view.per_frame()        # [1, T]   attention share of each frame, from the last position
    view.to_video()         # [1, T, 1, 1] (frame pooling) or [heads, T, h', w'] (video="patch")
    heads_html(view)        # circuitsvis attention_heads over the pooled tokens (viz.render)

``VideoAttention`` is plain data; rendering lives in ``viz.render`` (circuitsvis pages) and
``viz.overlay`` (matplotlib over the frames), which import this module and never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Float
from transformer_lens.utilities import get_act_name

from ..prompting.inputs import VideoLLMInput
from ..layers import resolve_heads, resolve_layers
from .units import TokenUnits, token_units

__all__ = ["VideoAttention", "video_attention", "pool_pattern", "format_layers", "auto_block", "PAGE_VALUES"]

PAGE_VALUES = 25_000
"""Pooled values a view may hold before ``video_attention`` pools patches into blocks on its own.
Measured at the paper's 8x12x12 layout (one head shown): 140 units (19,600 values) make a 1.44 MB
page (1.3 MB of it the inlined circuitsvis bundle) that headless Chromium draws in about 4 s;
300 units: 1.93 MB, 15 s; one unit per token (1164 units): 10.7 MB, not drawn in 4 minutes."""

Heads = Union[None, str, Sequence[int]]


def pool_pattern(pattern: Float[torch.Tensor, "head S S"], units: TokenUnits) -> Float[torch.Tensor, "head n n"]:
    """Pool an attention pattern to units: rows averaged over each unit's query positions,
    columns summed over each unit's key positions (fp32).

    Raises:
        ValueError: the pattern's size does not match the units."""
    H, Sq, Sk = pattern.shape
    S = units.index.numel()
    if Sq != S or Sk != S:
        raise ValueError(f"pattern is [{H}, {Sq}, {Sk}], units cover {S} positions")
    n = len(units)
    idx = units.index.to(pattern.device)
    p = pattern.float()
    rows = p.new_zeros(H, n, S).index_add_(1, idx, p)
    rows /= units.counts.to(p.device, p.dtype)[None, :, None]
    return p.new_zeros(H, n, n).index_add_(2, idx, rows)


def format_layers(layers: Sequence[int]) -> str:
    """``L3``, ``L2-5`` (a contiguous range) or ``L1,4,7``."""
    layers = list(layers)
    if len(layers) == 1:
        return f"L{layers[0]}"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"L{layers[0]}-{layers[-1]}"
    return "L" + ",".join(map(str, layers))


@dataclass
class VideoAttention:
    """Pooled attention of one input, for chosen layers and heads.

    Attributes:
        matrix: ``[n_heads_shown, n_units, n_units]`` pooled attention (mean over ``layers``).
        units: the units (labels, kinds, video blocks).
        layers: the layers averaged.
        heads: one label per row of ``matrix`` (``L3H1``; ``L2-5 mean`` when averaged).
        query: the query group name (or ``"custom"``).
        video_grid: ``(T, h, w)`` of the video tokens.
        timestamps: seconds of each sampled frame (``inputs.video.timestamps``) or None.
        title: free text for figures.
    """

    matrix: Float[torch.Tensor, "head n n"]
    units: TokenUnits
    layers: List[int]
    heads: List[str]
    query: str
    video_grid: Tuple[int, int, int]
    timestamps: Optional[Sequence[float]] = None
    title: str = ""

    @property
    def labels(self) -> List[str]:
        return self.units.labels

    def query_weights(self) -> Float[torch.Tensor, "n_units"]:
        """Weight of each unit in the query group (its share of the query positions)."""
        u = self.units
        counts = torch.bincount(u.index[u.query_positions], minlength=len(u)).float()
        return counts / counts.sum()

    def from_query(self) -> Float[torch.Tensor, "head n_units"]:
        """Attention from the query group (mean over its positions) to every unit."""
        w = self.query_weights().to(self.matrix.device)
        rows = w.nonzero().flatten()
        return torch.einsum("hqk,q->hk", self.matrix[:, rows], w[rows])

    def to_video(self) -> Float[torch.Tensor, "head T hb wb"]:
        """Attention from the query group to each video block: ``[heads, T, 1, 1]`` for frame
        pooling, ``[heads, T, ceil(h/rows), ceil(w/cols)]`` for patch pooling."""
        u = self.units
        vec = self.from_query()
        T, hb, wb = u.video_units.shape
        mask = u.video_block >= 0
        out = vec.new_zeros(vec.shape[0], T * hb * wb)
        out.index_add_(1, u.video_block[mask].to(vec.device), vec[:, mask])
        return out.reshape(vec.shape[0], T, hb, wb)

    def per_frame(self) -> Float[torch.Tensor, "head T"]:
        """Attention from the query group to each frame (sum over the frame's tokens)."""
        return self.to_video().sum((-1, -2))

    def video_share(self) -> Float[torch.Tensor, "head"]:
        """Total attention from the query group to the video tokens (fraction in [0, 1])."""
        return self.per_frame().sum(-1)

    def mean_heads(self) -> "VideoAttention":
        """The same view with heads averaged."""
        if len(self.heads) == 1:
            return self
        return VideoAttention(self.matrix.mean(0, keepdim=True), self.units, self.layers,
                              [f"{format_layers(self.layers)} mean"], self.query, self.video_grid, self.timestamps, self.title)


def auto_block(layout, query_positions: Sequence[int], n_heads: int, budget: int = PAGE_VALUES) -> Tuple[int, int]:
    """The smallest square block of patches ``(k, k)`` for which ``n_heads x units x units``
    stays within ``budget`` (``(1, 1)`` when every video token fits as its own unit).

    At the paper's 8x12x12 grid (about 1270 positions) with one head shown this is ``(3, 3)``.
    """
    T, h, w = layout.video_grid
    for k in range(1, max(h, w) + 1):
        n = len(token_units(layout, query_positions, None, video="patch", block=(k, k)))
        if n_heads * n * n <= budget:
            return (k, k)
    return (max(h, w), max(h, w))


def _heads(model, heads: Heads) -> Tuple[List[int], bool]:
    H = model.cfg.n_heads
    if heads is None:
        return list(range(H)), False
    if isinstance(heads, str):
        if heads != "mean":
            raise ValueError(f"heads must be None (each head), 'mean', or a list of head indices; got {heads!r}")
        return list(range(H)), True
    return resolve_heads(heads, H), False


def _str_tokens(model, inputs: VideoLLMInput) -> Optional[List[str]]:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return None
    return [str(t) for t in tok.convert_ids_to_tokens(inputs.tokens[0].tolist())]


def video_attention(
    model,
    inputs: VideoLLMInput,
    query: Union[str, Sequence[int]] = "last",
    layers: Union[None, int, Sequence[int]] = None,
    heads: Heads = None,
    video: str = "frame",
    block: Optional[Tuple[int, int]] = None,
    fwd_hooks: Sequence[tuple] = (),
    cache=None,
    title: str = "",
) -> VideoAttention:
    """Attention from ``query`` positions, pooled to frames or patches, for a layer or a layer range.

    Args:
        model: the ``HookedVideoLLM``.
        inputs: the prepared input.
        query: a ``TokenLayout.positions`` group (``"last"``, ``"question"``,
            ``"non_option_question"``, ``"true_option"``, ``"option:B"``, ``"frame:3"``,
            ``"span:a:b"``, ...) or explicit positions.
        layers: one layer, several (averaged), or None for every layer. Negative indices count
            from the end.
        heads: None (every head separately), ``"mean"`` (averaged), or a list of heads.
        video: ``"frame"`` or ``"patch"`` pooling of the video tokens; ``block`` = patches per
            unit (rows, cols) for ``"patch"``. None (default): ``(1, 1)``, one unit per video
            token, unless ``heads x units x units`` would exceed ``PAGE_VALUES``; then the
            smallest square block that fits (``auto_block``), said in the view's title.
        fwd_hooks: extra TransformerLens hooks for the run (e.g. an attention knockout).
        cache: an ``ActivationCache`` with the patterns, used instead of running the model
            (``fwd_hooks`` are then ignored).
        title: label for figures.

    Returns:
        ``VideoAttention`` (pooled matrix ``[heads, n_units, n_units]`` plus labels).

    Raises:
        KeyError: unknown query group; ValueError: bad layers, heads, video pooling or block.
    """
    inputs.one_row("video_attention")
    L = inputs.layout
    lays = resolve_layers(layers, model.cfg.n_layers)
    head_idx, average = _heads(model, heads)
    if isinstance(query, str):
        qpos, qname = L.positions(query), query
    else:
        qpos, qname = torch.as_tensor(list(query), dtype=torch.long), "custom"
    strs = _str_tokens(model, inputs)
    auto = block is None
    if auto:
        block = auto_block(L, qpos.tolist(), 1 if average else len(head_idx)) if video == "patch" else (1, 1)
        if block != (1, 1):
            title = f"{title} (patches pooled {block[0]}x{block[1]} to keep the page small)".strip()
    units = token_units(L, qpos.tolist(), strs, video=video, block=block)
    acc: dict = {"sum": None, "n": 0}  # running sum over layers: one pooled matrix in memory

    all_heads = head_idx == list(range(model.cfg.n_heads))

    def add(pattern: torch.Tensor) -> None:
        p = pattern[0] if all_heads else pattern[0].index_select(0, torch.tensor(head_idx, device=pattern.device))
        pooled = pool_pattern(p, units)
        pooled = pooled.mean(0, keepdim=True) if average else pooled
        acc["sum"] = pooled if acc["sum"] is None else acc["sum"].add_(pooled)
        acc["n"] += 1

    if cache is not None:
        for l in lays:
            add(cache["pattern", l])
    else:

        def hook(pattern, hook):
            add(pattern.detach())

        with torch.no_grad():
            model.run_with_hooks(inputs, fwd_hooks=list(fwd_hooks) + [(get_act_name("pattern", l), hook) for l in lays],
                                 stop_at_layer=max(lays) + 1)
    matrix = (acc["sum"] / acc["n"]).cpu()
    lab = format_layers(lays)
    head_labels = [f"{lab} mean"] if average else [f"{lab}H{h}" for h in head_idx]
    ts = None if inputs.video is None else list(map(float, inputs.video.timestamps))
    return VideoAttention(matrix, units, lays, head_labels, qname, tuple(L.video_grid), ts, title)
