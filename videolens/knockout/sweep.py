"""Knockout sweeps: each edge pair of a target, blocked in a window of layers around every layer.

Map the Flow's methods, official analysis/information_flow_analysis.py: the window of ``k`` layers
centred on layer ``l`` is ``max(0, l - k//2) ... min(L-1, l + k//2)`` for odd k (k = 9:
``l-4 ... l+4``), clipped at both ends. The metric is the official one (that file): the
full-vocabulary softmax at the last prompt position, read at the baseline's FULL-VOCABULARY argmax
token (``rel_change``) and at the ground-truth letter (``rel_change_true``); relative change
``(p_knockout - p_base) / p_base * 100`` (percent). The option-letter view (argmax among the option
letters, ``letter_*`` fields) is kept beside it.

Example::

    import videolens as vl
    records = vl.knockout.sweep(model, inputs, "cross-frame", window=9)
    records[0]   # {"pair": "cross-frame", "layer": 0, "layers": [0, 1, 2, 3, 4], "rel_change": -12.5, ...}

Method notes (the paper's section, the official code's lines): docs/methods.md#attention-knockout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch
from jaxtyping import Float

from ..errors import NonFiniteError
from ..prompting.inputs import VideoLLMInput
from ..stats import relative_change
from ..hooked.attention import KnockoutHook
from ..hooked.edges import blocked_mask
from .engine import CleanRun, get_engine
from .settings import SAMPLE_MODES, KnockoutSettings, TargetsLike, check_sample_mode, check_window

__all__ = ["layer_window", "check_window", "sweep", "Baseline", "baseline", "SAMPLE_MODES", "keep_sample"]

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
    """What the clean run predicts at the last position.

    Attributes:
        probs: option letter -> probability (full-vocabulary softmax).
        letter: the argmax among the option letters.
        true_letter: the ground-truth letter (None when the input has none).
        answer_t: token id of the full-vocabulary argmax (the official ``answer_t``).
        answer_prob: its probability (the official ``base_score``).
        answer_token: its decoded text (None without a tokenizer).
        true_t: token id of the true letter (None without a ground truth).
    """

    probs: Dict[str, float]
    letter: str
    true_letter: Optional[str]
    answer_t: int = -1
    answer_prob: float = float("nan")
    answer_token: Optional[str] = None
    true_t: Optional[int] = None

    @property
    def correct(self) -> bool:
        """The official rule: the full-vocabulary argmax token is the true letter's token."""
        return self.true_t is not None and self.answer_t == self.true_t

    @property
    def correct_option(self) -> bool:
        """The option-letter rule: the argmax among the option letters is the true one."""
        return self.true_letter is not None and self.letter == self.true_letter


def keep_sample(base: Baseline, samples: str) -> bool:
    """Whether sample mode ``samples`` (``SAMPLE_MODES``) analyses a sample with this baseline.

    Raises:
        ValueError: unknown mode.
    """
    check_sample_mode(samples)
    return {"all": True, "correct": base.correct, "wrong": not base.correct, "incorrect": not base.correct,
            "correct_option": base.correct_option}[samples]


def _option_probs(inputs: VideoLLMInput, logits: Float[torch.Tensor, "d_vocab"]) -> Dict[str, float]:
    logp = logits.float().log_softmax(-1)
    letters = inputs.layout.letters
    ids = torch.tensor([inputs.option_token_ids[L] for L in letters], device=logp.device)
    return {L: float(p) for L, p in zip(letters, logp[ids].exp())}


@dataclass
class _Read:
    """What a sweep's records read from one condition's last-position logits (host values)."""

    finite: bool
    option_probs: Dict[str, float]
    argmax_t: int
    max_prob: float
    answer_prob: float
    true_prob: Optional[float]


