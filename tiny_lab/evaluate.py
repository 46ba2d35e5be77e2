"""Evaluation of a saved checkpoint through HookedVideoLLM (the numbers of the model card)."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from videolens import synthetic
from .config import CROSS_FRAME

# ---- evaluation of a saved checkpoint through HookedVideoLLM (numbers for the model card) -----
def batched_last_logits(model, inputs, fwd_hooks=()) -> torch.Tensor:
    """Last-position logits ``[n, d_vocab]`` for prepared inputs sharing one layout, in one batched forward."""
    from videolens.prompting.inputs import stack_inputs

    return model.run_with_hooks(stack_inputs(inputs), fwd_hooks=list(fwd_hooks))[:, -1]


def answered_right(inputs, logits) -> List[bool]:
    """Per prepared input, whether the highest of its option letters' logits (``logits`` ``[n,
    d_vocab]``, last position) is the right letter."""
    out = []
    for inp, lg in zip(inputs, logits):
        ids = [inp.option_token_ids[L] for L in inp.layout.letters]
        out.append(inp.layout.letters[int(lg[ids].argmax())] == inp.sample.answer_letter)
    return out


@torch.no_grad()
def evaluate_checkpoint(path, n_per_task: int = 100, seed: int = 5000, n_per_layer: int = 50, chunk: int = 50) -> Dict:
    """Accuracy per task of a saved checkpoint loaded with ``HookedVideoLLM.from_pretrained``.

    Conditions: ``causal`` (plain), ``knockout`` (cross-frame edges blocked in all layers),
    ``first_frame`` / ``last_frame`` (every frame replaced by that frame), and on the first
    ``n_per_layer`` clips ``knockout_layer_{l}`` (cross-frame blocked in layer l only) and
    ``knockout_from_{l}`` (blocked in layers >= l).

    Returns:
        ``{task: {condition: accuracy}}`` on fresh clips ``synthetic.make_samples(task, n, seed)``.
    """
    from videolens import HookedVideoLLM, VideoQA
    from videolens.knockout import knockout_hooks
    from videolens.sources.video import Video

    model = HookedVideoLLM.from_pretrained(path, device="cpu", dtype=torch.float32)
    L = model.cfg.n_layers
    all_layers = range(L)
    res: Dict[str, Dict[str, float]] = {}
    for task in synthetic.TASKS:
        made = synthetic.make_samples(task, n_per_task, seed=seed)
        counts: Dict[str, int] = {}
        totals: Dict[str, int] = {}

        def add(name, inputs, hooks=()):
            counts[name] = counts.get(name, 0) + sum(answered_right(inputs, batched_last_logits(model, inputs, hooks)))
            totals[name] = totals.get(name, 0) + len(inputs)

        for k in range(0, len(made), chunk):
            part = made[k:k + chunk]
            inputs = [model.prepare(m.to_videoqa(), num_frames=synthetic.NUM_STEPS) for m in part]
            add("causal", inputs)
            add("knockout", inputs, knockout_hooks(model, CROSS_FRAME, all_layers, layout=inputs[0]))
            if k < n_per_layer:
                sub = inputs[: n_per_layer - k]
                for l in range(L):
                    add(f"knockout_layer_{l}", sub, knockout_hooks(model, CROSS_FRAME, [l], layout=sub[0]))
                    add(f"knockout_from_{l}", sub, knockout_hooks(model, CROSS_FRAME, range(l, L), layout=sub[0]))
            for name, which in (("first_frame", 0), ("last_frame", -1)):
                stills = []
                for m in part:
                    f = m.frames()
                    qa = VideoQA(Video.from_frames(np.repeat(f[which][None], len(f), 0)), m.question, m.candidates, m.answer)
                    stills.append(model.prepare(qa, num_frames=synthetic.NUM_STEPS))
                add(name, stills)
        res[task] = {k: counts[k] / totals[k] for k in counts}
    return res


