"""An SAE feature read on a VideoLLM: where it fires on the frames, which clips fire it most, what it
writes to the option letters, and what removing it does to the answer.

- ``feature_map``: a feature's activation at every video token of a clip, ``[T', h, w]`` (temporal
  slot, row, column of the video-token grid), with the clip's sampled frames, for
  ``videolens.plots.saes.plot_feature`` (overlay on the frames and a per-slot line).
- ``top_activating``: the clips and video positions where a feature is strongest across a dataset.
- ``direct_logit_effect``: the feature's decoder direction through the final norm's gain and the
  unembedding, at the option letters (the direct path only; the final norm's per-input scale is left
  out, as in direct logit attribution on an unfolded model).
- ``ablate_feature``: the feature set to 0 at chosen positions through the SAE splice with its error
  term, so the only change to the forward is that feature's decoder contribution; the answer's
  probability before and after, and its relative change in percent (the paper's knockout metric,
  ``videolens.stats.relative_change``).

Every read runs the SAE with ``use_error_term=True``: the model's own forward, the features read on
the side.

Example::

    fmap = feature_map(model, sae, inputs, feature=17)
    videolens.plots.saes.plot_feature(fmap, "feature17.png")
    ablate_feature(model, sae, inputs, 17, positions="video")   # {"rel_change": -42.0, ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float, UInt8

from ..sources.data import VideoQA
from ..prompting.layout import PositionSpec
from .activations import stop_after

__all__ = ["FeatureMap", "feature_acts", "feature_map", "top_activating", "direct_logit_effect", "ablate_feature",
           "TopHit"]


def _acts_hook(sae) -> str:
    return f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"


@torch.no_grad()
def feature_acts(model, sae, inputs) -> Float[torch.Tensor, "pos d_sae"]:
    """Every feature's activation at every position of one input (the SAE spliced with its error term,
    the forward stopped after the hook's block).

    Raises:
        videolens.hooked.saes.SAEMismatchError: the SAE does not fit the model.
        ValueError: a batched input.
    """
    if int(inputs.tokens.shape[0]) != 1:
        raise ValueError("give one sample (batch[i]), not a batch")
    _, cache = model.run_with_cache_with_saes(inputs, saes=[sae], use_error_term=True, names_filter=_acts_hook(sae),
                                              stop_at_layer=stop_after(model, sae.cfg.metadata.hook_name))
    return cache[_acts_hook(sae)][0].float()


@dataclass
class FeatureMap:
    """One feature on one clip.

    Attributes:
        feature: the feature index.
        acts: its activation per video token, ``[T', h, w]`` (temporal slot, row, column).
        frames: the clip's sampled frames ``[T, H, W, 3]`` (uint8), or None.
        slot_frames: the sampled frames each temporal slot holds.
        sample_id: the clip.
    """

    feature: int
    acts: Float[torch.Tensor, "slots h w"]
    frames: Optional[UInt8[np.ndarray, "T H W 3"]]
    slot_frames: Optional[Tuple[Tuple[int, ...], ...]]
    sample_id: str = ""

    @property
    def per_slot(self) -> Float[torch.Tensor, "slots"]:
        """The strongest activation in each temporal slot."""
        return self.acts.flatten(1).max(-1).values


def feature_map(model, sae, inputs, feature: int, sample_id: str = "") -> FeatureMap:
    """``feature``'s activation at each video token of ``inputs`` on the video-token grid (module doc).

    Raises:
        IndexError: ``feature`` is not one of the SAE's.
    """
    if not 0 <= int(feature) < int(sae.cfg.d_sae):
        raise IndexError(f"feature {feature} is not one of the SAE's {sae.cfg.d_sae}")
    acts = feature_acts(model, sae, inputs)[:, int(feature)]
    layout = inputs.layout
    grid = acts[layout.video_positions.to(acts.device)].reshape(*layout.video_grid).cpu()
    frames = inputs.video.frames if inputs.video is not None else None
    sample_id = sample_id or (inputs.sample.sample_id if inputs.sample is not None else "")
    return FeatureMap(int(feature), grid, frames, layout.slot_frames, sample_id)


@dataclass
class TopHit:
    """A clip where a feature fires: its id, the strongest activation, and where (slot, row, column)."""

    sample_id: str
    value: float
    slot: int
    row: int
    col: int
    task: Optional[str] = None


def top_activating(model, sae, samples: Sequence[VideoQA], feature: int, k: int = 10,
                   num_frames: Optional[int] = None, progress: bool = False) -> List[TopHit]:
    """The ``k`` clips of ``samples`` where ``feature`` is strongest at a video token, strongest first
    (a clip that cannot be read is left out).

    Raises:
        IndexError: ``feature`` is not one of the SAE's.
    """
    from tqdm.auto import tqdm

    from ..running.samples import prepare_or_skip

    hits = []
    for s in tqdm(samples, desc=f"feature {feature}", disable=not progress):
        inputs, _, _ = prepare_or_skip(model, s, num_frames)
        if inputs is None:
            continue
        fm = feature_map(model, sae, inputs, feature, s.sample_id)
        flat = int(fm.acts.flatten().argmax())
        slot, rest = divmod(flat, fm.acts.shape[1] * fm.acts.shape[2])
        row, col = divmod(rest, fm.acts.shape[2])
        hits.append(TopHit(s.sample_id, float(fm.acts.flatten()[flat]), slot, row, col, s.task))
    return sorted(hits, key=lambda h: -h.value)[:k]


@torch.no_grad()
def direct_logit_effect(model, sae, feature: int, inputs) -> Dict[str, float]:
    """What ``feature``'s decoder direction adds to each option letter's logit, directly: ``W_dec[f]``
    times the final norm's gain, times ``W_U`` at the letters' token ids (module doc).

    Raises:
        ValueError: the SAE's hook is not ``d_model`` wide (no direct path to the logits).
    """
    direction = sae.W_dec[int(feature)].to(model.W_U.dtype)
    if direction.shape[-1] != model.cfg.d_model:
        raise ValueError(f"the SAE's hook {sae.cfg.metadata.hook_name} is not a residual-stream hook "
                         f"(width {direction.shape[-1]}, d_model {model.cfg.d_model}): no direct path to the logits")
    gain = getattr(model.ln_final, "w", None)
    if gain is not None:
        direction = direction * gain
    logits = direction @ model.W_U
    return {L: float(logits[t]) for L, t in inputs.option_token_ids.items()}


def ablate_feature(model, sae, inputs, feature: Union[int, Sequence[int]], positions: PositionSpec = "video"
                   ) -> Dict[str, Any]:
    """Set ``feature`` (or several) to 0 at ``positions`` through the SAE splice with its error term
    and compare the option probabilities with the clean run (module doc).

    Returns:
        ``{"feature", "positions", "letter" (the clean answer), "p_clean", "p_ablated", "rel_change"
        (percent), "true_letter", "rel_change_true", "probs_clean", "probs_ablated"}``.

    Raises:
        IndexError: a feature that is not one of the SAE's.
        videolens.hooked.saes.SAEMismatchError: the SAE does not fit the model.
    """
    from ..prompting.layout import resolve_positions
    from ..stats import relative_change

    feats = [int(feature)] if isinstance(feature, int) else [int(f) for f in feature]
    bad = [f for f in feats if not 0 <= f < int(sae.cfg.d_sae)]
    if bad:
        raise IndexError(f"feature(s) {bad} are not among the SAE's {sae.cfg.d_sae}")
    pos = resolve_positions(positions, inputs.seq_len, inputs.layout)

    def zero(acts, hook):
        acts[:, pos.to(acts.device)[:, None], torch.tensor(feats, device=acts.device)[None, :]] = 0
        return acts

    with torch.no_grad():
        clean = model.option_probs(inputs, model.run_with_saes(inputs, saes=[sae], use_error_term=True))
        logits = model.run_with_hooks_with_saes(inputs, saes=[sae], use_error_term=True,
                                                fwd_hooks=[(_acts_hook(sae), zero)])
        ablated = model.option_probs(inputs, logits)
    letter = max(clean, key=clean.get)
    truth = inputs.layout.true_letter
    return {"feature": feats[0] if isinstance(feature, int) else feats, "positions": positions, "letter": letter,
            "p_clean": clean[letter], "p_ablated": ablated[letter], "rel_change": relative_change(ablated[letter], clean[letter]),
            "true_letter": truth, "rel_change_true": relative_change(ablated[truth], clean[truth]) if truth else None,
            "probs_clean": clean, "probs_ablated": ablated}
