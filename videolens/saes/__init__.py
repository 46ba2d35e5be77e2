"""Sparse autoencoders on a VideoLLM's activations, with SAELens (issue 34).

- ``videolens.hooked.saes``: SAELens' SAEs spliced into ``HookedVideoLLM`` (``run_with_saes``,
  ``run_with_cache_with_saes``, ``add_sae``), with one-line refusals and ``positions=``.
- ``activations``: an activation source: clips run through the model, one hook point's activations at
  chosen positions, shuffled into training batches (resumable).
- ``training``: SAELens' trainer and SAE classes on that source (``train_sae``; ``videolens sae train``).
- ``features``: a feature on the video-token grid (per slot and patch), its top clips, its direct logit
  effect on the option letters, and its ablation as a knockout-style experiment (the figure:
  ``videolens.plots.saes.plot_feature``).
"""
