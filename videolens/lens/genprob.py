"""Answer probability by layer at the last position (Map the Flow's methods, "Generation probability").

Paper: Kim et al. 2026, Finding 3: the option letter's probability, read through the logit lens
at the last prompt position, rises sharply in middle-to-late layers, right after video-to-question
integration.

Method notes (the paper's section, the official code's lines): docs/methods.md#answer-probability-by-layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from jaxtyping import Bool, Float

from ..errors import NonFiniteError
from ..prompting.inputs import VideoLLMInput
from .core import _mode, capture_resid, resid_label, lens_logits

__all__ = ["AnswerProbabilities", "answer_probability_by_layer", "genprob_records", "curves"]


@dataclass
class AnswerProbabilities:
    """Each option letter's probability at the last position, for every lens layer.

    Attributes:
        layers: lens layers ``0 .. n_layers`` (``n_layers`` = after the last block).
        letters: option letters, in order.
        probs: ``[n_layers + 1, n_options]`` fp32, full-vocabulary softmax of the lens scores,
            read at each letter's token id.
        true_letter: the right option's letter (None when unknown).
        n_layers: the model's number of blocks.
        mode: the lens mode.
    """

    layers: List[int]
    letters: List[str]
    probs: Float[torch.Tensor, "n_lens n_options"]
    true_letter: Optional[str]
    n_layers: int
    mode: str = "final_norm"

    @property
    def is_true(self) -> Bool[torch.Tensor, "n_options"]:
        """True for the right option, False for the others (all False when unknown)."""
        return torch.tensor([L == self.true_letter for L in self.letters])

    @property
    def true_probs(self) -> Float[torch.Tensor, "n_lens"]:
        """Probability of the right option per lens layer.

        Raises:
            ValueError: the sample has no known answer."""
        if self.true_letter is None:
            raise ValueError("no ground-truth letter: true and false options are unknown")
        return self.probs[:, self.letters.index(self.true_letter)]

    @property
    def false_probs(self) -> Float[torch.Tensor, "n_lens n_false"]:
        """Probabilities of the wrong options per lens layer."""
        if self.true_letter is None:
            raise ValueError("no ground-truth letter: true and false options are unknown")
        return self.probs[:, ~self.is_true]

    @property
    def final(self) -> Dict[str, float]:
        """The last row as ``{letter: p}``: equal to ``model.option_probs(inputs)`` in mode final_norm."""
        return {L: float(p) for L, p in zip(self.letters, self.probs[-1])}

    def records(self) -> List[Dict[str, Any]]:
        """One JSON-ready record per lens layer."""
        out = []
        for i, l in enumerate(self.layers):
            rec: Dict[str, Any] = {
                "layer": l,
                "label": resid_label(l, self.n_layers),
                "probs": {L: float(p) for L, p in zip(self.letters, self.probs[i])},
                "true_letter": self.true_letter,
                "argmax": self.letters[int(self.probs[i].argmax())],
            }
            if self.true_letter is not None:
                fp = self.probs[i, ~self.is_true]
                rec.update(p_true=float(self.probs[i, self.letters.index(self.true_letter)]),
                           p_false_mean=float(fp.mean()), p_false_max=float(fp.max()))
            out.append(rec)
        return out


def answer_probability_by_layer(model, inputs: VideoLLMInput, mode: str = "final_norm") -> AnswerProbabilities:
    """Probability of every option letter at the last position, for each lens layer.

    For lens layer ``l`` (the residual stream entering block ``l``; ``l = n_layers`` after the last
    block) the last position's residual goes through the logit lens (``videolens.lens.LENS_MODES``),
    a full-vocabulary softmax in fp32 is taken, and each option letter's token is read. In mode
    ``"final_norm"`` the last row equals ``model.option_probs(inputs)``.

    One forward pass, only the last position's residual ``[d_model]`` is kept per layer: extra
    memory ``(n_layers + 1) * (d_model + d_vocab)`` values.

    Args:
        model: a HookedVideoLLM.
        inputs: the prepared sample (``inputs.layout.true_letter`` marks the right option).
        mode: lens mode (``"final_norm"`` default, or ``"raw_embed"``).

    Returns:
        ``AnswerProbabilities`` with ``probs [n_layers + 1, n_options]``.

    Raises:
        ValueError: unknown mode.
        videolens.errors.BatchedInputError: a batch (pass ``batch[i]``).
        videolens.errors.NonFiniteError: NaN or infinite lens scores (the layers are named).
    """
    _mode(mode)
    inputs.one_row("answer_probability_by_layer")
    L = model.cfg.n_layers
    layers = list(range(L + 1))
    last = inputs.layout.last
    resid: Dict[int, torch.Tensor] = {}
    capture_resid(model, inputs, layers, lambda l, x: resid.__setitem__(l, x[last].clone()))
    x = torch.stack([resid[l] for l in layers])  # [L+1, d]
    with torch.no_grad():
        logp = lens_logits(model, x, mode).float().log_softmax(-1)
    finite = torch.isfinite(logp).all(-1).tolist()  # one device sync
    bad = [resid_label(l, L) for l, ok in zip(layers, finite) if not ok]
    if bad:
        raise NonFiniteError(f"answer probability by layer: NaN/inf lens scores at {', '.join(bad[:6])}")
    letters = list(inputs.layout.letters)
    ids = torch.tensor([inputs.option_token_ids[c] for c in letters], device=logp.device)
    return AnswerProbabilities(layers, letters, logp[:, ids].exp().cpu(), inputs.layout.true_letter, L, mode)


def genprob_records(model, inputs, mode: str) -> List[Dict[str, Any]]:
    """Records of one sample for a dataset run (``videolens genprob``): the final layer's answer
    (``kind`` ``answer``: argmax letter, whether it is right, the option probabilities), then one
    ``layer`` record per lens layer (``AnswerProbabilities.records``)."""
    ap = answer_probability_by_layer(model, inputs, mode=mode)
    final = ap.records()[-1]
    summary = {"kind": "answer", "answer": final["argmax"], "correct": final["argmax"] == ap.true_letter,
               "probs": final["probs"]}
    return [summary, *({"kind": "layer", **r} for r in ap.records())]


def curves(records: List[Dict[str, Any]], only_correct: bool = False):
    """``(layers, labels, p_true [n, n_lens], p_false_mean [n, n_lens], sample_ids)`` from a run's
    records (``genprob_records``), samples answered right only with ``only_correct``."""
    correct = {r["sample_id"]: r["correct"] for r in records if r.get("kind") == "answer"}
    by_sample: Dict[str, List[Dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "layer" and (not only_correct or correct.get(r["sample_id"])):
            by_sample.setdefault(r["sample_id"], []).append(r)
    if not by_sample:
        return [], [], np.zeros((0, 0)), np.zeros((0, 0)), []
    ids = list(by_sample)
    rows = [sorted(by_sample[s], key=lambda r: r["layer"]) for s in ids]
    layers = [r["layer"] for r in rows[0]]
    labels = [r["label"] for r in rows[0]]
    p_true = np.array([[r["p_true"] for r in rs] for rs in rows])
    p_false = np.array([[r["p_false_mean"] for r in rs] for rs in rows])
    return layers, labels, p_true, p_false, ids
