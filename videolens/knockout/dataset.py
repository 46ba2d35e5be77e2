"""One dataset sample through knockout sweeps: load, baseline, sample filter, every target.

Used by ``videolens flow``; kept apart from the CLI so notebooks can loop over samples the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

from ..data import VideoQA
from ..runner import SKIP_ERRORS, SampleOutcome, prepare_or_skip, run_samples
from .engine import get_engine
from .sweep import SAMPLE_MODES, baseline, keep_sample, sweep
from .targets import Target

__all__ = ["SampleResult", "sweep_sample", "sweep_prepared", "run_dataset", "SKIP_ERRORS"]



SampleResult = SampleOutcome
"""Outcome of one sample (``videolens.runner.SampleOutcome``): ``status`` is ``"ok"``,
``"baseline_incorrect"`` / ``"baseline_correct"`` (the sample mode leaves it out: a wrong baseline
in the paper's ``"correct"`` mode, a right one in ``"wrong"``), ``"missing_video"``,
``"skipped: <error>"`` (unreadable video, bad start/end, prompt too long, ...), or ``"non_finite"``
(NaN/inf logits: never scored); ``records`` are the sweep records of every target (``task``
added), empty unless status is ok; ``message`` says why it was left out."""


def sweep_sample(model, sample: VideoQA, targets: Sequence[Target], window: int = 9, method: str = "fast",
                 samples: str = "correct", num_frames: Optional[int] = None, heads: Optional[Sequence[int]] = None,
                 self_edges: str = "block", batch_conditions: int = 1) -> SampleResult:
    """Prepare one sample (vision front end once), run its clean forward once, and sweep every target.

    ``batch_conditions``: knockout conditions per batch (``videolens.knockout.sweep``); a speed
    setting only (the numbers agree up to float rounding), so it is not part of a run's identity.

    A sample that cannot run (``videolens.runner.prepare_or_skip``) gives a skipped
    ``SampleResult``, a non-finite clean forward a ``"non_finite"`` one (never an exception).
    Other errors propagate.
    """
    if samples not in SAMPLE_MODES:
        raise ValueError(f"samples must be one of {SAMPLE_MODES}, got {samples!r}")
    inputs, status, message = prepare_or_skip(model, sample, num_frames)
    if inputs is None:
        return SampleResult(status, message=message)
    return sweep_prepared(model, sample, inputs, targets, window=window, method=method, samples=samples, heads=heads,
                          self_edges=self_edges, batch_conditions=batch_conditions)


def sweep_prepared(model, sample: VideoQA, inputs, targets: Sequence[Target], window: int = 9, method: str = "fast",
                   samples: str = "correct", heads: Optional[Sequence[int]] = None, self_edges: str = "block",
                   batch_conditions: int = 1) -> SampleResult:
    """``sweep_sample`` for a sample already prepared (``inputs``): the clean forward once, the sample
    filter, every target."""
    engine = get_engine(method)
    clean = engine.clean(model, inputs)
    base = baseline(inputs, clean, getattr(model, "tokenizer", None))
    if not math.isfinite(base.answer_prob):
        return SampleResult("non_finite", message="the clean forward's answer probability is not finite (NaN/inf logits)")
    if not keep_sample(base, samples):
        status = "baseline_correct" if samples == "wrong" else "baseline_incorrect"
        return SampleResult(status, message=f"sample mode {samples!r}: answered token {base.answer_t} "
                            f"({base.answer_token!r}), letter {base.letter}, truth {base.true_letter}")
    records = []
    for t in targets:
        for r in sweep(model, inputs, t, window=window, method=method, samples="all", heads=heads, clean=clean,
                       self_edges=self_edges, batch_conditions=batch_conditions):
            records.append({"task": sample.task, **r})
    return SampleResult("ok", records)


def run_dataset(model, samples: Sequence[VideoQA], targets: Sequence[Target], out, window: int = 9,
                method: str = "fast", samples_mode: str = "correct", num_frames: Optional[int] = None,
                heads: Optional[Sequence[int]] = None, self_edges: str = "block", config: Optional[dict] = None,
                progress: bool = True, log=None, retry_skipped: bool = True, batch_conditions: int = 1) -> List[dict]:
    """Knockout sweeps over a dataset into ``out/records.jsonl``, resumable (``videolens flow``'s runner).

    Each sample goes through ``sweep_prepared`` in ``videolens.runner.run_samples`` (the loop every
    dataset run shares); its records (or its skip status) are written as it
    finishes, and samples already finished in ``out`` are not run again. Figures and summaries are
    left to the caller (``videolens.knockout.summary``, ``videolens.plots.knockout``).

    Args:
        model: a ``HookedVideoLLM``.
        samples: the dataset (``videolens.data.load_tvbench``).
        targets: knockout targets (``get_target``).
        out: the output folder.
        window, method, samples_mode, num_frames, heads, self_edges, batch_conditions: as
            ``sweep_sample``.
        config: the run's settings stored in the records header (a resume with other settings is
            refused by ``videolens.runs.RecordWriter``); targets, window, mode and the model's
            fingerprint (``model.fingerprint``, set by ``from_pretrained``) are added. Put what
            identifies the data here (the CLI stores ``videolens.fingerprint.data_fingerprint``).
        progress: show a tqdm bar.
        log: ``log(message)`` for skipped samples (default: tqdm.write to stderr).
        retry_skipped: run again samples an earlier run skipped (missing video, unreadable file).

    Returns:
        The records of ``samples`` in ``out`` (this run's and earlier finished ones), each with
        ``sample_id``.

    Raises:
        videolens.runs.RunConfigMismatch: ``out`` holds a run with other settings.
    """
    import sys

    from tqdm.auto import tqdm

    from ..runs import RecordWriter, read_records

    out = Path(out)
    names = [t.name for t in targets]
    cfg = dict(config or {})
    cfg.setdefault("model_fingerprint", getattr(model, "fingerprint", None))  # new weights never mix in
    cfg.update(targets=names, window=window, samples=samples_mode, self_edges=self_edges, heads=heads,
               n_layers=model.cfg.n_layers)
    if samples_mode not in SAMPLE_MODES:
        raise ValueError(f"samples must be one of {SAMPLE_MODES}, got {samples_mode!r}")
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    with RecordWriter(out / "records.jsonl", cfg, retry_skipped=retry_skipped) as writer:
        run_samples(model, samples, writer,
                    lambda sample, inputs: sweep_prepared(model, sample, inputs, targets, window=window, method=method,
                                                          samples=samples_mode, heads=heads, self_edges=self_edges,
                                                          batch_conditions=batch_conditions),
                    num_frames=num_frames, desc=f"flow {','.join(names)}", progress=progress, sample_records=False,
                    log=log)
    wanted = {s.sample_id for s in samples}
    return [r for r in read_records(out / "records.jsonl") if r["sample_id"] in wanted]
