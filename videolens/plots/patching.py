"""The figure of an activation-patching result (``videolens.patching.PatchResult``)."""

from __future__ import annotations

from typing import Optional

__all__ = ["plot_patch_result"]


def plot_patch_result(result, ax=None, title: Optional[str] = None, cmap: str = "RdBu_r"):
    """Heatmap of a ``videolens.patching.PatchResult`` (matplotlib): layers x groups, or for
    per-head results one panel per group (layers x heads). Returns the figure."""
    import matplotlib.pyplot as plt

    v = result.values.detach().float().cpu()
    lim = float(v.abs().max()) or 1.0
    if result.heads is None:
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(result.groups) + 2), max(2.5, 0.35 * len(result.layers) + 1.5)))
        fig = ax.figure
        im = ax.imshow(v, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(result.groups)), result.groups, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(result.layers)), result.layers)
        ax.set_ylabel("layer")
        ax.set_title(title or f"{result.activation}: {result.metric_name}", fontsize=9)
        fig.colorbar(im, ax=ax)
        return fig
    n = len(result.groups)
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n + 1.5, 2.8), squeeze=False)
    for i, g in enumerate(result.groups):
        a = axes[0, i]
        im = a.imshow(v[:, i, :], cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        a.set_title(g, fontsize=7)
        a.set_xlabel("head", fontsize=7)
        a.set_yticks(range(len(result.layers)), result.layers if i == 0 else [""] * len(result.layers))
    fig.suptitle(title or f"{result.activation}: {result.metric_name}", fontsize=9)
    fig.colorbar(im, ax=axes[0, -1])
    return fig
