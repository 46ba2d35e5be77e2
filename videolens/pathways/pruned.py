"""Pathway-pruned inference: run a pathway spec and skip the work it makes unnecessary (beyond the paper).

Under a pathway spec, from some layer on no position outside the video reads a video key any more
(the spec blocks video -> question and video -> last there, and queries before the video cannot
see it). From that layer (``prune_layer``) the video rows can leave the computation: nothing that
reaches the answer reads their keys, values or residual stream again. ``pruned_logits`` runs the
layers below it on the whole prompt with the spec's masks (the masked run), then drops the video
rows from the residual stream and runs the remaining layers on the other rows only, with

- each row's original RoPE position (the rotary tables are re-indexed to the kept positions, as
  M-RoPE writes per-input tables), and
- the spec's masks restricted to the kept rows and keys.

The answer equals the masked run's (tests/test_pruned.py, 1e-4 in fp32); the saving is the video
rows' share of every layer from the prune layer on. ``benchmarks/pruned.py`` measures it at the
paper's layout.

Example::

    plan = load_spec("llava-next-7b-video-ft").plan(model.cfg.n_layers)
    prune_layer(inputs.layout, plan)            # e.g. 16: video rows leave after layer 15
    logits = pruned_logits(model, inputs, plan)  # [1, 1, d_vocab], the last position
"""

from __future__ import annotations

import contextlib
import json
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from jaxtyping import Float

from ..hooked.deepstack import feeding
from .._tl_compat import final_logits, rotary_tables, scoped_hooks, set_rotary_tables
from ..prompting.inputs import VideoLLMInput
from ..hooked.attention import KnockoutHook, scores_hook_name
from ..prompting.layout import TokenLayout
from .hooks import PathwayMasker
from .spec import LayerPlan, PathwaySpec

__all__ = ["prune_layer", "pruned_logits", "pruned_forward", "kept_positions", "prunable", "PRUNABLE_SUFFIX"]

PRUNABLE_SUFFIX = "+prunable"


def prunable(spec) -> "PathwaySpec":
    """``spec`` with every edge from the video to the text after it (``video->after_video``) also
    blocked after the last layer where the spec keeps an edge from the video to text (its
    ``video_to_question``, ``video_to_last``, ... ranges), named ``<name>+prunable``.

    The paper's specs leave the text outside their groups (``USER:``, the instruction, the answer
    prefix) reading the video in every layer, so no video row can ever be dropped; this variant
    (a difference from the paper) lets ``pruned_logits`` drop the video rows after the video's last
    kept layer.
    """
    from .loading import load_spec

    base = load_spec(spec)
    if base.name.endswith(PRUNABLE_SUFFIX):
        return base
    reads = [t for t, pairs in base.edge_types.items() if t in base.kept
             and pairs and all(p.key == "video" and p.query != "video" for p in pairs)]
    last = max((b for t in reads for _, b in base.kept[t]), default=-1)
    raw = json.loads(json.dumps(base.raw))
    raw["name"] = base.name + PRUNABLE_SUFFIX
    if last < base.n_layers - 1:
        raw.setdefault("edge_types", {})["video_to_text"] = ["video->after_video"]
        raw.setdefault("always_blocked", {})["video_to_text"] = [[last + 1, base.n_layers - 1]]
    return load_spec(raw)


def kept_positions(layout: TokenLayout) -> torch.Tensor:
    """The positions that stay after pruning: every position but the video tokens, ascending."""
    keep = torch.ones(layout.seq_len, dtype=torch.bool)
    keep[layout.video_positions] = False
    return keep.nonzero().flatten()


def _masks(layout: TokenLayout, plan: LayerPlan) -> Dict[Tuple[str, ...], torch.Tensor]:
    """Each distinct set of blocked edge types of ``plan`` -> its ``bool [S, S]`` mask, built once."""
    masker = PathwayMasker(layout, plan)
    out: Dict[Tuple[str, ...], torch.Tensor] = {}
    for layer in range(plan.n_layers):
        key = plan.blocked_types(layer)
        if key and key not in out:
            out[key] = masker.mask(layer).clone()
    masker.release()
    return out


