"""One dataset sample through knockout sweeps: load, baseline, sample filter, every target.

Used by ``videolens flow``; kept apart from the CLI so notebooks can loop over samples the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from ..data import VideoQA
from ..inputs import PromptTokenizationError
from ..model import ContextLengthError
from ..video import VideoDecodeError
from .engine import get_engine
from .sweep import SAMPLE_MODES, baseline, keep_sample, sweep
from .targets import Target

__all__ = ["SampleResult", "sweep_sample", "SKIP_ERRORS"]

# per-sample problems that skip the sample (recorded with a status) instead of stopping a run
SKIP_ERRORS = (FileNotFoundError, VideoDecodeError, ContextLengthError, PromptTokenizationError)


@dataclass
class SampleResult:
    """Outcome of one sample.

    Attributes:
        status: ``"ok"``, ``"baseline_incorrect"`` / ``"baseline_correct"`` (the sample mode
            leaves it out: a wrong baseline in the paper's ``"correct"`` mode, a right one in ``"wrong"``),
            ``"missing_video"``, or ``"skipped: <error>"`` (unreadable video, prompt too long, ...).
        records: sweep records of every target (``task`` added), empty unless status is ok.
        message: why it was skipped.
    """

    status: str
    records: List[dict] = field(default_factory=list)
    message: str = ""


def sweep_sample(model, sample: VideoQA, targets: Sequence[Target], window: int = 9, method: str = "fast",
                 samples: str = "correct", num_frames: Optional[int] = None, heads: Optional[Sequence[int]] = None,
                 self_edges: str = "block") -> SampleResult:
    """Prepare one sample (vision front end once), run its clean forward once, and sweep every target.

    A missing or unreadable video, or a prompt longer than the context, gives a skipped
    ``SampleResult`` (never an exception). Other errors propagate.
    """
    if samples not in SAMPLE_MODES:
        raise ValueError(f"samples must be one of {SAMPLE_MODES}, got {samples!r}")
    if isinstance(sample.video, (str, Path)) and not Path(sample.video).exists():
        return SampleResult("missing_video", message=f"video not found: {sample.video}")
    try:
        inputs = model.prepare(sample, num_frames=num_frames)
    except SKIP_ERRORS as exc:
        return SampleResult(f"skipped: {type(exc).__name__}", message=str(exc))
    engine = get_engine(method)
    clean = engine.clean(model, inputs)
    base = baseline(inputs, clean, getattr(model, "tokenizer", None))
    if not keep_sample(base, samples):
        status = "baseline_correct" if samples == "wrong" else "baseline_incorrect"
        return SampleResult(status, message=f"sample mode {samples!r}: answered token {base.answer_t} "
                            f"({base.answer_token!r}), letter {base.letter}, truth {base.true_letter}")
    records = []
    for t in targets:
        for r in sweep(model, inputs, t, window=window, method=method, samples="all", heads=heads, clean=clean,
                       self_edges=self_edges):
            records.append({"task": sample.task, **r})
    return SampleResult("ok", records)
