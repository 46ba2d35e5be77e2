"""Gradient edge attribution (attribution patching for attention knockout; Nanda 2023, Syed et al.
2023): a first-order estimate of every knockout condition from ONE forward and ONE backward pass.

The metric is ``m = log p(answer)`` at the last position (the baseline answer by default). Blocking
the edges ``B`` (a token-group pair) in layer ``l`` changes that layer's attention pattern ``A``
(per head, row-wise) to ``A'``: blocked entries become 0 and each query row ``q`` is renormalised
by ``1 - s_q`` with ``s_q = sum_{k in B_q} A[q, k]``. So, exactly,

    dA[q, k] = A[q, k] * s_q / (1 - s_q)   (k not blocked),   dA[q, k] = -A[q, k]   (k blocked),

and the first-order change of the metric is ``sum_{h, q, k} dm/dA[h, q, k] * dA[h, q, k]``. The
estimate of the relative change of ``p(answer)`` is ``100 * (exp(dm) - 1)`` percent, comparable to a
knockout record's ``rel_change`` for a one-layer window. Cost: every (pair, layer) at once for the
price of one forward and one backward, against one (incremental) forward per condition for the exact
sweep. First order only: blocking edges that carry most of a row's attention (``s_q`` near 1) is
where the estimate is worst.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from transformer_lens.utilities import get_act_name

from ..inputs import VideoLLMInput
from .hooks import as_pairs, knockout_mask
from .targets import Target, get_target

__all__ = ["edge_attribution"]


def edge_attribution(model, inputs: VideoLLMInput, targets: Sequence[Union[str, Target]],
                     answer_t: Optional[int] = None, layers: Optional[Sequence[int]] = None,
                     self_edges: str = "block") -> List[Dict]:
    """First-order knockout effects of every pair of ``targets`` at every layer (module doc).

    Args:
        inputs: one prepared sample.
        targets: target names (``"cross-frame"``, ...) or ``Target`` s; each pair is estimated alone.
        answer_t: the token whose log-probability is the metric (default: the baseline argmax).
        layers: layers to estimate (default: all).

    Returns:
        one record per (pair, layer): ``target, pair, layer, est_delta_logp`` (the first-order change
        of ``log p(answer)``), ``est_rel_change`` (percent), ``answer_t``, ``n_blocked``.

    Raises:
        KeyError: unknown target or token group.
    """
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
        logp = logits.log_softmax(-1)
        if answer_t is None:
            answer_t = int(logp.argmax())
        logp[answer_t].backward()
    records = []
    S = inputs.seq_len
    for target in targets:
        for pair in as_pairs(target.pairs):
            mask = knockout_mask(inputs.layout, [pair], self_edges).to(logits.device)
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
                records.append({"target": target.name, "pair": pair.label, "layer": l, "est_delta_logp": delta,
                                "est_rel_change": 100.0 * (float(torch.tensor(delta).exp()) - 1.0),
                                "answer_t": answer_t, "n_blocked": n_blocked, "seq_len": S})
    for p in saved.values():
        p.grad = None
    return records
