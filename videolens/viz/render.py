"""circuitsvis views of pooled video attention, and self-contained HTML pages.

- ``heads_html(view)``: circuitsvis ``attention_heads`` over the pooled units (``f3``,
  ``f3[2,5]``, ``Q:move``, ``last``, ``<sys>``), one pattern per head (or the head mean).
- ``video_tokens_html(view)``: circuitsvis ``colored_tokens_multi``: attention from the query
  group to each video unit, one value per head; its size grows linearly with the tokens, so it
  shows every one of the 8x12x12 patches.
- ``save_html(path, panels)``: one page with several panels (e.g. the same view with and
  without a knockout, side by side) that opens offline: the circuitsvis bundle is inlined once
  (as in circuitsvis' own ``RenderedHTML.local_src``) and no script is loaded from a URL.

Sizes: values are rounded to 5 decimals, and ``heads_html`` refuses views whose
``heads x units x units`` exceeds ``max_cells`` (pool coarser, average heads, or use
``video_tokens_html``), so a full S x S x heads pattern is never serialised.
"""

from __future__ import annotations

import html as _html
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union
from uuid import uuid4

import numpy as np
import torch

from .pooling import VideoAttention

__all__ = ["Panel", "heads_panel", "video_tokens_panel", "heads_html", "video_tokens_html", "page_html", "save_html",
           "MAX_CELLS"]

MAX_CELLS = 2_000_000


def _rounded(x: torch.Tensor, decimals: int = 5) -> list:
    return np.round(x.detach().double().cpu().numpy(), decimals).tolist()


@dataclass
class Panel:
    """One circuitsvis component: ``element`` (a circuitsvis React name such as
    ``AttentionHeads``) with its ``props``, under a ``title``."""

    title: str
    element: str
    props: Dict

    def rendered(self):
        """The circuitsvis ``RenderedHTML`` (Jupyter shows it inline)."""
        from circuitsvis.utils.render import render

        return render(self.element, **self.props)

    def _repr_html_(self) -> str:
        return self.rendered()._repr_html_()


def _select(view: VideoAttention, include_text: bool):
    keep = [i for i, k in enumerate(view.units.kinds) if include_text or k != "text"]
    return keep, [view.units.labels[i] for i in keep]


def heads_panel(view: VideoAttention, include_text: bool = True, max_cells: int = MAX_CELLS, title: str = "") -> Panel:
    """A circuitsvis ``AttentionHeads`` panel of the pooled matrix.

    Args:
        view: the pooled attention.
        include_text: keep the pooled text units (``<sys>``, ``<Q>``, ...); False shows only
            video and query units (rows then sum to less than 1).
        max_cells: refuse more than this many ``heads x units x units`` values.

    Raises:
        ValueError: the view is too large (the message says how to shrink it).
    """
    keep, labels = _select(view, include_text)
    n, H = len(keep), view.matrix.shape[0]
    if H * n * n > max_cells:
        raise ValueError(
            f"{H} heads x {n} x {n} units = {H * n * n} values exceeds max_cells={max_cells}: pool coarser "
            f"(video='frame' or block=(3, 3)), average heads (heads='mean' / view.mean_heads()), or use video_tokens_html"
        )
    idx = torch.tensor(keep)
    attn = view.matrix[:, idx][:, :, idx]
    props = {"attention": _rounded(attn), "tokens": labels, "attentionHeadNames": list(view.heads),
             "maxValue": max(float(attn.max()), 1e-9), "minValue": 0.0, "maskUpperTri": False}
    return Panel(title or view.title or f"attention from {view.query}", "AttentionHeads", props)


def video_tokens_panel(view: VideoAttention, title: str = "") -> Panel:
    """A circuitsvis ``ColoredTokensMulti`` panel: one token per video unit, coloured by the
    attention it gets from the query group, one value per head."""
    u = view.units
    vec = view.from_query()  # [H, n]
    vid = [i for i, k in enumerate(u.kinds) if u.video_block[i] >= 0]
    props = {"tokens": [u.labels[i] for i in vid], "values": _rounded(vec[:, vid].T), "labels": list(view.heads)}
    return Panel(title or view.title or f"attention from {view.query} to the video", "ColoredTokensMulti", props)


def heads_html(view: VideoAttention, **kw):
    """circuitsvis ``attention_heads`` of the view, as a ``RenderedHTML`` (``str()``: CDN page,
    ``.local_src``: self-contained). Arguments as ``heads_panel``."""
    return heads_panel(view, **kw).rendered()


def video_tokens_html(view: VideoAttention, **kw):
    """circuitsvis ``colored_tokens_multi`` of the view, as a ``RenderedHTML``."""
    return video_tokens_panel(view, **kw).rendered()


def _bundle() -> str:
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.exists():
        raise FileNotFoundError(f"the circuitsvis JavaScript bundle is missing at {path}; reinstall circuitsvis")
    return path.read_text(encoding="utf-8").replace("</script>", "")


def page_html(panels: Sequence[Panel], title: str = "videolens attention", columns: Optional[int] = None) -> str:
    """A complete HTML page with the panels in a grid (``columns`` per row; default all in one
    row, i.e. side by side). The circuitsvis bundle is inlined once; nothing is fetched."""
    from circuitsvis.utils.convert_props import convert_props

    cols = columns or len(panels)
    cells, calls = [], []
    for p in panels:
        uid = "vl-" + uuid4().hex[:12]
        cells.append(f'<div class="panel"><h3>{_html.escape(p.title)}</h3><div id="{uid}"></div></div>')
        calls.append(f'CircuitsVis.render("{uid}", CircuitsVis.{p.element}, {convert_props(p.props)});')
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{_html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:16px}"
        f".grid{{display:grid;grid-template-columns:repeat({cols},minmax(0,1fr));gap:24px}}"
        ".panel h3{font-size:14px;margin:4px 0}</style></head><body>"
        f"<h2>{_html.escape(title)}</h2><div class=\"grid\">{''.join(cells)}</div>\n"
        f"<script>\n{_bundle()}\n</script>\n<script>\n{chr(10).join(calls)}\n</script>\n</body></html>\n"
    )


def save_html(path: Union[str, Path], panels: Union[Panel, Sequence[Panel]], title: str = "videolens attention",
              columns: Optional[int] = None) -> Path:
    """Write ``page_html(panels)`` to ``path`` (parent folders created). Returns the path."""
    panels = [panels] if isinstance(panels, Panel) else list(panels)
    if not panels:
        raise ValueError("save_html needs at least one panel")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page_html(panels, title, columns), encoding="utf-8")
    return path
