"""Attention knockout (Map the Flow's methods): block attention edges between named token groups in
a window of layers and measure the answer probability at the last position.

- ``knockout_hooks(model, mask_or_pairs, layers, heads=None, layout=None)``: TransformerLens
  fwd_hooks on ``blocks.{l}.attn.hook_attn_scores`` (-inf before the softmax).
- ``TARGETS`` / ``register_target`` / ``Target``: the paper's four targets as data.
- ``sweep(model, inputs, target, window=9, method="fast")``: one record per (pair, centre layer);
  ``KnockoutSettings``: the same options as one validated object (``sweep(model, inputs,
  settings=...)``, ``run_dataset(model, samples, settings, out)``).
- ``ENGINES``: ``"fast"`` (incremental recomputation) and ``"full"`` (whole forward per condition).
- ``open_ended_sweep`` (the model's own answer traced under knockouts) and ``edge_attribution``
  (first-order estimates of every pair x layer from one backward pass).
- ``videolens.knockout.summary``: the numbers behind the figures and their CSV (figures:
  ``videolens.plots.knockout``).

Example::

    import videolens as vl
    model = vl.HookedVideoLLM.from_pretrained("ckpt")
    inputs = model.prepare(vl.VideoQA(video="clip.mp4", question="...", candidates=[...], answer="..."))
    records = vl.knockout.sweep(model, inputs, "question-and-options-to-last", window=9)
"""

from .attribution import edge_attribution
from .dataset import run_dataset
from .engine import ENGINES, CleanRun, Engine, FastEngine, FullEngine, get_engine, knockout_logits
from .hooks import KnockoutHook, as_pairs, hook_name, knockout_hooks
from .open_ended import OpenEndedSettings, open_ended_input, open_ended_sweep
from .settings import SAMPLE_MODES, KnockoutSettings, check_window
from .sweep import Baseline, baseline, layer_window, sweep
from .targets import TARGETS, Target, UnknownTargetError, get_target, register_target

# the documented API and its extension points; engines, masks and helpers stay importable from
# their modules (videolens.knockout.engine, .hooks, .sweep)
__all__ = [
    "sweep", "run_dataset", "KnockoutSettings", "knockout_hooks", "knockout_logits", "KnockoutHook", "hook_name",
    "Target", "TARGETS", "register_target", "get_target", "UnknownTargetError", "SAMPLE_MODES", "ENGINES",
    "layer_window", "check_window", "open_ended_input", "open_ended_sweep", "OpenEndedSettings", "edge_attribution",
]