def _read_conditions(inputs: VideoLLMInput, results: Sequence[torch.Tensor], answer_t: int,
                     true_t: Optional[int], rows: int = 256) -> List[_Read]:
    """Every condition's record values from its logits ``[d_vocab]``, ``rows`` conditions at a time,
    each batch brought to the host in one copy (one value at a time was about ten device reads a
    condition). The values are ``_option_probs`` and the full-vocabulary softmax read as before."""
    letters = inputs.layout.letters
    out: List[_Read] = []
    for r0 in range(0, len(results), rows):
        logits = torch.stack(results[r0:r0 + rows]).float()  # [n, d_vocab]
        ids = torch.tensor([inputs.option_token_ids[L] for L in letters], device=logits.device)
        options = logits.log_softmax(-1)[:, ids].exp()  # [n, n_options]
        full = logits.softmax(-1)
        top = full.argmax(-1)
        cols = [torch.isfinite(logits).all(-1).to(full.dtype), top.to(full.dtype),
                full.gather(1, top[:, None])[:, 0], full[:, answer_t]] + ([full[:, true_t]] if true_t is not None else [])
        host = torch.cat([torch.stack(cols, 1), options], 1).cpu().tolist()  # float32 -> Python floats, one copy
        k = len(cols)
        for row in host:
            out.append(_Read(bool(row[0]), dict(zip(letters, row[k:])), int(row[1]), row[2], row[3],
                             row[4] if true_t is not None else None))
    return out


def baseline(inputs: VideoLLMInput, clean: CleanRun, tokenizer=None) -> Baseline:
    """The clean run's predictions: option-letter probabilities and the full-vocabulary argmax."""
    probs = _option_probs(inputs, clean.logits)
    full = clean.logits.float().softmax(-1)
    answer_t = int(full.argmax())
    truth = inputs.layout.true_letter
    return Baseline(
        probs,
        max(probs, key=probs.get),
        truth,
        answer_t=answer_t,
        answer_prob=float(full[answer_t]),
        answer_token=tokenizer.decode([answer_t]) if tokenizer is not None else None,
        true_t=inputs.option_token_ids.get(truth) if truth else None,
    )


