"""Effective pathways (the paper's Finding 4; Map the Flow's methods): keep only the attention edges
a pathway spec names, block everything else it lists, count the edges kept, compare with blocking
the same number of edges at random, and measure accuracy.

Modules, one idea each:
- ``spec``: specs as data, the relative-depth rule, and the per-layer ``LayerPlan``;
  ``loading``: reading and validating spec files (shipped JSON in ``videolens/pathway_specs``, or
  user files).
- ``masks``: the random-control draw (spec masks come from ``videolens.hooked.edges.blocked_mask``).
- ``counting``: edge counts as the paper counts them (``S(S+1)/2`` per layer, kept, fraction).
- ``hooks``: ``hook_attn_scores`` hooks that build each layer's mask when the layer runs.
- ``evaluate``: accuracy full / pathways / random per task and the summary table (the figure:
  ``videolens.plots.pathways``).

Example::

    import videolens as vl
    from videolens import pathways as pw

    model = vl.HookedVideoLLM.from_pretrained("ckpt")
    inputs = model.prepare(sample)
    spec = pw.load_spec("llava-next-7b-video-ft")          # or a path to your own JSON
    plan = spec.plan(model.cfg.n_layers)                    # mapped by relative depth
    print(pw.count_edges(inputs.layout, plan).summary())    # "42.7% (11.0M/25.7M)"
    logits = model.run_with_hooks(inputs, fwd_hooks=pw.PathwayMasker(inputs.layout, plan).fwd_hooks())
    records = pw.evaluate_sample(model, inputs, spec)       # full / pathways / random

Method notes (the paper's section, the official code's lines): docs/methods.md#effective-pathways.
"""

from .counting import EdgeCounts, count_blocked, count_edges, format_count, full_edges, synthetic_layout
from .evaluate import (
    CONDITIONS,
    RANDOM_MATCH,
    evaluate,
    evaluate_sample,
    random_block_counts,
    summarize,
    summary_markdown,
    write_summary,
)
from .hooks import LayerMaskHook, PathwayMasker, RandomMasker
from .masks import lower_triangle_size, random_blocked_, seed_for
from .loading import list_specs, load_spec, register_edge_type, spec_from_dict
from .spec import EDGE_TYPES, LayerPlan, PathwaySpec, SpecError, map_layers

# the documented API and its extension points; the random draw, counters and hooks stay importable
# from their modules (videolens.pathways.masks, .counting, .hooks)
__all__ = [
    "load_spec", "list_specs", "spec_from_dict", "register_edge_type", "EDGE_TYPES", "PathwaySpec", "LayerPlan",
    "SpecError", "count_edges", "EdgeCounts", "synthetic_layout", "PathwayMasker", "RandomMasker", "evaluate",
    "evaluate_sample", "summarize", "summary_markdown", "write_summary", "RANDOM_MATCH",
    "random_block_counts",
]
