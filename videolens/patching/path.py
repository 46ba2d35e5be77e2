"""Path patching: the effect of a sender on a receiver through the direct path between them.

Definition (Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect Object
Identification in GPT-2 small", arXiv 2211.00593, section 3.1 and appendix B; generalised to
arbitrary paths by Goldowsky-Dill et al. 2023, "Localizing Model Behavior with Path Patching",
arXiv 2304.05969). With a base input x (e.g. clean) and a source input x' (e.g. corrupted):

1. Run x and x' and cache their activations.
2. Run x with the sender's activation replaced by its value on x', and every attention head's
   output (``hook_z``, all positions) frozen to its value on x, so the sender's change reaches the
   receivers only through the residual stream (and through the MLPs, which are recomputed unless
   ``freeze_mlps=True``, as in Wang et al., where MLPs count as part of the direct path). Record
   the receivers' inputs: a receiver head's queries / keys / values (``hook_q``/``hook_k``/
   ``hook_v``), or the final residual stream at the receiver positions.
3. Run x with only the receivers' inputs replaced by the values recorded in step 2, and score
   the output with the metric.

Senders are heads (``Head``: ``hook_z`` of one head, optionally only at some positions) or spans
(``Span``: any ``ACTIVATIONS`` entry at one layer over a group of positions, e.g. the residual
stream of frame 3 entering layer 2). Receivers are heads (``Head`` with ``inputs`` among ``q``,
``k``, ``v``) or the final residual stream at some positions (``Final("last")``: the logits read
there). With grouped-query attention a key/value receiver patches the key/value head that its
query head reads, which the other query heads of that group share.

Example::

    value = path_patch(model, clean, corrupted, sender=Head(1, 2), receivers=[Final("last")],
                       metric=logit_diff(clean))
    grid = path_patch_heads(model, clean, corrupted, receivers=[Head(3, 0, inputs="q", positions="last")],
                            metric=logit_diff(clean))        # [n_layers, n_heads], NaN where not a sender
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import torch
from jaxtyping import Float
from tqdm.auto import tqdm
from transformer_lens import ActivationCache
from transformer_lens.utilities import get_act_name

from ..errors import require_finite
from ..prompting.inputs import VideoLLMInput
from .activation import ACTIVATIONS, _spec, source_cache
from .metrics import Metric

__all__ = ["Head", "Span", "Final", "path_patch", "path_patch_heads"]

Positions = Union[None, str, Sequence[int], torch.Tensor]


def _resolve(layout, positions: Positions) -> Optional[torch.Tensor]:
    if positions is None or (isinstance(positions, str) and positions == "all"):
        return None
    if isinstance(positions, str):
        return layout.positions(positions)
    return torch.as_tensor(positions if torch.is_tensor(positions) else list(positions), dtype=torch.long)


@dataclass(frozen=True)
class Head:
    """An attention head ``(layer, head)``.

    As a sender: its output ``hook_z`` at ``positions`` (default all). As a receiver: its
    ``inputs`` (any of ``"q"``, ``"k"``, ``"v"``) at ``positions`` (default all; queries are
    usually read at ``"last"`` or a span, keys/values at a span such as ``"video"``)."""

    layer: int
    head: int
    positions: Positions = None
    inputs: str = "qkv"

    def __post_init__(self):
        if not self.inputs or set(self.inputs) - set("qkv"):
            raise ValueError(f"Head.inputs must be a combination of 'q', 'k', 'v', got {self.inputs!r}")


@dataclass(frozen=True)
class Span:
    """A sender: ``activation`` (a key of ``ACTIVATIONS``) at ``layer`` over ``positions``
    (a group name such as ``"frame:3"`` or ``"non_option_question"``, or positions)."""

    activation: str
    layer: int
    positions: Positions = None


@dataclass(frozen=True)
class Final:
    """A receiver: the final residual stream (``blocks.{L-1}.hook_resid_post``, what the
    unembedding reads) at ``positions`` (default the last position)."""

    positions: Positions = "last"


Sender = Union[Head, Span]
Receiver = Union[Head, Final]


def _set(act, pos, head, value):
    """``act[:, pos(, head)] = value[:, pos(, head)]``; pos None = all positions."""
    p = slice(None) if pos is None else pos.to(act.device)
    if head is None:
        act[:, p] = value[:, p].to(act.dtype)
    else:
        act[:, p, head] = value[:, p, head].to(act.dtype)


def _check_order(model, senders: Sequence[Sender], receivers: Sequence[Receiver]) -> None:
    n = model.cfg.n_layers
    for s in senders:
        if not 0 <= s.layer < n:
            raise ValueError(f"sender {s} is outside the model's {n} layers")
        if isinstance(s, Span):
            _spec(s.activation)
        if isinstance(s, Head) and not 0 <= s.head < model.cfg.n_heads:
            raise ValueError(f"sender {s}: head out of range ({model.cfg.n_heads} heads)")
    for r in receivers:
        if isinstance(r, Final):
            continue
        if not 0 <= r.layer < n or not 0 <= r.head < model.cfg.n_heads:
            raise ValueError(f"receiver {r} is outside the model ({n} layers, {model.cfg.n_heads} heads)")
        for s in senders:
            # a receiver head reads blocks.{r}.hook_resid_pre: a sender must be written before it
            ok = s.layer <= r.layer if isinstance(s, Span) and s.activation == "resid_pre" else s.layer < r.layer
            if not ok:
                raise ValueError(f"sender {s} comes after receiver {r}: no path between them")


def _kv_index(model, head: int) -> int:
    n_kv = model.cfg.n_key_value_heads or model.cfg.n_heads
    return head // (model.cfg.n_heads // n_kv)


def _receiver_hooks(model, r: Receiver) -> List[tuple]:
    """(hook name, head index in that hook or None) for each input of a receiver."""
    if isinstance(r, Final):
        return [(get_act_name("resid_post", model.cfg.n_layers - 1), None)]
    out = []
    for c in r.inputs:
        idx = r.head if c == "q" else _kv_index(model, r.head)
        out.append((get_act_name(c, r.layer), idx))
    return out


def path_patch(
    model,
    inputs: VideoLLMInput,
    source: Union[VideoLLMInput, ActivationCache],
    sender: Union[Sender, Sequence[Sender]],
    receivers: Sequence[Receiver],
    metric: Metric,
    freeze_mlps: bool = False,
    base_cache: Optional[ActivationCache] = None,
) -> float:
    """Path-patch ``sender`` -> ``receivers``: the metric on ``inputs`` when only the sender's
    effect through the direct path to the receivers comes from ``source``.

    Standard definition (Wang et al. 2022, arXiv 2211.00593; Goldowsky-Dill et al. 2023, arXiv
    2304.05969); see the module docstring for the three steps.

    Args:
        model: the ``HookedVideoLLM``.
        inputs: the base run x (its layout is used to resolve positions).
        source: the run x' whose sender activation is patched in: its ``VideoLLMInput`` or an
            ``ActivationCache`` holding the sender hooks. Same layout as ``inputs``.
        sender: a ``Head`` or ``Span`` (or several, patched together).
        receivers: ``Head`` (with ``inputs`` among q/k/v) and/or ``Final`` receivers.
        metric: logits ``[batch, pos, d_vocab]`` -> ``[batch]``.
        freeze_mlps: also freeze every MLP output to the base run (the path then runs through
            the residual stream alone).
        base_cache: the base run's cache (with every ``hook_z``, and ``hook_mlp_out`` when
            ``freeze_mlps``); computed when absent.

    Returns:
        The metric of step 3 (a float, metric units). Compare with ``metric(model(inputs))``.

    Raises:
        ValueError: a sender at or after a receiver head's layer (no path), out-of-range
            layers or heads, or no receivers.
    """
    inputs.one_row("path_patch")
    senders = [sender] if isinstance(sender, (Head, Span)) else list(sender)
    receivers = list(receivers)
    if not receivers or not senders:
        raise ValueError("path_patch needs at least one sender and one receiver")
    _check_order(model, senders, receivers)
    n = model.cfg.n_layers
    L = inputs.layout
    z_names = [get_act_name("z", l) for l in range(n)]
    mlp_names = [get_act_name("mlp_out", l) for l in range(n)] if freeze_mlps else []
    if base_cache is None:
        base_cache = source_cache(model, inputs, z_names + mlp_names)
    send_hooks = [
        (get_act_name("z", s.layer), s.head) if isinstance(s, Head) else (ACTIVATIONS[s.activation].hook_name(s.layer), None)
        for s in senders
    ]
    src = source_cache(model, source, sorted({h for h, _ in send_hooks}))

    # step 2: freeze heads (and MLPs), patch the sender, record the receivers' inputs
    patch_at: Dict[str, list] = {}
    for s, (name, head) in zip(senders, send_hooks):
        patch_at.setdefault(name, []).append((_resolve(L, s.positions), head))
    frozen = set(z_names + mlp_names)
    recv = {name for r in receivers for name, _ in _receiver_hooks(model, r)}
    recorded: Dict[str, torch.Tensor] = {}

    def step2(act, hook):
        name = hook.name
        if name in frozen:
            act = base_cache[name].to(act.device, act.dtype).clone()
        for pos, head in patch_at.get(name, []):
            act = act.clone() if name not in frozen else act
            _set(act, pos, head, src[name])
        if name in recv:
            recorded[name] = act.detach().clone()
        return act

    names2 = sorted(frozen | set(patch_at) | recv)
    stop = None if any(isinstance(r, Final) for r in receivers) else max(r.layer for r in receivers) + 1
    with torch.no_grad():
        model.run_with_hooks(inputs, fwd_hooks=[(nm, step2) for nm in names2], stop_at_layer=stop,
                             **({} if stop is not None else {"return_type": None}))

    # step 3: base run with only the receivers' inputs patched
    patches: Dict[str, list] = {}
    for r in receivers:
        for name, idx in _receiver_hooks(model, r):
            patches.setdefault(name, []).append((_resolve(L, r.positions), idx))

    def step3(act, hook):
        act = act.clone()
        for pos, idx in patches[hook.name]:
            _set(act, pos, idx, recorded[hook.name])
        return act

    with torch.no_grad():
        logits = model.run_with_hooks(inputs, fwd_hooks=[(nm, step3) for nm in patches])
    return require_finite(float(metric(logits).reshape(())), "path_patch")


def path_patch_heads(
    model,
    inputs: VideoLLMInput,
    source: Union[VideoLLMInput, ActivationCache],
    receivers: Sequence[Receiver],
    metric: Metric,
    positions: Positions = None,
    freeze_mlps: bool = False,
    progress: bool = False,
) -> Float[torch.Tensor, "n_layers n_heads"]:
    """Path-patch every head that can reach the receivers (layers before the earliest receiver
    head; all layers for ``Final`` receivers) as a sender, one at a time.

    Args:
        positions: sender positions for every head (default all).
        Other arguments as ``path_patch``.

    Returns:
        ``[n_layers, n_heads]`` metric values; NaN for heads that are not senders.
    """
    inputs.one_row("path_patch_heads")
    n, H = model.cfg.n_layers, model.cfg.n_heads
    heads_r = [r.layer for r in receivers if isinstance(r, Head)]
    top = min(heads_r) if heads_r else n
    z_names = [get_act_name("z", l) for l in range(n)]
    mlp_names = [get_act_name("mlp_out", l) for l in range(n)] if freeze_mlps else []
    base_cache = source_cache(model, inputs, z_names + mlp_names)
    src = source_cache(model, source, z_names[:top])
    out = torch.full((n, H), float("nan"))
    for l in tqdm(range(top), disable=not progress, desc="path patching"):
        for h in range(H):
            out[l, h] = path_patch(model, inputs, src, Head(l, h, positions), receivers, metric,
                                   freeze_mlps=freeze_mlps, base_cache=base_cache)
    return out