def sweep(
    model,
    inputs: VideoLLMInput,
    target: Optional[TargetsLike] = None,
    *,
    settings: Optional[KnockoutSettings] = None,
    clean: Optional[CleanRun] = None,
    progress: bool = False,
    **options,
) -> List[dict]:
    """Knock out each pair of ``target`` in a window around every layer; one record per (pair, layer).

    The settings are one ``KnockoutSettings`` (``settings=``: every target it names is swept, in
    order), or keyword options that build one for ``target`` (the fields below; ``samples`` is
    ``"all"`` by default here, one sample at a time).

    Args:
        model: a ``HookedVideoLLM``.
        inputs: one prepared sample (the vision front end already ran in ``model.prepare``).
        target: a registered target name (``"cross-frame"``, ``"vql-to-ql"``,
            ``"question-and-options-to-last"``, ``"vq-to-true-opt"``), a ``Target``, or edge
            pairs (``"video->last"`` / ``EdgePair`` / a list) swept separately. Not with ``settings``.
        settings: a ``KnockoutSettings`` (instead of ``target`` and the options).
        window: layers per window, centred and clipped (Map the Flow's methods; paper: 9).
        method: ``"fast"`` (incremental, default) or ``"full"`` (a whole forward per condition);
            both give the same numbers.
        samples: a ``SAMPLE_MODES`` entry; returns ``[]`` for a sample the mode skips. ``"all"``
            by default here (one sample); dataset runs default to the paper's ``"correct"``.
        layers: centre layers to sweep (default: every layer).
        heads: knock out these heads only (default: every head).
        clean: a ``CleanRun`` of this input from the same engine (reuse across targets).
        progress: show a tqdm bar over conditions.
        self_edges: ``"block"`` (official: ``last->last`` blocks the last position's edge to
            itself) or ``"keep"`` (never block self edges; a difference from the paper).
        batch_conditions: with the fast engine, run up to this many conditions (pairs x centre
            layers sharing their first blocked query) as one batch
            (``videolens.knockout.batched``); 1 (default) runs them one by one. Same numbers up to
            float rounding; faster where single passes are launch-bound (GPUs).

    Returns:
        Records (dicts of JSON types): ``target``, ``pair``, ``key``, ``query``, ``relation``,
        ``heads``, ``n_blocked`` (edges per layer and head), ``layer`` (centre), ``layers`` (the
        window), ``window``; the official metric: ``base_answer_t`` / ``base_prob`` (the
        baseline's full-vocabulary argmax token and its probability), ``ko_prob`` (its probability
        after knockout), ``rel_change`` (percent), ``true_letter``, ``true_t``,
        ``base_true_prob``, ``ko_true_prob``, ``rel_change_true`` (percent), ``ko_answer_t`` /
        ``ko_max_prob`` (full-vocabulary argmax after knockout); the option-letter view:
        ``base_letter``, ``letter_base_prob``, ``letter_ko_prob``, ``letter_rel_change``,
        ``ko_letter``, ``base_probs`` / ``ko_probs`` (every option); ``self_edges``, ``method``.

    Raises:
        UnknownTargetError: unknown target name (lists the known ones).
        TypeError: an unknown option, or options beside ``settings``.
        ValueError: window larger than the model or < 1, unknown method or sample mode, centre
            layers or heads out of range, ``samples="correct"`` without a ground truth,
            ``batch_conditions`` < 1.
        videolens.hooked.edges.EmptyRowError: a pair would leave a query with no key (before running).
        KeyError: a pair names an unknown token group.
    """
    if not isinstance(inputs, VideoLLMInput):
        raise TypeError(f"inputs must be a VideoLLMInput (model.prepare(sample)), got {type(inputs).__name__}")
    inputs.one_row("knockout.sweep")
    if settings is None:
        settings = KnockoutSettings.from_options(target, options, samples="all")
    elif target is not None or options:
        raise TypeError("sweep: pass either settings= or a target and keyword options, not both")
    settings.check(model)
    n_layers = model.cfg.n_layers
    engine = get_engine(settings.method)
    samples, heads = settings.samples, None if settings.heads is None else list(settings.heads)
    layout = inputs.layout
    if samples != "all" and layout.true_letter is None:
        raise ValueError(f"samples={samples!r} needs inputs with a ground-truth answer")
    centres = list(range(n_layers)) if settings.layers is None else list(settings.layers)
    windows = {c: layer_window(c, settings.window, n_layers) for c in centres}
    # build and check every mask before running anything
    hooks = [(tgt, pair, KnockoutHook(blocked_mask(layout, pair, settings.self_edges), heads))
             for tgt in settings.targets for pair in tgt.pairs]

    if clean is None:
        clean = engine.clean(model, inputs)
    else:
        clean.check(model, inputs, engine.name)
    if not bool(torch.isfinite(clean.logits).all()):
        raise NonFiniteError("knockout.sweep: the clean run's logits hold NaN/inf")
    base = baseline(inputs, clean, getattr(model, "tokenizer", None))
    if not keep_sample(base, samples):
        return []
    truth = base.true_letter

    conditions = [(tgt, pair, hook, c) for tgt, pair, hook in hooks for c in centres]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(conditions), desc=f"knockout {'+'.join(settings.target_names)}", unit="cond",
                   leave=False)
    try:
        results = engine.run_many(model, clean, [(hook, windows[c]) for _, _, hook, c in conditions],
                                  settings.batch_conditions, on_done=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    read = _read_conditions(inputs, results, base.answer_t, base.true_t if truth else None)
    bad = [f"{pair.label}@{c}" for (_, pair, _, c), r in zip(conditions, read) if not r.finite]
    if bad:
        raise NonFiniteError(f"knockout.sweep: NaN/inf logits under {len(bad)} condition(s) ({', '.join(bad[:4])})")
    records = []
    for (tgt, pair, hook, c), r in zip(conditions, read):
        ko, ko_answer_t, p_answer, p_true = r.option_probs, r.argmax_t, r.answer_prob, r.true_prob
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
                "window": settings.window,
                "base_answer_t": base.answer_t,
                "base_answer": base.answer_token,
                "base_prob": base.answer_prob,
                "ko_prob": p_answer,
                "rel_change": relative_change(p_answer, base.answer_prob),
                "true_letter": truth,
                "true_t": base.true_t,
                "base_true_prob": base.probs[truth] if truth else None,
                "ko_true_prob": p_true,
                "rel_change_true": relative_change(p_true, base.probs[truth]) if truth else None,
                "ko_answer_t": ko_answer_t,
                "ko_max_prob": r.max_prob,
                "base_letter": base.letter,
                "letter_base_prob": base.probs[base.letter],
                "letter_ko_prob": ko[base.letter],
                "letter_rel_change": relative_change(ko[base.letter], base.probs[base.letter]),
                "ko_letter": max(ko, key=ko.get),
                "base_probs": base.probs,
                "ko_probs": ko,
                "self_edges": settings.self_edges,
                "method": engine.name,
            }
        )
    return records
