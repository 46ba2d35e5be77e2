"""Activation and path patching at the granularity a video needs: frames and text spans.

- ``patch_spans``: activation patching per (layer, position group[, head]) for the residual
  stream, attention output, MLP output and head outputs (``hook_z``); builds on
  ``transformer_lens.patching`` (index DataFrame, result tensors, patch setters).
- ``run_with_patches``: one run with any set of patches applied together.
- ``path_patch`` / ``path_patch_heads``: path patching sender -> receiver (Wang et al. 2022;
  Goldowsky-Dill et al. 2023).
- ``logit_diff``, ``option_prob``, ``normalised``: metrics on the option letters.
- Layout-preserving corruptions live in ``videolens.patching.corruptions``.
"""

from .activation import ACTIVATIONS, ActivationSpec, Patch, PatchResult, patch_spans, run_with_patches, source_cache, span_head_patch_setter, span_patch_setter
from .groups import GROUP_SETS, patch_groups
from .metrics import logit_diff, normalised, option_prob
from .path import Final, Head, Span, path_patch, path_patch_heads

__all__ = [
    "ACTIVATIONS",
    "ActivationSpec",
    "Patch",
    "PatchResult",
    "patch_groups",
    "patch_spans",
    "run_with_patches",
    "logit_diff",
    "option_prob",
    "normalised",
    "Head",
    "Span",
    "Final",
    "path_patch",
    "path_patch_heads",
]
