"""Video-aware attention views for Jupyter: pooled to frames and patches, rendered with circuitsvis
and matplotlib.

- ``video_attention(model, inputs, query=..., layers=..., heads=..., video="frame"|"patch")`` ->
  ``VideoAttention``: attention from a query group (``last``, ``question``, ``true_option``, any
  ``TokenLayout.positions`` group) pooled to units labelled ``f3``, ``f3[2,5]``, ``Q:move``,
  ``last``; computed inside a hook, never caching S x S x heads.
- ``heads_panel`` / ``video_tokens_panel`` / ``save_html``: circuitsvis ``attention_heads`` and
  ``colored_tokens_multi``; pages that open offline.
- ``plot_overlay``: heatmaps over the sampled frames (PNG).
- ``compare_knockout``: the same view with and without blocked edges.
"""

from .compare import compare_knockout
from .overlay import centre_square, plot_overlay, slot_frames
from .pooling import VideoAttention, format_layers, pool_pattern, video_attention
from .render import MAX_CELLS, Panel, heads_html, heads_panel, page_html, save_html, video_tokens_html, video_tokens_panel
from .units import TokenUnits, position_regions, token_units

__all__ = [
    "video_attention",
    "VideoAttention",
    "Panel",
    "heads_panel",
    "video_tokens_panel",
    "heads_html",
    "video_tokens_html",
    "page_html",
    "save_html",
    "plot_overlay",
    "compare_knockout",
]
