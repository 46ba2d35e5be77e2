"""Activation patching over video frames and text spans.

Activation patching (Meng et al. 2022 "ROME"; Heimersheim & Nanda 2024 "How to use and interpret
activation patching") runs the model on one input (the *target*, e.g. corrupted) while one
activation, at one layer, over a group of positions (and optionally one head), is replaced by its
value in a cached run on another input (the *source*, e.g. clean), and scores the output with a
metric. Clean -> corrupted ("denoising") and corrupted -> clean ("noising") are the same call with
the two inputs swapped.

This builds on ``transformer_lens.patching``: the same index DataFrame (one row per patch,
``layer`` first), the same patch-setter signature ``setter(target_activation, index,
source_activation)`` and result tensors indexed like ``get_act_patch_resid_pre`` (``[layer, pos]``)
and ``get_act_patch_attn_head_out_by_pos`` (``[layer, pos, head]``), with ``pos`` replaced by a
*group* of positions (a frame, the question, an option, the last position; see
``videolens.patching.groups``). ``method="plain"`` runs ``transformer_lens.patching.
generic_activation_patch`` itself, one full forward pass per patch. ``method="batched"`` (default)
gives the same numbers with fewer FLOPs: the patches of one layer run as one batch that starts at
that layer from the target's cached residual stream (``start_at_layer``) and only unembeds the
last position.

Example::

    clean, corrupted = model.prepare(sample), reverse_frames(model.prepare(sample))
    _, clean_cache = model.run_with_cache(clean)
    res = patch_spans(model, corrupted, clean_cache, logit_diff(clean), activation="resid_pre")
    res.values            # [n_layers, n_groups]
    res.to_frame()        # one row per patch: layer, group, group_name, value
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
import torch
from jaxtyping import Float
from tqdm.auto import tqdm
from transformer_lens import ActivationCache
from transformer_lens import patching as tl_patching
from transformer_lens.utilities import get_act_name

from ..hooked.deepstack import feeding
from ..errors import require_finite
from ..prompting.inputs import VideoLLMInput
from ..registry import Registry
from ..layers import resolve_heads
from .groups import GroupSpec, patch_groups
from .metrics import Metric

__all__ = [
    "ACTIVATIONS",
    "ActivationSpec",
    "Patch",
    "PatchResult",
    "patch_spans",
    "run_with_patches",
    "span_patch_setter",
    "span_head_patch_setter",
    "source_cache",
]


@dataclass(frozen=True)
class ActivationSpec:
    """A patchable activation: its short TransformerLens name (``utilities.get_act_name``),
    whether it has a head axis (``[batch, pos, head, d_head]``), and whether it exists once per
    layer (``layered``; ``embed`` does not)."""

    short: str
    per_head: bool = False
    help: str = ""
    layered: bool = True

    def hook_name(self, layer: int) -> str:
        return get_act_name(self.short, layer) if self.layered else get_act_name(self.short)


ACTIVATIONS: Registry[ActivationSpec] = Registry("patching activation", {
    "embed": ActivationSpec("embed", layered=False, help="token + video embeddings (hook_embed)"),
    "resid_pre": ActivationSpec("resid_pre", help="residual stream entering the block"),
    "resid_mid": ActivationSpec("resid_mid", help="residual stream between attention and MLP"),
    "resid_post": ActivationSpec("resid_post", help="residual stream leaving the block"),
    "attn_out": ActivationSpec("attn_out", help="attention output (all heads)"),
    "mlp_out": ActivationSpec("mlp_out", help="MLP output"),
    "z": ActivationSpec("z", per_head=True, help="each head's output before W_O (hook_z)"),
})


def _spec(activation: str) -> ActivationSpec:
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise KeyError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}") from None


# ---- patch setters (transformer_lens.patching signature) ------------------------------------
def span_patch_setter(groups: Sequence[torch.Tensor]) -> Callable:
    """Setter for index ``[layer, group]``: ``act[:, positions] = source[:, positions]``."""

    def setter(target, index, source):
        _, g = index
        pos = groups[int(g)].to(target.device)
        target[:, pos, ...] = source[:, pos, ...].to(target.dtype)
        return target

    return setter


def span_head_patch_setter(groups: Sequence[torch.Tensor]) -> Callable:
    """Setter for index ``[layer, group, head]`` on ``[batch, pos, head, d_head]`` activations."""

    def setter(target, index, source):
        _, g, h = index
        pos = groups[int(g)].to(target.device)
        target[:, pos, int(h)] = source[:, pos, int(h)].to(target.dtype)
        return target

    return setter


# ---- results ------------------------------------------------------------------------------
@dataclass
class PatchResult:
    """Metric after each patch.

    Attributes:
        values: ``[n_layers, n_groups]``, or ``[n_layers, n_groups, n_heads]`` for per-head
            activations (as ``transformer_lens.patching``'s ``[layer, pos(, head)]``).
        index_df: one row per patch: ``layer``, ``group`` (index), ``head`` (per-head only),
            ``group_name``, ``value``.
        activation: the activation name (``ACTIVATIONS``); layers, groups, heads: the axes.
        metric_name: the metric's ``__name__``.
    """

    values: torch.Tensor
    index_df: pd.DataFrame
    activation: str
    layers: List[int]
    groups: List[str]
    heads: Optional[List[int]] = None
    metric_name: str = "metric"

    def to_frame(self) -> pd.DataFrame:
        return self.index_df.copy()

    def plot(self, ax=None, title: Optional[str] = None, cmap: str = "RdBu_r"):
        """Heatmap of the result (``videolens.plots.patching.plot_patch_result``); returns the figure."""
        from ..plots.patching import plot_patch_result

        return plot_patch_result(self, ax=ax, title=title, cmap=cmap)


# ---- source caches -----------------------------------------------------------------------------
def source_cache(model, source: Union[ActivationCache, VideoLLMInput], names: Sequence[str]) -> ActivationCache:
    """``source`` itself when it is a cache holding ``names``; otherwise run ``source`` and cache
    only those hooks.

    Raises:
        KeyError: a cache that lacks one of ``names``."""
    if isinstance(source, VideoLLMInput):
        wanted = set(names)
        with torch.no_grad():
            _, cache = model.run_with_cache(source, names_filter=lambda n: n in wanted)
        return cache
    missing = [n for n in names if n not in source.cache_dict]
    if missing:
        raise KeyError(f"the source cache lacks {missing[:5]}; run run_with_cache without names_filter")
    return source


# ---- plain multi-patch run -------------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    """One patch: ``activation`` at ``layer`` over ``positions`` (a ``TokenLayout.positions``
    group name, ``"all"``, or a list of positions), optionally one ``head`` (per-head
    activations only; ``None`` patches every head)."""

    activation: str
    layer: int
    positions: Union[str, Sequence[int], torch.Tensor]
    head: Optional[int] = None

    def resolve(self, layout) -> torch.Tensor:
        if isinstance(self.positions, str):
            if self.positions == "all":
                return torch.arange(layout.seq_len)
            return layout.positions(self.positions)
        return torch.as_tensor(list(self.positions) if not torch.is_tensor(self.positions) else self.positions, dtype=torch.long)


def run_with_patches(
    model,
    inputs: VideoLLMInput,
    source: Union[ActivationCache, VideoLLMInput],
    patches: Sequence[Patch],
    **forward_kwargs,
) -> Float[torch.Tensor, "1 pos d_vocab"]:
    """Run ``inputs`` with every patch in ``patches`` applied at once (values from ``source``).

    Args:
        model: the ``HookedVideoLLM``.
        inputs: the target run.
        source: the source run's ``ActivationCache`` (or its input, cached on the fly).
        patches: the patches; several may share a hook.
        forward_kwargs: passed to the forward pass (e.g. ``return_type``).

    Returns:
        The patched run's logits ``[1, pos, d_vocab]``.

    Raises:
        KeyError: unknown activation; ValueError: a head on a non-head activation or vice versa.
    """
    by_hook: Dict[str, List[Tuple[torch.Tensor, Optional[int]]]] = {}
    for p in patches:
        spec = _spec(p.activation)
        if p.head is not None and not spec.per_head:
            raise ValueError(f"{p.activation} has no head axis; do not pass head")
        by_hook.setdefault(spec.hook_name(p.layer), []).append((p.resolve(inputs.layout), p.head))
    cache = source_cache(model, source, list(by_hook))

    def make_hook(name):
        def hook(act, hook):
            act = act.clone()
            src = cache[name].to(act.device, act.dtype)
            for pos, head in by_hook[name]:
                pos = pos.to(act.device)
                if head is None:
                    act[:, pos] = src[:, pos]
                else:
                    act[:, pos, head] = src[:, pos, head]
            return act

        return hook

    with torch.no_grad():
        return model.run_with_hooks(inputs, fwd_hooks=[(n, make_hook(n)) for n in by_hook], **forward_kwargs)


# ---- span patching ----------------------------------------------------------------------------
def _index_df(layers: Sequence[int], n_groups: int, heads: Optional[Sequence[int]]) -> pd.DataFrame:
    import itertools

    if heads is None:
        rows = list(itertools.product(layers, range(n_groups)))
        return pd.DataFrame(rows, columns=["layer", "group"])
    rows = list(itertools.product(layers, range(n_groups), heads))
    return pd.DataFrame(rows, columns=["layer", "group", "head"])


def _last_logits_from(model, resid: torch.Tensor, start: int, hooks) -> torch.Tensor:
    """Run blocks ``start..`` on ``resid`` [B, S, d] with ``hooks``; logits of the last position [B, 1, V]."""
    from .._tl_compat import final_logits

    final = get_act_name("resid_post", model.cfg.n_layers - 1)
    grab: Dict[str, torch.Tensor] = {}

    def keep(act, hook):
        grab["x"] = act[:, -1:].clone()

    model.run_with_hooks(resid, start_at_layer=start, return_type=None, fwd_hooks=list(hooks) + [(final, keep)])
    return final_logits(model, grab["x"])


def patch_spans(
    model,
    inputs: VideoLLMInput,
    source: Union[ActivationCache, VideoLLMInput],
    metric: Metric,
    activation: str = "resid_pre",
    groups: GroupSpec = "default",
    layers: Optional[Sequence[int]] = None,
    heads: Optional[Sequence[int]] = None,
    method: str = "batched",
    batch_size: int = 16,
    progress: bool = False,
) -> PatchResult:
    """Patch ``activation`` from ``source`` into the ``inputs`` run, one (layer, group[, head]) at a time.

    Args:
        model: the ``HookedVideoLLM``.
        inputs: the run that is patched (the corrupted run for denoising).
        source: the run patched in: its ``ActivationCache`` (from ``run_with_cache``) or its
            ``VideoLLMInput`` (cached here). Must have the same layout as ``inputs``.
        metric: logits ``[batch, pos, d_vocab]`` -> ``[batch]`` (``videolens.patching.metrics``).
        activation: a key of ``ACTIVATIONS`` (``resid_pre``, ``attn_out``, ``mlp_out``, ``z``, ...).
        groups: the position groups (``patch_groups`` spec: ``"default"`` = each frame, the
            question, each option, the last position).
        layers: layers to patch (default all).
        heads: heads to patch, for per-head activations (default all).
        method: ``"batched"`` (start at the patched layer, several patches per forward pass) or
            ``"plain"`` (``transformer_lens.patching.generic_activation_patch``, one full pass each).
        batch_size: patches per forward pass (``"batched"`` only).
        progress: show a tqdm bar.

    Returns:
        ``PatchResult`` with ``values [n_layers, n_groups(, n_heads)]`` (metric units).

    Raises:
        KeyError: unknown activation or group; ValueError: bad layers/heads/method, or inputs and
        source token lengths differ.
    """
    inputs.one_row("patch_spans")
    spec = _spec(activation)
    if not spec.layered:
        raise ValueError(
            f"patch_spans sweeps layers; {activation!r} has none. Patch it with run_with_patches, or sweep "
            "resid_pre at layer 0 (the same tensor for rotary models)"
        )
    L = inputs.layout
    named = patch_groups(L, groups)
    names, group_pos = list(named), list(named.values())
    layers = list(range(model.cfg.n_layers)) if layers is None else [int(l) for l in layers]
    bad = [l for l in layers if not 0 <= l < model.cfg.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range for {model.cfg.n_layers} layers")
    if spec.per_head:
        heads = list(range(model.cfg.n_heads)) if heads is None else resolve_heads(heads, model.cfg.n_heads)
    elif heads is not None:
        raise ValueError(f"{activation} has no head axis; use activation='z' for heads")
    if isinstance(source, VideoLLMInput) and source.seq_len != inputs.seq_len:
        raise ValueError(f"source has {source.seq_len} positions, inputs {inputs.seq_len}: layouts must match")
    hook_names = [spec.hook_name(l) for l in layers]
    cache = source_cache(model, source, hook_names)
    df = _index_df(layers, len(names), heads if spec.per_head else None)
    setter = span_head_patch_setter(group_pos) if spec.per_head else span_patch_setter(group_pos)

    if method == "plain":
        scalar = lambda logits: metric(logits).reshape(())  # noqa: E731
        with torch.no_grad():
            flat = tl_patching.generic_activation_patch(
                model, inputs, cache, scalar, setter, spec.short, index_df=df
            )
        flat = flat.float().cpu()
    elif method == "batched":
        flat = _batched(model, inputs, cache, metric, spec, df, setter, batch_size, progress)
    else:
        raise ValueError(f"method must be 'batched' or 'plain', got {method!r}")

    shape = [len(layers), len(names)] + ([len(heads)] if spec.per_head else [])
    out = df.copy()
    out["group_name"] = [names[g] for g in df["group"]]
    out["value"] = require_finite(flat, "patch_spans").numpy()
    return PatchResult(flat.reshape(shape), out, activation, layers, names, heads if spec.per_head else None,
                       getattr(metric, "__name__", "metric"))


def _batched(model, inputs, cache, metric, spec, df, setter, batch_size, progress) -> torch.Tensor:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layers = sorted(set(int(l) for l in df["layer"]))
    resid_names = [get_act_name("resid_pre", l) for l in layers]
    with torch.no_grad():
        _, base = model.run_with_cache(inputs, names_filter=lambda n: n in set(resid_names))
    rows = df.values.tolist()
    out = torch.empty(len(rows))
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])
    chunks = []
    for l in layers:
        idx = [i for i in order if rows[i][0] == l]
        chunks += [idx[k : k + batch_size] for k in range(0, len(idx), batch_size)]
    for chunk in tqdm(chunks, disable=not progress, desc=f"patch {spec.short}"):
        layer = rows[chunk[0]][0]
        name = spec.hook_name(layer)
        src = cache[name]

        def hook(act, hook, chunk=chunk, src=src):
            act = act.clone()
            s = src.to(act.device)
            for b, i in enumerate(chunk):
                act[b : b + 1] = setter(act[b : b + 1], rows[i], s)
            return act

        resid = base[get_act_name("resid_pre", layer)].expand(len(chunk), -1, -1).contiguous()
        with torch.no_grad():
            with feeding(model, inputs):  # a DeepStack model adds its video features below its layer k
                logits = _last_logits_from(model, resid, layer, [(name, hook)])
            vals = metric(logits).float().cpu()
        out[torch.tensor(chunk)] = vals
    return out
