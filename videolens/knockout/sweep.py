"""Knockout sweeps: each edge pair of a target, blocked in a window of layers around every layer.

REFERENCE section 2: the window of ``k`` layers centred on layer ``l`` is
``max(0, l - (k-1)//2) ... min(L-1, l + k//2)`` (k = 9: ``l-4 ... l+4``), clipped at both ends. The
probability is the full-vocabulary softmax at the last prompt position, read at the option letter
tokens, for the baseline's argmax letter and for the ground-truth letter; the relative change is
``(p_knockout - p_base) / p_base * 100`` (percent).

Example::

    import videolens as vl
    records = vl.knockout.sweep(model, inputs, "cross-frame", window=9)
    records[0]   # {"pair": "cross-frame", "layer": 0, "layers": [0, 1, 2, 3, 4], "rel_change": -12.5, ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch
from jaxtyping import Float

from ..inputs import VideoLLMInput
from .engine import CleanRun, get_engine
from .hooks import KnockoutHook, knockout_mask
from .targets import Target, get_target

__all__ = ["layer_window", "check_window", "sweep", "Baseline", "baseline", "SAMPLE_MODES"]

SAMPLE_MODES = ("all", "correct")


def check_window(window: int, n_layers: int) -> None:
    """Raises ValueError unless ``1 <= window <= n_layers``."""
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive number of layers, got {window!r}")
    if window > n_layers:
        raise ValueError(f"window {window} is larger than the model's {n_layers} layers")


def layer_window(centre: int, window: int, n_layers: int) -> List[int]:
    """Layers of the ``window``-layer window centred on ``centre``, clipped to ``[0, n_layers)``.

    ``layer_window(0, 9, 32) == [0..4]``, ``layer_window(10, 9, 32) == [6..14]``,
    ``layer_window(31, 9, 32) == [27..31]``.

    Raises:
        ValueError: bad window (see ``check_window``) or centre outside the model.
    """
    check_window(window, n_layers)
    if not 0 <= centre < n_layers:
        raise ValueError(f"centre layer {centre} out of range for {n_layers} layers")
    lo = max(0, centre - (window - 1) // 2)
    hi = min(n_layers - 1, centre + window // 2)
    return list(range(lo, hi + 1))


@dataclass
class Baseline:
    """Option probabilities of the clean run.

    Attributes:
        probs: letter -> probability (full-vocabulary softmax at the last position).
        letter: the argmax letter (the model's answer).
        true_letter: the ground-truth letter (None when the input has none).
    """

    probs: Dict[str, float]
    letter: str
    true_letter: Optional[str]

    @property
    def correct(self) -> bool:
        return self.true_letter is not None and self.letter == self.true_letter


def _option_probs(inputs: VideoLLMInput, logits: Float[torch.Tensor, "d_vocab"]) -> Dict[str, float]:
    logp = logits.float().log_softmax(-1)
    letters = inputs.layout.letters
    ids = torch.tensor([inputs.option_token_ids[L] for L in letters], device=logp.device)
    return {L: float(p) for L, p in zip(letters, logp[ids].exp())}


def baseline(inputs: VideoLLMInput, clean: CleanRun) -> Baseline:
    """The clean run's option probabilities and answer."""
    probs = _option_probs(inputs, clean.logits)
    return Baseline(probs, max(probs, key=probs.get), inputs.layout.true_letter)


def _rel(p_ko: float, p_base: float) -> float:
    return (p_ko - p_base) / p_base * 100.0 if p_base > 0 else float("nan")


def sweep(
    model,
    inputs: VideoLLMInput,
    target: Union[str, Target, Iterable],
    window: int = 9,
    method: str = "fast",
    samples: str = "all",
    layers: Optional[Sequence[int]] = None,
    heads: Optional[Sequence[int]] = None,
    clean: Optional[CleanRun] = None,
    progress: bool = False,
) -> List[dict]:
    """Knock out each pair of ``target`` in a window around every layer; one record per (pair, layer).

    Args:
        model: a ``HookedVideoLLM``.
        inputs: one prepared sample (the vision front end already ran in ``model.prepare``).
        target: a registered target name (``"cross-frame"``, ``"vql-to-ql"``,
            ``"question-and-options-to-last"``, ``"vq-to-true-opt"``), a ``Target``, or edge
            pairs (``"video->last"`` / ``EdgePair`` / a list) swept separately.
        window: layers per window, centred and clipped (REFERENCE section 2; paper: 9).
        method: ``"fast"`` (incremental, default) or ``"full"`` (a whole forward per condition);
            both give the same numbers.
        samples: ``"all"``, or ``"correct"``: return ``[]`` when the clean answer is wrong (the
            paper analyses correctly answered samples only).
        layers: centre layers to sweep (default: every layer).
        heads: knock out these heads only (default: every head).
        clean: a ``CleanRun`` of this input from the same engine (reuse across targets).
        progress: show a tqdm bar over conditions.

    Returns:
        Records (dicts of JSON types): ``target``, ``pair``, ``key``, ``query``, ``relation``,
        ``heads``, ``n_blocked`` (edges per layer and head), ``layer`` (centre), ``layers`` (the
        window), ``window``, ``base_letter``, ``base_prob``, ``true_letter``, ``base_true_prob``,
        ``ko_prob`` / ``ko_true_prob`` (same letters after knockout), ``rel_change`` /
        ``rel_change_true`` (percent), ``ko_letter`` (answer after knockout), ``base_probs`` /
        ``ko_probs`` (every option), ``method``.

    Raises:
        UnknownTargetError: unknown target name (lists the known ones).
        ValueError: window larger than the model or < 1, unknown method or sample mode, centre
            layers or heads out of range, ``samples="correct"`` without a ground truth.
        videolens.edges.EmptyRowError: a pair would leave a query with no key (before running).
        KeyError: a pair names an unknown token group.
    """
    n_layers = model.cfg.n_layers
    tgt = get_target(target)
    check_window(window, n_layers)
    engine = get_engine(method)
    if samples not in SAMPLE_MODES:
        raise ValueError(f"samples must be one of {SAMPLE_MODES}, got {samples!r}")
    layout = inputs.layout
    if samples == "correct" and layout.true_letter is None:
        raise ValueError("samples='correct' needs inputs with a ground-truth answer")
    centres = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    windows = {c: layer_window(c, window, n_layers) for c in centres}
    if heads is not None:
        heads = [int(h) for h in heads]
        if not heads or not all(0 <= h < model.cfg.n_heads for h in heads):
            raise ValueError(f"heads {heads} out of range for {model.cfg.n_heads} heads")
    # build and check every mask before running anything
    hooks = [(pair, KnockoutHook(knockout_mask(layout, pair), heads)) for pair in tgt.pairs]

    if clean is None:
        clean = engine.clean(model, inputs)
    base = baseline(inputs, clean)
    if samples == "correct" and not base.correct:
        return []
    truth = base.true_letter

    conditions = [(pair, hook, c) for pair, hook in hooks for c in centres]
    if progress:
        from tqdm.auto import tqdm

        conditions = tqdm(conditions, desc=f"knockout {tgt.name}", unit="cond", leave=False)
    records = []
    for pair, hook, c in conditions:
        logits = engine.run(model, clean, hook, windows[c])
        ko = _option_probs(inputs, logits)
        records.append(
            {
                "target": tgt.name,
                "pair": pair.label,
                "key": pair.key,
                "query": pair.query,
                "relation": pair.relation,
                "heads": heads,
                "n_blocked": hook.n_edges,
                "layer": c,
                "layers": windows[c],
                "window": window,
                "base_letter": base.letter,
                "base_prob": base.probs[base.letter],
                "true_letter": truth,
                "base_true_prob": base.probs[truth] if truth else None,
                "ko_prob": ko[base.letter],
                "ko_true_prob": ko[truth] if truth else None,
                "rel_change": _rel(ko[base.letter], base.probs[base.letter]),
                "rel_change_true": _rel(ko[truth], base.probs[truth]) if truth else None,
                "ko_letter": max(ko, key=ko.get),
                "base_probs": base.probs,
                "ko_probs": ko,
                "method": engine.name,
            }
        )
    return records
