"""One dataset sample through knockout sweeps: load, baseline, sample filter, every target.

Used by ``videolens flow``; kept apart from the CLI so notebooks can loop over samples the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

from ..sources.data import VideoQA
from ..running.samples import SKIP_ERRORS, SampleOutcome, run_samples
from .engine import get_engine
from .settings import KnockoutSettings
from .sweep import baseline, keep_sample, sweep

__all__ = ["sweep_prepared", "run_dataset", "SKIP_ERRORS"]


def sweep_prepared(model, sample: VideoQA, inputs, settings: KnockoutSettings) -> SampleOutcome:
    """One prepared sample (``inputs``) of a dataset run: the clean forward once, the sample filter
    (``settings.samples``), then every target of ``settings``.

    Returns a ``videolens.running.samples.SampleOutcome``: ``status`` is ``"ok"``, ``"baseline_incorrect"`` /
    ``"baseline_correct"`` (the sample mode leaves it out: a wrong baseline in the paper's
    ``"correct"`` mode, a right one in ``"wrong"``), or ``"non_finite"`` (NaN/inf logits: never
    scored); ``records`` are the sweep records of every target (``task`` added), empty unless
    status is ok; ``message`` says why it was left out.
    """
    engine = get_engine(settings.method)
    clean = engine.clean(model, inputs)
    base = baseline(inputs, clean, getattr(model, "tokenizer", None))
    if not math.isfinite(base.answer_prob):
        return SampleOutcome("non_finite", message="the clean forward's answer probability is not finite (NaN/inf logits)")
    if not keep_sample(base, settings.samples):
        status = "baseline_correct" if settings.samples == "wrong" else "baseline_incorrect"
        return SampleOutcome(status, message=f"sample mode {settings.samples!r}: answered token {base.answer_t} "
                             f"({base.answer_token!r}), letter {base.letter}, truth {base.true_letter}")
    records = sweep(model, inputs, settings=settings.replace(samples="all"), clean=clean)
    return SampleOutcome("ok", [{"task": sample.task, **r} for r in records])


def run_dataset(model, samples: Sequence[VideoQA], settings: KnockoutSettings, out, *,
                num_frames: Optional[int] = None, config: Optional[dict] = None, progress: bool = True, log=None,
                retry_skipped: bool = True) -> List[dict]:
    """Knockout sweeps over a dataset into ``out/records.jsonl``, resumable (``videolens flow``'s runner).

    Each sample goes through ``sweep_prepared`` in ``videolens.running.samples.run_samples`` (the loop every
    dataset run shares); its records (or its skip status) are written as it
    finishes, and samples already finished in ``out`` are not run again. Figures and summaries are
    left to the caller (``videolens.knockout.summary``, ``videolens.plots.knockout``).

    Args:
        model: a ``HookedVideoLLM``.
        samples: the dataset (``videolens.sources.data.load_tvbench``).
        settings: the ``KnockoutSettings`` (targets, window, sample mode, heads, ...), checked
            against the model once here.
        out: the output folder.
        num_frames: frames per clip (None: the model's default).
        config: the run's settings stored in the records header (a resume with other settings is
            refused by ``videolens.running.records.RecordWriter``); ``settings.header()``, the layer count and
            the model's fingerprint (``model.fingerprint``) are added. Put what identifies the data
            here (the CLI stores ``videolens.fingerprint.data_fingerprint``).
        progress: show a tqdm bar.
        log: ``log(message)`` for skipped samples (default: tqdm.write to stderr).
        retry_skipped: run again samples an earlier run skipped (missing video, unreadable file).

    Returns:
        The records of ``samples`` in ``out`` (this run's and earlier finished ones), each with
        ``sample_id``.

    Raises:
        videolens.running.records.RunConfigMismatch: ``out`` holds a run with other settings.
        ValueError: settings the model cannot run (``KnockoutSettings.check``).
    """
    import sys

    from tqdm.auto import tqdm

    from ..running.records import RecordWriter, read_records

    if not isinstance(settings, KnockoutSettings):
        raise TypeError(f"run_dataset: settings must be a KnockoutSettings, got {type(settings).__name__}")
    settings.check(model)
    out = Path(out)
    cfg = dict(config or {})
    cfg.setdefault("model_fingerprint", getattr(model, "fingerprint", None))  # new weights never mix in
    cfg.update(settings.header(), n_layers=model.cfg.n_layers)
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    with RecordWriter(out / "records.jsonl", cfg, retry_skipped=retry_skipped) as writer:
        run_samples(model, samples, writer, lambda sample, inputs: sweep_prepared(model, sample, inputs, settings),
                    num_frames=num_frames, desc=f"flow {','.join(settings.target_names)}", progress=progress,
                    sample_records=False, log=log)
    wanted = {s.sample_id for s in samples}
    return [r for r in read_records(out / "records.jsonl") if r["sample_id"] in wanted]
