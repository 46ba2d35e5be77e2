"""Knockout engines: the answer logits at the last position with some attention edges blocked.

Two engines give the same numbers (tests/test_knockout_engine.py, 1e-5 in fp32):

- ``"full"``: a plain forward of the whole prompt with ``knockout_hooks`` on the window's layers.
- ``"fast"``: recomputes only what a knockout can change. Blocking edges in layers ``a..b``
  leaves every layer below ``a`` untouched, and every position before the first blocked query
  ``q0`` untouched in every layer (attention is causal). So it starts from the clean run's
  ``blocks.{a}.hook_resid_pre`` rows ``q0:`` (``forward(start_at_layer=a)``), lets those rows
  attend to the clean keys and values of positions ``< q0`` through a frozen TransformerLens
  key-value cache (filled with the clean ``hook_k`` / ``hook_v``, pre-rotary, as the cache
  stores them; queries are rotated from offset ``q0``), and unembeds only the last position.

Both reuse the sample's video embeddings, so the vision front end runs once per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
import weakref
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from transformer_lens.utilities import get_act_name

from .._tl_compat import cache_keys, final_logits, frozen_kv_cache, scoped_hooks
from ..hooked.deepstack import feeding
from ..layers import resolve_layers
from ..prompting.inputs import VideoLLMInput
from ..registry import Registry
from .hooks import KnockoutHook, hook_name

__all__ = ["CleanRun", "Engine", "FullEngine", "FastEngine", "ENGINES", "get_engine", "knockout_logits"]


@dataclass
class CleanRun:
    """What a sweep keeps from the sample's clean (no knockout) forward.

    Attributes:
        inputs: the sample's input.
        logits: last-position logits ``[d_vocab]`` of the clean run.
        resid_pre: per layer, ``blocks.{l}.hook_resid_pre`` ``[1, S, d_model]`` (fast engine only).
        keys / values: per layer, ``blocks.{l}.attn.hook_k`` / ``hook_v``
            ``[1, S, n_kv_heads, d_head]``, pre-rotary (fast engine only).
    """

    inputs: VideoLLMInput
    logits: Float[torch.Tensor, "d_vocab"]
    resid_pre: Optional[List[torch.Tensor]] = None
    keys: Optional[List[torch.Tensor]] = None
    values: Optional[List[torch.Tensor]] = None
    model: Optional[Any] = None  # weakref.ref to the model it was computed with
    engine: Optional[str] = None

    def check(self, model, inputs: VideoLLMInput, engine: str) -> None:
        """Refuse a clean run made from another model, another input or by another engine.

        Raises:
            ValueError: naming which of the three differs.
        """
        if self.model is not None and self.model() is not model:
            raise ValueError("clean= was computed with another model; let sweep compute it, or pass "
                             "get_engine(method).clean(model, inputs) of this model")
        if self.engine is not None and self.engine != engine:
            raise ValueError(f"clean= was made by the {self.engine!r} engine, this sweep runs {engine!r}")
        if self.inputs is not inputs and not _same_input(self.inputs, inputs):
            raise ValueError("clean= was computed from another input (other tokens or video); a CleanRun serves "
                             "only the input it was made from")


def _same_input(a: VideoLLMInput, b: VideoLLMInput) -> bool:
    return (a.tokens.shape == b.tokens.shape and bool(torch.equal(a.tokens.cpu(), b.tokens.cpu()))
            and a.video_embeds.shape == b.video_embeds.shape
            and bool(torch.equal(a.video_embeds, b.video_embeds.to(a.video_embeds.device))))


class Engine:
    """How a knockout condition is computed. ``clean`` once per sample, ``run`` per condition."""

    name = "engine"

    def clean(self, model, inputs: VideoLLMInput) -> CleanRun:
        raise NotImplementedError

    def run(self, model, clean: CleanRun, hook: KnockoutHook, layers: Sequence[int]) -> Float[torch.Tensor, "d_vocab"]:
        """Last-position logits ``[d_vocab]`` with ``hook``'s edges blocked in ``layers``."""
        raise NotImplementedError

    @torch.no_grad()
    def one(self, model, inputs: VideoLLMInput, hook: KnockoutHook,
            layers: Sequence[int]) -> Float[torch.Tensor, "d_vocab"]:
        """Last-position logits ``[d_vocab]`` of a single condition with no clean run to reuse: one
        forward of the whole prompt with ``hook`` on ``layers``. Every engine gives these numbers
        (the engines agree within 1e-5); a clean run is worth making only when conditions share it,
        since it alone costs a forward."""
        with scoped_hooks(model, [(hook_name(l), hook) for l in layers]):
            return model(inputs)[0, -1]

    def run_many(self, model, clean: CleanRun, conditions: Sequence[Tuple[KnockoutHook, Sequence[int]]],
                 batch_size=1, on_done: Optional[Callable[[int], object]] = None
                 ) -> List[Float[torch.Tensor, "d_vocab"]]:
        """``run`` for each ``(hook, layers)`` condition, in order; ``batch_size`` conditions at a time
        where the engine can batch them (this one runs them one by one). ``on_done(n)`` is called
        as each ``n`` conditions finish (a progress bar's ``update``)."""
        out = []
        for hook, layers in conditions:
            out.append(self.run(model, clean, hook, layers))
            if on_done is not None:
                on_done(1)
        return out


