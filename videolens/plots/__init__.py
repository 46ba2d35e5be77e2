"""The plotting layer: figures of what the analyses return (analyses themselves return data).

- ``plots.knockout``: knockout sweep curves (``plot_target``, ``plot_models``);
- ``plots.lens``: logit-lens keyword frequencies, word maps, answer probability by layer;
- ``plots.pathways``: the effective-pathway summary figure;
- ``plots.patching``: activation-patching heatmaps.

Attention views (circuitsvis pages, overlays on frames) are rendered by ``videolens.viz``.
"""
