"""TransformerLens conventions a ``HookedVideoLLM`` keeps, where its loading differs from TL's.

- ``run_with_cache`` returns a ``VideoActivationCache``: TL's ``ActivationCache`` that warns
  (``UnfoldedNormWarning``) when direct logit attribution runs on a model whose norms are not folded.
  TL folds them by default; videolens loads the checkpoint's weights as they are (the paper's
  numbers), and then ``apply_ln_to_stack`` divides by the cached scale without the norm's weight, so
  ``logit_attrs`` of ``decompose_resid(apply_ln=True)`` do not sum to the logit difference.
- ``from_pretrained_no_processing`` works as in TL (it is videolens' default loading).
- ``torch.save(model)`` / ``torch.save(cache)`` pickle as a TL model does.
- ``to_tokens``, ``to_string``, ``get_token_position`` and ``input_to_embed`` take a
  ``VideoLLMInput`` (its tokens; its prompt text; its embeddings with the video spliced in), and
  ``test_prompt`` is TL's ``utils.test_prompt`` for a video prompt.

Example::

    model = vl.HookedVideoLLM.from_pretrained(path, fold_ln=True)   # exact DLA, as TL
    logits, cache = model.run_with_cache(inputs)
    cache.logit_attrs(cache.decompose_resid(apply_ln=True), tokens=a, incorrect_tokens=b)
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch

from .._tl_compat import ActivationCache, is_caching_hook
from ..prompting.inputs import VideoLLMInput

__all__ = ["VideoActivationCache", "UnfoldedNormWarning", "UnreachableHookWarning", "ConventionsMixin", "test_prompt",
           "warn_unreachable_vision_hooks"]


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

    def process_weights_(self, fold_ln: bool = True, center_writing_weights: bool = True, center_unembed: bool = True,
                         refactor_factored_attn_matrices: bool = False, fold_value_biases: bool = True) -> None:
        """TransformerLens' in-place weight processing (``load_and_process_state_dict``), with
        ``fold_value_biases`` too; a no-op when every option is False.

        Raises:
            ValueError: ``center_writing_weights`` with RMSNorm (centring is not invariant there;
                TransformerLens skips it for such models).
        """
        from .loading import process_weights

        process_weights(self, fold_ln=fold_ln, center_writing_weights=center_writing_weights,
                        center_unembed=center_unembed, fold_value_biases=fold_value_biases,
                        refactor_factored_attn_matrices=refactor_factored_attn_matrices)

    def to_tokens(self, input, *args, **kwargs):
        """As TL; a ``VideoLLMInput`` gives its tokens ``[batch, pos]`` (video positions hold the placeholder)."""
        if isinstance(input, VideoLLMInput):
            return input.tokens.to(self.cfg.device)
        return super().to_tokens(input, *args, **kwargs)

    def to_string(self, tokens):
        """As TL; a ``VideoLLMInput`` gives its prompt text (one placeholder for the video), a list for a batch."""
        if isinstance(tokens, VideoLLMInput):
            if tokens.row_meta is not None:
                return [m["prompt_text"] for m in tokens.row_meta]
            return tokens.prompt_text
        return super().to_string(tokens)

    def get_token_position(self, single_token, input, *args, **kwargs):
        """As TL; a ``VideoLLMInput`` is searched in its tokens (one row)."""
        if isinstance(input, VideoLLMInput):
            input = input.one_row("get_token_position").tokens
        return super().get_token_position(single_token, input, *args, **kwargs)

    def input_to_embed(self, input, *args, **kwargs):
        """As TL (``(residual, tokens, shortformer_pos_embed, attention_mask)``); for a ``VideoLLMInput``
        the residual holds the video embeddings at the video positions, as ``hook_embed`` does in a run."""
        if isinstance(input, VideoLLMInput):
            if input.attention_mask is not None:
                kwargs.setdefault("attention_mask", input.attention_mask.to(self.cfg.device))
            with self._video_in(input):
                return super().input_to_embed(input.tokens.to(self.cfg.device), *args, **kwargs)
        return super().input_to_embed(input, *args, **kwargs)

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


@torch.no_grad()
def test_prompt(inputs: VideoLLMInput, answer: str, model, top_k: int = 10, print_details: bool = True
                ) -> List[Tuple[str, int]]:
    """TransformerLens' ``utils.test_prompt`` for a video prompt: the rank, logit and probability of
    each token of ``answer`` after ``inputs`` (an option letter is the letter's token right after the
    prompt, ``inputs.option_token_ids``; other text is tokenized without special tokens), and the
    top ``top_k`` tokens at each answer position.

    Returns:
        ``[(answer token, rank), ...]`` (rank 0 = the model's top token), also printed.

    Raises:
        videolens.errors.BatchedInputError: a batch (pass ``batch[i]``).
    """
    import dataclasses

    inputs = inputs.one_row("test_prompt")
    if answer in inputs.option_token_ids:
        ids = [inputs.option_token_ids[answer]]
    else:
        ids = list(model.tokenizer(answer, add_special_tokens=False)["input_ids"])
    tokens = torch.cat([inputs.tokens.to(model.cfg.device), torch.tensor([ids], device=model.cfg.device)], dim=1)
    logits = model(dataclasses.replace(inputs, tokens=tokens))[0, inputs.seq_len - 1: -1].float()
    probs = logits.softmax(-1)
    ranks = []
    for i, t in enumerate(ids):
        order = probs[i].argsort(descending=True)
        rank = int((order == t).nonzero()[0, 0])
        text = model.tokenizer.decode([t])
        ranks.append((text, rank))
        if print_details:
            print(f"Rank: {rank: <8} Logit: {logits[i, t].item():5.2f} Prob: {probs[i, t].item():6.2%} Token: |{text}|")
            for k in range(min(top_k, probs.shape[-1])):
                j = int(order[k])
                print(f"Top {k}th token. Logit: {logits[i, j].item():5.2f} Prob: {probs[i, j].item():6.2%} "
                      f"Token: |{model.tokenizer.decode([j])}|")
    print(f"Ranks of the answer tokens: {ranks}")
    return ranks


class UnreachableHookWarning(UserWarning):
    """A hook on a vision-tower hook point that this run never calls (the input carries no pixels)."""


def warn_unreachable_vision_hooks(model) -> None:
    """Warn once per model when a hook sits on a vision-tower hook point (``vision.blocks.*``,
    ``vision.hook_pixel_values``, ...) while the input was prepared without ``keep_pixels=True``: the
    tower ran in ``prepare`` and does not run in this forward, so the hook is never called.
    ``run_with_cache``'s own caching hooks are not warned about (the cache simply lacks those names)."""
    if getattr(model, "_warned_unreachable", False):
        return
    inner = [n for n, hp in model.hook_dict.items() if n.startswith("vision.") and n != "vision.hook_video_embeds"
             and any(not is_caching_hook(fn) for fn in hp._forward_hooks.values())]
    if inner:
        model._warned_unreachable = True
        warnings.warn(f"hooks on {inner[:3]}{' ...' if len(inner) > 3 else ''} will not fire: the vision tower ran once "
                      "in prepare(); prepare the input with keep_pixels=True to run it (and its hooks) in the forward",
                      UnreachableHookWarning, stacklevel=4)
