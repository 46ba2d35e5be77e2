"""The per-sample loop of dataset runs: prepare each unfinished sample, analyse it, write its records
(resumable through ``videolens.runs.RecordWriter``). ``videolens lens`` and ``videolens genprob``
are thin wrappers over it; ``videolens.knockout.run_dataset`` shares its skip rule.

Example::

    from videolens.runner import run_samples
    with RecordWriter(out / "genprob.jsonl", config) as w:
        run_samples(model, samples, w, lambda sample, inputs: [my_record(model, inputs)])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .data import InvalidSampleError, VideoQA
from .inputs import PromptTokenizationError, VideoLLMInput
from .model import ContextLengthError, NonFiniteError
from .video import VideoDecodeError

__all__ = ["SKIP_ERRORS", "run_samples", "sample_record", "prepare_or_skip"]

SKIP_ERRORS = (FileNotFoundError, VideoDecodeError, ContextLengthError, PromptTokenizationError, InvalidSampleError)
"""Per-sample problems that skip the sample (recorded with a status) instead of ending a run."""


def prepare_or_skip(model, sample: VideoQA, num_frames: Optional[int] = None
                    ) -> Tuple[Optional[VideoLLMInput], str, str]:
    """``(inputs, "ok", "")``, or ``(None, status, message)`` for a sample that cannot run:
    ``"missing_video"`` (no file), ``"skipped: <Error>"`` (``SKIP_ERRORS``: unreadable video, bad
    start/end, prompt too long or not tokenizable). Every dataset loop uses this one rule, and
    ``videolens.runs.is_skip_status`` marks both statuses for a retry on resume."""
    if isinstance(sample.video, (str, Path)) and not Path(sample.video).exists():
        return None, "missing_video", f"video not found: {sample.video}"
    try:
        return model.prepare(sample, num_frames=num_frames), "ok", ""
    except SKIP_ERRORS as exc:
        return None, f"skipped: {type(exc).__name__}", str(exc)


def sample_record(sample: VideoQA, inputs: VideoLLMInput) -> Dict[str, Any]:
    """The ``kind: "sample"`` record that opens a sample's records: where it came from and its layout."""
    return {
        "kind": "sample",
        "video": str(sample.video),
        "start": sample.start,
        "end": sample.end,
        "task": sample.task,
        "question": sample.question,
        "true_letter": inputs.layout.true_letter,
        "video_grid": list(inputs.layout.video_grid),
    }


def run_samples(model, samples: Sequence[VideoQA], writer, fn: Callable[[VideoQA, VideoLLMInput], List[dict]],
                num_frames: Optional[int] = None, desc: str = "samples", progress: bool = True) -> Dict[str, int]:
    """Prepare each unfinished sample and write ``[sample_record, *fn(sample, inputs)]``.

    A sample that cannot run (``prepare_or_skip``) is marked done with its skip status and an
    ``error`` record; one whose analysis gives non-finite numbers (``NonFiniteError``, or NaN/inf in
    its records) gets status ``"non_finite"`` (``RecordWriter.write_sample``).

    Returns:
        counts ``{"done": ..., "skipped": ... (finished earlier), "errors": ... (skips and non-finite)}``.
    """
    from tqdm.auto import tqdm

    counts = {"done": 0, "skipped": 0, "errors": 0}
    for sample in tqdm(samples, desc=desc, unit="sample", disable=not progress):
        sid = sample.sample_id
        if writer.is_done(sid):
            counts["skipped"] += 1
            continue
        inputs, status, message = prepare_or_skip(model, sample, num_frames)
        if inputs is None:
            tqdm.write(f"{sid}: {status}: {message}")
            writer.write_sample(sid, [{"kind": "error", "message": message}], status=status, message=message)
            counts["errors"] += 1
            continue
        try:
            records = [sample_record(sample, inputs), *fn(sample, inputs)]
        except NonFiniteError as exc:
            records, status, message = [], "non_finite", str(exc)
        status = writer.write_sample(sid, records, status=status, message=message or None)
        if status != "ok":
            tqdm.write(f"{sid}: {status}")
            counts["errors"] += 1
        else:
            counts["done"] += 1
    return counts
