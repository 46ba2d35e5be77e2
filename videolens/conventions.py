"""TransformerLens conventions a ``HookedVideoLLM`` keeps, where its loading differs from TL's.

- ``run_with_cache`` returns a ``VideoActivationCache``: TL's ``ActivationCache`` that warns
  (``UnfoldedNormWarning``) when direct logit attribution runs on a model whose norms are not folded.
  TL folds them by default; videolens loads the checkpoint's weights as they are (the paper's
  numbers), and then ``apply_ln_to_stack`` divides by the cached scale without the norm's weight, so
  ``logit_attrs`` of ``decompose_resid(apply_ln=True)`` do not sum to the logit difference.
- ``from_pretrained_no_processing`` works as in TL (it is videolens' default loading).
- ``torch.save(model)`` / ``torch.save(cache)`` pickle as a TL model does.

Example::

    model = vl.HookedVideoLLM.from_pretrained(path, fold_ln=True)   # exact DLA, as TL
    logits, cache = model.run_with_cache(inputs)
    cache.logit_attrs(cache.decompose_resid(apply_ln=True), tokens=a, incorrect_tokens=b)
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from ._tl_compat import ActivationCache

__all__ = ["VideoActivationCache", "UnfoldedNormWarning", "ConventionsMixin"]


class UnfoldedNormWarning(UserWarning):
    """Direct logit attribution on a model whose norms are not folded into the next weights."""


class VideoActivationCache(ActivationCache):
    """``transformer_lens.ActivationCache`` with a warning where DLA would be off (module docstring)."""

    def _warn_unfolded(self, what: str) -> None:
        if self.model.cfg.normalization_type in ("RMS", "LN"):
            warnings.warn(
                f"{what} on a model whose {self.model.cfg.normalization_type} norms are not folded: the cached scale is "
                "applied without the norm's weight, so attributions do not sum to the logit difference; load with "
                "from_pretrained(..., fold_ln=True) as TransformerLens does (logits are unchanged)",
                UnfoldedNormWarning, stacklevel=3)

    def apply_ln_to_stack(self, residual_stack, layer=None, mlp_input=False, pos_slice=None, batch_slice=None,
                          has_batch_dim=True, recompute_ln=False):
        if not recompute_ln:
            self._warn_unfolded("apply_ln_to_stack")
        return super().apply_ln_to_stack(residual_stack, layer, mlp_input, pos_slice, batch_slice, has_batch_dim,
                                         recompute_ln)

    def logit_attrs(self, *args, **kwargs):
        self._warn_unfolded("logit_attrs")
        return super().logit_attrs(*args, **kwargs)


class ConventionsMixin:
    """Mixed into ``HookedVideoLLM`` ahead of ``HookedTransformer`` (module docstring)."""

    def __getstate__(self):
        """``torch.save(model)`` (and of a cache, which holds its model) as for a TL model: the output-
        capturing hooks transformers 5 puts on the vision tower at its first forward are local
        functions pickle cannot save; they are dropped here and transformers puts them back on the
        next forward."""
        for module in self.modules():
            for key, fn in list(module._forward_hooks.items()):
                if getattr(fn, "__name__", "") == "output_capturing_hook":
                    del module._forward_hooks[key]
            if getattr(module, "_output_capturing_hooks_installed", False):
                module._output_capturing_hooks_installed = False
        return super().__getstate__()

    def run_with_cache(self, *model_args, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs):
        """As ``HookedTransformer.run_with_cache``; the cache object is a ``VideoActivationCache``."""
        out, cache = super().run_with_cache(*model_args, return_cache_object=return_cache_object,
                                            remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            cache = VideoActivationCache(cache.cache_dict, self, has_batch_dim=not remove_batch_dim)
        return out, cache

    @classmethod
    def from_pretrained_no_processing(cls, model_name, fold_ln: bool = False, center_writing_weights: bool = False,
                                      center_unembed: bool = False, refactor_factored_attn_matrices: bool = False,
                                      fold_value_biases: bool = False, dtype: torch.dtype = torch.float32,
                                      default_prepend_bos: Optional[bool] = None,
                                      default_padding_side: Optional[str] = None, **from_pretrained_kwargs):
        """TransformerLens' name for loading without weight processing (videolens' default);
        ``default_prepend_bos`` / ``default_padding_side`` override the tokenizer's own."""
        model = cls.from_pretrained(model_name, fold_ln=fold_ln, center_writing_weights=center_writing_weights,
                                    center_unembed=center_unembed, fold_value_biases=fold_value_biases,
                                    refactor_factored_attn_matrices=refactor_factored_attn_matrices, dtype=dtype,
                                    **from_pretrained_kwargs)
        if default_prepend_bos is not None:
            model.cfg.default_prepend_bos = bool(default_prepend_bos)
        if default_padding_side is not None:
            model.tokenizer.padding_side = model.cfg.default_padding_side = default_padding_side
        return model