class FullEngine(Engine):
    """A whole forward per condition, knockout hooks on the window's layers (the plain method)."""

    name = "full"

    @torch.no_grad()
    def clean(self, model, inputs):
        return CleanRun(inputs, model(inputs)[0, -1], model=weakref.ref(model), engine=self.name)

    def run(self, model, clean, hook, layers):
        return self.one(model, clean.inputs, hook, layers)


def _unembed_last(model, resid: Float[torch.Tensor, "batch pos d_model"]) -> Float[torch.Tensor, "d_vocab"]:
    """``HookedTransformer.forward``'s tail (final norm, unembed, soft-cap) for the last position only."""
    return final_logits(model, resid[:, -1:])[0, -1]


class FastEngine(Engine):
    """Incremental recomputation from the window start and the first blocked query (module doc)."""

    name = "fast"

    _NAMES = ("hook_resid_pre", "attn.hook_k", "attn.hook_v")

    @torch.no_grad()
    def clean(self, model, inputs):
        logits, cache = model.run_with_cache(inputs, names_filter=lambda n: n.endswith(self._NAMES))
        L = model.cfg.n_layers
        return CleanRun(
            inputs,
            logits[0, -1],
            resid_pre=[cache[get_act_name("resid_pre", l)] for l in range(L)],
            keys=[cache_keys(model.blocks[l].attn, cache[get_act_name("k", l)]) for l in range(L)],
            values=[cache[get_act_name("v", l)] for l in range(L)],
            model=weakref.ref(model),
            engine=self.name,
        )

    @torch.no_grad()
    def run(self, model, clean, hook, layers):
        if clean.resid_pre is None:
            raise ValueError("the fast engine needs a CleanRun made by FastEngine.clean")
        q0 = hook.first_query
        if q0 is None or not layers:
            return clean.logits  # nothing blocked: the clean run, exactly
        a, L = min(layers), model.cfg.n_layers
        keys = [clean.keys[l][:, :q0] if l >= a else None for l in range(L)]
        values = [clean.values[l][:, :q0] if l >= a else None for l in range(L)]
        kv = frozen_kv_cache(keys, values, q0, clean.logits.device)
        resid = clean.resid_pre[a][:, q0:]
        with scoped_hooks(model, [(hook_name(l), hook) for l in layers]), feeding(model, clean.inputs):
            out = model(resid, start_at_layer=a, stop_at_layer=L, past_kv_cache=kv)
        return _unembed_last(model, out)

    def run_many(self, model, clean, conditions, batch_size=1, on_done=None):
        """Conditions sharing their first blocked query run ``batch_size`` at a time (``"auto"``: as
        many as the free memory holds), each joining the batch at its own first layer
        (``videolens.knockout.batched``); 1 runs them one by one."""
        if batch_size == 1:
            return super().run_many(model, clean, conditions, on_done=on_done)
        from .batched import run_batched

        return run_batched(model, clean, conditions, batch_size, on_done=on_done)


ENGINES: Registry[Engine] = Registry("knockout method", {e.name: e for e in (FastEngine(), FullEngine())})


def get_engine(method: str) -> Engine:
    """``"fast"`` or ``"full"`` (or any engine added to ``ENGINES``).

    Raises:
        ValueError: unknown method (lists the known ones).
    """
    if method not in ENGINES:
        raise ValueError(f"unknown knockout method {method!r}; known: {sorted(ENGINES)}")
    return ENGINES[method]


def knockout_logits(model, inputs: VideoLLMInput, pairs_or_mask, layers: Sequence[int], heads=None,
                    method: str = "fast", clean: Optional[CleanRun] = None) -> Float[torch.Tensor, "d_vocab"]:
    """Last-position logits ``[d_vocab]`` of one knockout condition.

    Args:
        pairs_or_mask: edge pairs (``"video->last"``, ``EdgePair`` s) or a ``bool [S, S]`` mask.
        layers: layers where the edges are blocked.
        heads: head indices (None: all).
        method: ``"fast"`` or ``"full"``; it matters only with ``clean=``.
        clean: a ``CleanRun`` of this input from the same engine, to reuse across conditions
            (``get_engine(method).clean(model, inputs)``). Without it the condition is one hooked
            forward (``Engine.one``): making a clean run for a single condition would cost a second
            forward, which is what the fast engine saves only across many conditions.

    Raises:
        videolens.hooked.edges.EmptyRowError, ValueError, KeyError: as ``knockout_hooks``.
        ValueError: ``clean`` made from another model or input, or by another engine (``CleanRun.check``).
    """
    from .hooks import knockout_hooks

    engine = get_engine(method)
    layers = resolve_layers(layers, model.cfg.n_layers)
    hook = knockout_hooks(model, pairs_or_mask, layers, heads, inputs.layout)[0][1]  # one hook shared by the layers
    if clean is None:
        return engine.one(model, inputs, hook, layers)
    clean.check(model, inputs, engine.name)
    return engine.run(model, clean, hook, layers)
