"""matplotlib: pooled attention laid over the sampled frames.

One row per view (e.g. ``{"full attention": view, "cross-frame blocked": view_ko}``), one column
per temporal slot of the video tokens. Each cell shows the slot's sampled frame (the middle one
when the vision front end pools several frames into one slot), centre-cropped to the square the
vision tower sees (shortest-edge resize + centre crop, as the official code), with the attention of
each token block painted over it; the title gives the slot's total attention. Colours share one
scale across the whole figure, so rows compare directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Union

import numpy as np
import torch
from jaxtyping import UInt8

from .pooling import VideoAttention

__all__ = ["plot_overlay", "slot_frames", "centre_square"]


def slot_frames(n_frames: int, n_slots: int) -> List[int]:
    """Index of the sampled frame shown for each temporal slot: the middle frame of the slot's
    equal share of the ``n_frames`` sampled frames."""
    if n_slots < 1 or n_frames < 1:
        raise ValueError("need at least one frame and one slot")
    return [min(n_frames - 1, int((i + 0.5) * n_frames / n_slots)) for i in range(n_slots)]


def centre_square(frame: UInt8[np.ndarray, "H W 3"]) -> UInt8[np.ndarray, "s s 3"]:
    """The centre square of a frame (what a shortest-edge resize + centre crop keeps)."""
    H, W = frame.shape[:2]
    s = min(H, W)
    top, left = (H - s) // 2, (W - s) // 2
    return frame[top : top + s, left : left + s]


def _token_map(view: VideoAttention, values: torch.Tensor) -> np.ndarray:
    """[T, hb, wb] block values -> [T, h, w] token-level map (each token shows its block's value)."""
    T, h, w = view.video_grid
    ph, pw = view.units.block if view.units.video_pool == "patch" else (h, w)
    rows = np.minimum(np.arange(h) // ph, values.shape[1] - 1)
    cols = np.minimum(np.arange(w) // pw, values.shape[2] - 1)
    v = values.numpy()
    return v[:, rows][:, :, cols]


def plot_overlay(
    views: Union[VideoAttention, Mapping[str, VideoAttention]],
    frames: UInt8[np.ndarray, "n H W 3"],
    head: Optional[int] = None,
    path: Union[None, str, Path] = None,
    vmax: Optional[float] = None,
    cmap: str = "inferno",
    alpha: float = 0.55,
    dpi: int = 110,
):
    """Heatmaps of attention over the sampled frames, one row per view.

    Args:
        views: one view or ``{row title: view}`` (same video grid).
        frames: the sampled frames ``inputs.video.frames`` (uint8 ``[n, H, W, 3]``).
        head: which row of each view's heads to show (default: the mean of its heads).
        path: save the figure there (PNG by extension) when given.
        vmax: top of the colour scale (default: the largest block value shown).
        cmap, alpha: colour map and opacity of the heatmap.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: views with different video grids, or frames that are not uint8 ``[n, H, W, 3]``.
    """
    import matplotlib.pyplot as plt

    if isinstance(views, VideoAttention):
        views = {views.title or f"attention from {views.query}": views}
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [n, H, W, 3], got {frames.shape}")
    grids = {tuple(v.video_grid) for v in views.values()}
    if len(grids) != 1:
        raise ValueError(f"views have different video grids {grids}")
    T = next(iter(grids))[0]
    shown = {}
    for name, v in views.items():
        vals = v.to_video()
        vals = vals.mean(0) if head is None else vals[head]
        shown[name] = (vals, _token_map(v, vals))
    top = vmax if vmax is not None else max(float(m.max()) for _, m in shown.values()) or 1.0
    picks = slot_frames(len(frames), T)
    fig, axes = plt.subplots(len(views), T, figsize=(1.7 * T + 1.2, 1.9 * len(views) + 0.4), squeeze=False,
                             layout="constrained")
    im = None
    for r, (name, (vals, tok)) in enumerate(shown.items()):
        v = views[name]
        for i in range(T):
            ax = axes[r, i]
            img = centre_square(frames[picks[i]])
            s = img.shape[0]
            ax.imshow(img, extent=(0, s, s, 0))
            im = ax.imshow(tok[i], extent=(0, s, s, 0), cmap=cmap, vmin=0.0, vmax=top, alpha=alpha,
                           interpolation="nearest")
            t = "" if not v.timestamps else f" {v.timestamps[picks[i]]:.1f}s"
            ax.set_title(f"f{i}{t}: {float(vals[i].sum()):.3f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="attention")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig
