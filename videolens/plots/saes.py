"""matplotlib: an SAE feature on the frames (``videolens.saes.features.FeatureMap``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from .lens import _save

if TYPE_CHECKING:  # the plotting layer does not import the analyses at run time
    from ..saes.features import FeatureMap

__all__ = ["plot_feature"]


def plot_feature(fmap: FeatureMap, path: Optional[Union[str, Path]] = None, title: Optional[str] = None):
    """A feature on the frames: one column per temporal slot (the slot's middle sampled frame,
    centre-cropped as the vision tower sees it, the feature's activation per video token painted over
    it on one colour scale, tokens where it is 0 left clear), and below them the strongest activation
    per slot as a line.

    Returns:
        the matplotlib Figure (saved to ``path`` when given).
    """
    import matplotlib.pyplot as plt

    from ..viz.overlay import centre_square, slot_frames

    acts = fmap.acts.numpy()
    n = acts.shape[0]
    vmax = float(max(acts.max(), 1e-6))
    fig = plt.figure(figsize=(1.9 * n, 4.2))
    grid = fig.add_gridspec(2, n, height_ratios=[1.0, 0.8], hspace=0.35)
    shown = slot_frames(len(fmap.frames), n) if fmap.frames is not None else [None] * n
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        if fmap.frames is not None:
            img = centre_square(fmap.frames[shown[i]])
            ax.imshow(img, extent=(0, 1, 1, 0))
        ax.imshow(np.ma.masked_where(acts[i] <= 0, acts[i]), cmap="magma", vmin=0, vmax=vmax,
                  alpha=0.65 if fmap.frames is not None else 1.0, extent=(0, 1, 1, 0), interpolation="nearest")
        ax.set_title(f"slot {i}\nmax {acts[i].max():.2f}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    ax.plot(range(n), fmap.per_slot.numpy(), marker="o")
    ax.set_xticks(range(n))
    ax.set_xlabel("temporal slot")
    ax.set_ylabel("max activation")
    ax.grid(alpha=0.3)
    fig.suptitle(title or f"feature {fmap.feature}" + (f" on {fmap.sample_id}" if fmap.sample_id else ""), fontsize=10)
    return _save(fig, path)