def prune_layer(layout: TokenLayout, plan: LayerPlan,
                masks: Optional[Dict[Tuple[str, ...], torch.Tensor]] = None) -> Optional[int]:
    """The first layer from which no kept position reads a video key in that layer or any later one
    (``plan``'s masks on ``layout``); None when the last layer still reads the video.

    Args:
        masks: ``plan``'s masks by blocked types, when already built.

    Raises:
        videolens.hooked.edges.EmptyRowError: a mask would empty some query's row.
    """
    masks = _masks(layout, plan) if masks is None else masks
    keep, video = kept_positions(layout), layout.video_positions
    causal = keep[:, None] >= video[None, :]  # [kept, video]: kept queries that can see each video key
    reads = {key: bool((causal & ~m[keep][:, video]).any()) for key, m in masks.items()}
    cut = plan.n_layers
    for layer in reversed(range(plan.n_layers)):
        key = plan.blocked_types(layer)
        if not key or reads[key]:
            break
        cut = layer
    return None if cut >= plan.n_layers else cut


@contextlib.contextmanager
def _reindexed_rotary(model, layers: List[int], positions: torch.Tensor) -> Iterator[None]:
    """Rows ``i`` of ``layers`` rotate as positions ``positions[i]`` (tables re-indexed), then restored."""
    if model.cfg.positional_embedding_type != "rotary":
        yield
        return
    saved = [rotary_tables(model.blocks[l].attn) for l in layers]
    try:
        for l, (sin, cos) in zip(layers, saved):
            idx = positions.to(sin.device)
            model.blocks[l].attn.rotary_sin, model.blocks[l].attn.rotary_cos = sin[idx], cos[idx]
        yield
    finally:
        for l, (sin, cos) in zip(layers, saved):
            set_rotary_tables(model.blocks[l].attn, sin, cos)


def pruned_logits(model, inputs: VideoLLMInput, plan: LayerPlan) -> Float[torch.Tensor, "1 1 d_vocab"]:
    """The last position's logits under ``plan``'s masks, with the video rows dropped from
    ``prune_layer`` on (module doc); the masked full run when the plan never lets them go.
    ``pruned_forward`` also returns the prune layer.

    Args:
        model: a ``HookedVideoLLM`` (one unpadded input).
        inputs: the prepared sample.
        plan: the spec resolved for the model (``spec.plan(model.cfg.n_layers)``).

    Returns:
        ``[1, 1, d_vocab]``: the last position only (the answer).

    Raises:
        ValueError: a batch or padded input, or a plan for another depth.
        videolens.hooked.edges.EmptyRowError: a mask would empty some query's row.
    """
    return pruned_forward(model, inputs, plan)[0]


@torch.no_grad()
def pruned_forward(model, inputs: VideoLLMInput, plan: LayerPlan
                   ) -> Tuple[Float[torch.Tensor, "1 1 d_vocab"], Optional[int]]:
    """``(pruned_logits, prune_layer)`` from one build of the plan's masks."""
    if inputs.one_row("pruned_logits").attention_mask is not None:
        raise ValueError("pruned_logits takes one unpadded input (use batch[i])")
    if plan.n_layers != model.cfg.n_layers:
        raise ValueError(f"plan is for {plan.n_layers} layers, the model has {model.cfg.n_layers}")
    layout, L = inputs.layout, model.cfg.n_layers
    masks = _masks(layout, plan)
    found = prune_layer(layout, plan, masks)
    cut = L if found is None else found
    fixed = {key: KnockoutHook(m) for key, m in masks.items()}
    below = [(scores_hook_name(l), fixed[plan.blocked_types(l)]) for l in range(cut) if plan.blocked_types(l)]
    with scoped_hooks(model, below):
        if cut == L:  # the video is read to the end: the masked run
            return model(inputs)[:, -1:], None
        resid = model(inputs, stop_at_layer=cut)  # cut 0: the embeddings
    keep = kept_positions(layout)
    resid = resid[:, keep.to(resid.device)]
    reduced = {key: KnockoutHook(m[keep][:, keep]) for key, m in masks.items()}
    above = [(scores_hook_name(l), reduced[plan.blocked_types(l)]) for l in range(cut, L) if plan.blocked_types(l)]
    layers = list(range(cut, L))
    with _reindexed_rotary(model, layers, keep), scoped_hooks(model, above), \
            feeding(model, inputs, rows=keep.to(resid.device)):
        for l in layers:
            resid = model.blocks[l](resid)
    return final_logits(model, resid[:, -1:]), found
