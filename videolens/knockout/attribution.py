"""Gradient edge attribution (attribution patching for attention knockout; Nanda 2023, Syed et al.
2023): a first-order estimate of every knockout condition from ONE forward and ONE backward pass.

The linearised metric is the answer's log-odds ``m = z_a - logsumexp_{j != a} z_j`` at the last
position (``z`` the logits, ``a`` the baseline answer by default), so ``p(a) = sigmoid(m)``. Blocking
the edges ``B`` (a token-group pair) in layer ``l`` changes that layer's attention pattern ``A``
(per head, row-wise) to ``A'``: blocked entries become 0 and each query row ``q`` is renormalised
by ``1 - s_q`` with ``s_q = sum_{k in B_q} A[q, k]``. So, exactly,

    dA[q, k] = A[q, k] * s_q / (1 - s_q)   (k not blocked),   dA[q, k] = -A[q, k]   (k blocked),

and the first-order change of the metric is ``dm = sum_{h, q, k} dm/dA[h, q, k] * dA[h, q, k]``.
The estimated probability after the knockout is ``sigmoid(m + dm)``, and its relative change in
percent is comparable to a knockout record's ``rel_change`` for a one-layer window.

Why log-odds rather than ``log p(a)``: ``d log p = (1 - p) dm``, so within one sample both rank the
conditions alike, but when ``p`` is near 1 the gradient of ``log p`` vanishes with ``1 - p`` and the
estimate ``exp(d log p)`` cannot leave the neighbourhood of ``p``; mapped through the sigmoid the
log-odds estimate can (on the bundled model it lifts the signed Spearman correlation of the
per-condition means over clips with the exact sweep from 0.50 to 0.74, ``benchmarks/attribution.py``).

Cost: every (pair, layer) at once for the price of one forward and one backward, against one
(incremental) forward per condition for the exact sweep. First order only. On the bundled model
(``benchmarks/attribution.py``, 10 fresh clips, 66 one-layer conditions each) the estimate ranks the
conditions by importance well (Spearman of magnitudes with the exact relative change 0.94-0.95
pooled over clips) but its sign is unreliable for small effects (signed Spearman 0.68-0.80): the
derivative is exact (tested against finite differences), while whole knockouts act far from the
linear regime (a pair whose derivative is +3.8 log-odds can lower them by 1.6 when blocked). Rank
with it, then measure the top conditions with ``knockout.sweep``.
"""

from __future__ import annotations

import math

from typing import Dict, List, Optional, Sequence, Union

import torch
from transformer_lens.utilities import get_act_name

from ..errors import require_finite
from ..prompting.inputs import VideoLLMInput
from ..hooked.edges import as_pairs, blocked_mask
from .targets import Target, get_target

__all__ = ["edge_attribution"]


def edge_attribution(model, inputs: VideoLLMInput, targets: Sequence[Union[str, Target]],
                     answer_t: Optional[int] = None, layers: Optional[Sequence[int]] = None,
                     self_edges: str = "block") -> List[Dict]:
    """First-order knockout effects of every pair of ``targets`` at every layer (module doc).

    Args:
        inputs: one prepared sample.
        targets: target names (``"cross-frame"``, ...) or ``Target`` s; each pair is estimated alone.
        answer_t: the token whose log-odds are the metric (default: the baseline argmax).
        layers: layers to estimate (default: all).

    Returns:
        one record per (pair, layer): ``target, pair, layer, est_delta_logodds`` (the first-order
        change of the answer's log-odds), ``est_delta_logp`` (the change of ``log p(answer)`` it
        implies), ``est_rel_change`` (percent), ``answer_t``, ``n_blocked``, ``seq_len``.

    Raises:
        KeyError: unknown target or token group.
    """
    inputs.one_row("edge_attribution")
    targets = [get_target(t) if isinstance(t, str) else t for t in targets]
    L = model.cfg.n_layers
    layers = list(range(L)) if layers is None else list(layers)
    names = {get_act_name("pattern", l): l for l in layers}
    saved: Dict[int, torch.Tensor] = {}

    def keep(pattern, hook):
        pattern.retain_grad()
        saved[names[hook.name]] = pattern
        return pattern

    def grad_on(x, hook):  # gradients flow even when the weights do not require them
        return x if x.requires_grad else x.detach().requires_grad_(True)

    with torch.enable_grad():
        with model.hooks(fwd_hooks=[("hook_embed", grad_on), *[(n, keep) for n in names]]):
            logits = model(inputs)[0, -1].float()
        if answer_t is None:
            answer_t = int(logits.argmax())
        log_odds = logits[answer_t] - torch.cat([logits[:answer_t], logits[answer_t + 1:]]).logsumexp(-1)
        log_odds.backward()
    m = float(log_odds.detach())
    records = []
    S = inputs.seq_len
    for target in targets:
        for pair in as_pairs(target.pairs):
            mask = blocked_mask(inputs.layout, [pair], self_edges).to(logits.device)
            n_blocked = int(mask.sum())
            for l in layers:
                A = saved[l].detach()[0].float()  # [heads, S, S]
                G = saved[l].grad[0].float() * A
                M = mask[None].expand_as(A)
                s = (A * M).sum(-1)  # blocked attention per (head, query)
                free = (G * ~M).sum(-1)
                blocked = (G * M).sum(-1)
                scale = torch.where(s < 1, s / (1 - s).clamp_min(1e-12), torch.zeros_like(s))
                delta = float((scale * free - blocked).sum())
                delta_logp = _log_sigmoid(m + delta) - _log_sigmoid(m)
                records.append({"target": target.name, "pair": pair.label, "layer": l,
                                "est_delta_logodds": delta, "est_delta_logp": delta_logp,
                                "est_rel_change": 100.0 * math.expm1(delta_logp),
                                "answer_t": answer_t, "n_blocked": n_blocked, "seq_len": S})
    for p in saved.values():
        p.grad = None
    return require_finite(records, "edge_attribution")


def _log_sigmoid(x: float) -> float:
    """``log(sigmoid(x))`` without overflow for large ``|x|``."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))
