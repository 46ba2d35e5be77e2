"""Logit lens over the residual stream of a HookedVideoLLM (Map the Flow's methods, "Logit lens").

The *lens layer* index ``l`` runs over ``0 .. n_layers``: ``l < n_layers`` is the residual stream
entering block ``l`` (``blocks.{l}.hook_resid_pre``) and ``l == n_layers`` is the stream after the
last block (``blocks.{n_layers-1}.hook_resid_post``), the one the model unembeds. These are the
entries of TransformerLens' ``ActivationCache.accumulated_resid()`` (labels ``"{l}_pre"`` and
``"final_post"``), and the same labels are used here.

Projection modes (``LENS_MODES``, a registry; add one with ``register_lens_mode``):

- ``"final_norm"`` (default, the TransformerLens convention): ``unembed(ln_final(x))``, i.e. the
  model's own final norm with statistics recomputed for every residual vector, then ``W_U`` and
  ``b_U``. This is exactly what ``cache.accumulated_resid(apply_ln=True)`` (which calls
  ``apply_ln_to_stack(..., recompute_ln=True)`` for the unembed layer, i.e. ``model.ln_final``) followed
  by ``model.unembed`` gives, and at ``l == n_layers`` it is the model's own logits. Note that
  ``apply_ln_to_stack`` *without* ``recompute_ln`` (its default for ``layer < n_layers``) divides
  every layer by one cached scale and, for RMS norm, leaves out the norm weight: that is a
  direct-logit-attribution tool, not a logit lens.
- ``"raw_embed"``: the paper's released code: the raw residual (no norm) times the transpose of the
  *input* embedding matrix, ``x @ W_E.T``, at every lens layer including the last. Probabilities are
  the softmax of these scores over the vocabulary. Offered to reproduce the paper's figures.

Method notes (the paper's section, the official code's lines): docs/methods.md#logit-lens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Float, Int
from transformer_lens import ActivationCache
from transformer_lens.utilities import get_act_name

from ..errors import NonFiniteError
from ..prompting.inputs import VideoLLMInput
from ..layers import LayerSpec, resolve_layers
from ..prompting.layout import PositionSpec, TokenLayout, resolve_positions  # noqa: F401 (re-exported: their home is prompting)
from ..registry import Registry

__all__ = [
    "LensResult",
    "LensMode",
    "LENS_MODES",
    "register_lens_mode",
    "logit_lens",
    "lens_logits",
    "resolve_lens_layers",
    "resolve_positions",
    "resid_label",
    "resid_hook_name",
    "capture_resid",
]



# ---- projection modes ------------------------------------------------------------------------
@dataclass(frozen=True)
class LensMode:
    """A way to turn residual vectors ``[n, d_model]`` into vocabulary scores ``[n, d_vocab]``."""

    name: str
    project: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    doc: str


def _final_norm(model, x: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_vocab"]:
    return model.unembed(model.ln_final(x[None]))[0]


def _raw_embed(model, x: Float[torch.Tensor, "n d_model"]) -> Float[torch.Tensor, "n d_vocab"]:
    return x @ model.W_E.T


LENS_MODES: Registry[LensMode] = Registry("lens mode")


def register_lens_mode(mode: LensMode, overwrite: bool = False) -> None:
    """Add a projection mode to ``LENS_MODES``.

    Raises:
        ValueError: the name is taken (unless ``overwrite``).
    """
    LENS_MODES.register(mode.name, mode, overwrite)


register_lens_mode(LensMode("final_norm", _final_norm, "model.ln_final then W_U (+ b_U): TransformerLens convention"))
register_lens_mode(LensMode("raw_embed", _raw_embed, "raw residual times W_E^T, no norm: the paper's released code"))


def _mode(mode: str) -> LensMode:
    try:
        return LENS_MODES[mode]
    except KeyError:
        raise ValueError(f"unknown lens mode {mode!r}; choose from {sorted(LENS_MODES)}") from None


def lens_logits(model, resid: Float[torch.Tensor, "n d_model"], mode: str = "final_norm") -> Float[torch.Tensor, "n d_vocab"]:
    """Vocabulary scores of residual vectors under a lens mode (model dtype, no softmax).

    Args:
        model: the HookedVideoLLM (any HookedTransformer works).
        resid: residual vectors ``[n, d_model]``.
        mode: a key of ``LENS_MODES`` (``"final_norm"`` or ``"raw_embed"``).

    Raises:
        ValueError: unknown mode.
    """
    return _mode(mode).project(model, resid)


# ---- layer and position selections -------------------------------------------------------------
def resid_label(layer: int, n_layers: int) -> str:
    """TransformerLens ``accumulated_resid`` label of a lens layer: ``"{l}_pre"`` or ``"final_post"``."""
    return "final_post" if layer == n_layers else f"{layer}_pre"


def resid_hook_name(layer: int, n_layers: int) -> str:
    """Hook carrying the residual stream of lens layer ``layer`` (see module docstring)."""
    if layer == n_layers:
        return get_act_name("resid_post", n_layers - 1)
    return get_act_name("resid_pre", layer)


def resolve_lens_layers(layers: LayerSpec, n_layers: int) -> List[int]:
    """Lens layers as a sorted list of distinct ints in ``[0, n_layers]`` (``videolens.layers``'
    rule over the ``n_layers + 1`` lens layers: ``-1`` and ``final`` are ``n_layers``, after the
    last block; ``None`` is every one).

    Raises:
        ValueError: an index outside ``[-(n_layers+1), n_layers]``, an unreadable string, or an
            empty selection.
    """
    return resolve_layers(layers, n_layers + 1)


# ---- the result --------------------------------------------------------------------------------
@dataclass
class LensResult:
    """Top-k tokens and probabilities for every chosen (lens layer, position).

    Attributes:
        layers: lens layers, sorted (``n_layers`` = after the last block).
        positions: positions ``[P]``, in the order asked.
        tokens: token ids ``[n_sel_layers, P, k]``, best first.
        probs: probabilities ``[n_sel_layers, P, k]`` (fp32; softmax over the full vocabulary of
            the lens scores).
        n_layers: the model's number of blocks.
        mode: the projection mode used.
    """

    layers: List[int]
    positions: Int[torch.Tensor, "P"]
    tokens: Int[torch.Tensor, "n_sel P k"]
    probs: Float[torch.Tensor, "n_sel P k"]
    n_layers: int
    mode: str = "final_norm"

    @property
    def k(self) -> int:
        return int(self.tokens.shape[-1])

    @property
    def labels(self) -> List[str]:
        """``accumulated_resid`` labels of the rows: ``"0_pre"``, ..., ``"final_post"``."""
        return [resid_label(l, self.n_layers) for l in self.layers]

    @property
    def top1(self) -> Int[torch.Tensor, "n_sel P"]:
        return self.tokens[..., 0]

    def row(self, layer: int) -> int:
        """Row of ``tokens`` / ``probs`` holding lens layer ``layer`` (``-1`` = final).

        Raises:
            KeyError: the layer was not selected."""
        l = layer % (self.n_layers + 1)
        if l not in self.layers:
            raise KeyError(f"lens layer {layer} was not selected (have {self.layers})")
        return self.layers.index(l)

    def col(self, position: int) -> int:
        """Column of ``tokens`` / ``probs`` holding ``position`` (its first occurrence).

        Raises:
            KeyError: the position was not selected."""
        hits = (self.positions == position).nonzero()
        if len(hits) == 0:
            raise KeyError(f"position {position} was not selected")
        return int(hits[0])

    def at(self, layer: int, position: int) -> Tuple[List[int], List[float]]:
        """(token ids, probabilities) at one lens layer and position, best first."""
        i, j = self.row(layer), self.col(position)
        return self.tokens[i, j].tolist(), self.probs[i, j].tolist()

    def decode(self, tokenizer) -> List[List[List[str]]]:
        """Token strings ``[n_sel][P][k]``."""
        flat = tokenizer.convert_ids_to_tokens(self.tokens.reshape(-1).tolist())
        n, P, k = self.tokens.shape
        return [[flat[(i * P + j) * k : (i * P + j + 1) * k] for j in range(P)] for i in range(n)]


# ---- capture -----------------------------------------------------------------------------------
def capture_resid(
    model,
    inputs: VideoLLMInput,
    layers: Sequence[int],
    fn: Callable[[int, Float[torch.Tensor, "S d_model"]], None],
) -> None:
    """Run one forward pass and call ``fn(lens_layer, resid[S, d_model])`` for each chosen lens layer.

    Nothing is cached: the callback sees each layer's residual stream while the pass runs, so
    memory stays at one forward pass plus what ``fn`` keeps. The pass stops after the last
    block needed (``stop_at_layer``).
    """
    L = model.cfg.n_layers
    hooks = []
    for l in layers:
        hooks.append((resid_hook_name(l, L), lambda act, hook, l=l: fn(l, act[0])))
    stop = None if max(layers) == L else max(layers) + 1
    with torch.no_grad():
        model.run_with_hooks(inputs, fwd_hooks=hooks, stop_at_layer=stop)


def _resid_from_cache(cache, layer: int, n_layers: int, batch_index: int) -> torch.Tensor:
    name = resid_hook_name(layer, n_layers)
    try:
        act = cache[name]
    except KeyError:
        raise ValueError(
            f"the cache lacks {name!r}; cache the residual stream (names_filter keeping hook_resid_pre and "
            f"the last hook_resid_post) or pass the VideoLLMInput"
        ) from None
    if act.ndim == 3:
        act = act[batch_index]
    return act


# ---- the lens ----------------------------------------------------------------------------------
def _topk_rows(model, x: torch.Tensor, mode: str, k: int, chunk_size: Optional[int], label: str = ""):
    """Top-k of the lens on rows ``x [P, d]`` in chunks of ``chunk_size`` rows.

    Raises:
        NonFiniteError: NaN or infinite lens scores (``label`` names the lens layer)."""
    n = x.shape[0]
    step = n if not chunk_size else int(chunk_size)
    toks, probs, finite = [], [], []
    for s in range(0, n, step):
        logits = lens_logits(model, x[s : s + step], mode).float()  # [c, V] fp32
        finite.append(torch.isfinite(logits).all())
        top, idx = logits.topk(k, dim=-1)
        probs.append((top - logits.logsumexp(-1, keepdim=True)).exp())
        toks.append(idx)
        del logits
    if not bool(torch.stack(finite).all()):  # one device sync per lens layer
        raise NonFiniteError(f"the logit lens at {label or 'a lens layer'} holds NaN/inf scores "
                             f"(the model's residual stream is not finite there)")
    return torch.cat(toks).cpu(), torch.cat(probs).cpu()


def logit_lens(
    model,
    inputs_or_cache: Union[VideoLLMInput, ActivationCache, Dict[str, torch.Tensor]],
    positions: PositionSpec = "video",
    layers: LayerSpec = None,
    k: int = 5,
    mode: str = "final_norm",
    chunk_size: Optional[int] = 128,
    layout: Optional[TokenLayout] = None,
    batch_index: int = 0,
) -> LensResult:
    """Top-k tokens and probabilities of the residual stream at chosen lens layers and positions.

    Paper: Kim et al. 2026, Finding 2 (Map the Flow's methods, "Logit lens"). For lens layer ``l`` and
    position ``p`` with residual ``x = resid[l, p]`` the scores are ``unembed(ln_final(x))`` (mode
    ``"final_norm"``) or ``x @ W_E.T`` (mode ``"raw_embed"``, the released code's variant); the
    probabilities are their softmax over the full vocabulary (fp32), of which the top ``k`` are kept.

    Example::

        lens = vl.lens.logit_lens(model, inputs, positions="video", k=5)
        lens.tokens.shape                 # [n_layers + 1, T*h*w, 5]
        lens.at(-1, inputs.layout.last)   # same top-5 as the model's own logits

    Memory: the scores are computed for ``chunk_size`` positions of one layer at a time and only
    their top ``k`` are kept, so the peak extra memory is about
    ``chunk_size * d_vocab * (b + 8)`` bytes (``b`` bytes per element of the model dtype: the
    scores, their fp32 copy and the log-sum-exp temporary), e.g. 128 x 32064 x 12 B = 49 MB for a
    fp32 7B model (41 MB in bf16), plus the output ``2 * n_sel * P * k`` values
    (``benchmarks/lens_memory.py`` measured 58 MB peak for chunks of 128 against 862 MB for
    materialising 3 layers x 1152 positions x 32064 tokens). With a
    ``VideoLLMInput`` nothing is cached (each layer is read by a hook during one forward pass,
    which stops after the last block needed); ``chunk_size=None`` projects all positions of a layer
    at once (``P * d_vocab * (b + 8)`` bytes).

    Args:
        model: a HookedVideoLLM (or any HookedTransformer).
        inputs_or_cache: a ``VideoLLMInput`` (one forward pass is run), or an ``ActivationCache``
            / dict holding ``blocks.{l}.hook_resid_pre`` for the chosen layers (and
            ``blocks.{n_layers-1}.hook_resid_post`` for the final one), ``[batch, S, d_model]``
            or ``[S, d_model]``.
        positions: see ``resolve_positions``; default ``"video"`` (all video tokens).
        layers: see ``resolve_lens_layers``; default all ``n_layers + 1`` lens layers.
        k: number of top tokens kept (1 <= k <= d_vocab).
        mode: ``"final_norm"`` (default) or ``"raw_embed"`` (see ``LENS_MODES``).
        chunk_size: positions projected at once (``None``: all).
        layout: token layout for group-name positions when a cache is given.
        batch_index: batch element of a cache with a batch dimension.

    Returns:
        ``LensResult`` with ``tokens`` and ``probs`` ``[n_sel_layers, P, k]``.

    Raises:
        ValueError: unknown mode, bad ``k`` / ``chunk_size`` / layers / positions, or a cache
            missing a needed residual hook (the message names it).
        KeyError: an unknown position group name.
        videolens.errors.BatchedInputError: a batched ``VideoLLMInput`` (pass ``batch[i]``; a
            cache with a batch dimension takes ``batch_index``).
        videolens.errors.NonFiniteError: NaN or infinite lens scores.
    """
    _mode(mode)
    if not isinstance(inputs_or_cache, (VideoLLMInput, ActivationCache, dict)):
        raise TypeError(f"logit_lens takes a VideoLLMInput (model.prepare(sample)) or an ActivationCache, got "
                        f"{type(inputs_or_cache).__name__}")
    L = model.cfg.n_layers
    if not 1 <= int(k) <= model.cfg.d_vocab:
        raise ValueError(f"k must be in [1, {model.cfg.d_vocab}], got {k}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    sel_layers = resolve_lens_layers(layers, L)
    toks = [None] * len(sel_layers)
    probs = [None] * len(sel_layers)

    if isinstance(inputs_or_cache, VideoLLMInput):
        layout = inputs_or_cache.layout
        pos = resolve_positions(positions, inputs_or_cache.seq_len, layout)

        def on_layer(l: int, resid: torch.Tensor) -> None:
            i = sel_layers.index(l)
            toks[i], probs[i] = _topk_rows(model, resid[pos.to(resid.device)], mode, k, chunk_size, resid_label(l, L))

        inputs_or_cache.one_row("logit_lens")
        capture_resid(model, inputs_or_cache, sel_layers, on_layer)
    else:
        cache = inputs_or_cache
        first = _resid_from_cache(cache, sel_layers[0], L, batch_index)
        pos = resolve_positions(positions, first.shape[0], layout)
        with torch.no_grad():
            for i, l in enumerate(sel_layers):
                resid = _resid_from_cache(cache, l, L, batch_index)
                toks[i], probs[i] = _topk_rows(model, resid[pos.to(resid.device)], mode, k, chunk_size,
                                               resid_label(l, L))
    return LensResult(sel_layers, pos.cpu(), torch.stack(toks), torch.stack(probs), L, mode)
