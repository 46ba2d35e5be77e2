"""The per-sample loop of dataset runs: prepare each unfinished sample, analyse it, write its records
(resumable through ``videolens.running.records.RecordWriter``). Every dataset run goes through it:
``videolens.knockout.run_dataset`` (flow), ``videolens.pathways.evaluate``, and the ``lens``,
``genprob``, open-ended and attribution commands.

Example::

    from videolens.running.samples import run_samples
    with RecordWriter(out / "genprob.jsonl", config) as w:
        run_samples(model, samples, w, lambda sample, inputs: [my_record(model, inputs)])
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..sources.data import InvalidSampleError, VideoQA
from ..fingerprint import video_stamp
from ..prompting.inputs import PromptTokenizationError, VideoLLMInput
from ..errors import ContextLengthError, NonFiniteError, non_finite_fields
from ..sources.video import VideoDecodeError, VideoWindowError

__all__ = ["SKIP_ERRORS", "SampleOutcome", "FILTERED", "MemoryWriter", "run_samples", "sample_record", "prepare_or_skip"]

SKIP_ERRORS = (FileNotFoundError, VideoDecodeError, VideoWindowError, ContextLengthError, PromptTokenizationError, InvalidSampleError)
"""Per-sample problems that skip the sample (recorded with a status) instead of ending a run."""


def prepare_or_skip(model, sample: VideoQA, num_frames: Optional[int] = None
                    ) -> Tuple[Optional[VideoLLMInput], str, str]:
    """``(inputs, "ok", "")``, or ``(None, status, message)`` for a sample that cannot run:
    ``"missing_video"`` (no file), ``"skipped: <Error>"`` (``SKIP_ERRORS``: unreadable video, bad
    start/end window (``VideoWindowError``: past the video's end, ...), prompt too long or not
    tokenizable). Every dataset loop uses this one rule, and
    ``videolens.running.records.is_skip_status`` marks both statuses for a retry on resume."""
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


@dataclass
class SampleOutcome:
    """What an analysis made of one sample, when it is more than records: its ``status`` (``"ok"``,
    a ``FILTERED`` status, ``"non_finite"``, ...), its records, and a message."""

    status: str
    records: List[dict] = field(default_factory=list)
    message: str = ""


FILTERED = ("baseline_incorrect", "baseline_correct")
"""Statuses of samples a run leaves out on purpose (a sample mode's filter), not problems."""


class MemoryWriter:
    """A ``RecordWriter`` stand-in that keeps records in memory (a run without an output file)."""

    def __init__(self):
        self.done: set = set()
        self._records: List[dict] = []

    def is_done(self, sample_id: str, video_stamp: Optional[str] = None) -> bool:
        return sample_id in self.done

    def write_sample(self, sample_id: str, records, status: str = "ok", message: Optional[str] = None,
                     video_stamp: Optional[str] = None) -> str:
        records = list(records)
        if non_finite_fields(records):
            status, records = "non_finite", []
        self._records += [{"sample_id": sample_id, **r} for r in records]
        self.done.add(sample_id)
        return status

    def records(self) -> List[dict]:
        return list(self._records)


def run_samples(model, samples: Sequence[VideoQA], writer,
                fn: Callable[[VideoQA, VideoLLMInput], Union[List[dict], SampleOutcome]],
                num_frames: Optional[int] = None, desc: str = "samples", progress: bool = True,
                sample_records: bool = True, log: Optional[Callable[[str], object]] = None) -> Dict[str, int]:
    """Prepare each unfinished sample and write its records: ``[sample_record, *fn(sample, inputs)]``.

    Args:
        writer: a ``videolens.running.records.RecordWriter`` (finished samples are skipped: resumable) or a
            ``MemoryWriter``.
        fn: the analysis of one prepared sample: its records, or a ``SampleOutcome`` (a status of its
            own, e.g. ``FILTERED``, with records and a message).
        sample_records: open each sample's records with ``sample_record`` and record a skip as an
            ``error`` record (lens, genprob); False writes ``fn``'s records only (flow, pathways).
        log: ``log(message)`` for samples that did not run as they should (default: ``tqdm.write``
            to stderr, so stdout keeps results only).

    Each sample's video stamp (size and modification time) is stored with its records; on resume a
    sample whose video file changed since is run again. A sample that cannot run
    (``prepare_or_skip``) is marked done with its skip status; one whose
    analysis gives non-finite numbers (``NonFiniteError``, or NaN/inf in its records) gets status
    ``"non_finite"`` (``RecordWriter.write_sample``).

    Returns:
        counts ``{"done": ..., "filtered": ..., "skipped": ... (finished earlier), "errors": ... (skips
        and non-finite)}``.
    """
    from tqdm.auto import tqdm

    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    counts = {"done": 0, "filtered": 0, "skipped": 0, "errors": 0}
    bar = tqdm(samples, desc=desc, unit="sample", disable=not progress)
    for sample in bar:
        sid = sample.sample_id
        stamp = video_stamp(sample.video)  # a video replaced since a sample ran reruns that sample
        if writer.is_done(sid, video_stamp=stamp):
            counts["skipped"] += 1
            continue
        inputs, status, message = prepare_or_skip(model, sample, num_frames)
        if inputs is None:
            log(f"warning: {sid}: {status}: {message}")
            writer.write_sample(sid, [{"kind": "error", "message": message}] if sample_records else [],
                                status=status, message=message, video_stamp=stamp)
            counts["errors"] += 1
            continue
        try:
            out = fn(sample, inputs)
        except NonFiniteError as exc:
            out = SampleOutcome("non_finite", message=str(exc))
        if not isinstance(out, SampleOutcome):
            out = SampleOutcome("ok", list(out))
        records = ([sample_record(sample, inputs)] if sample_records and out.status == "ok" else []) + out.records
        status = writer.write_sample(sid, records, status=out.status, message=out.message or None, video_stamp=stamp)
        if status == "ok":
            counts["done"] += 1
        elif status in FILTERED:
            counts["filtered"] += 1
        else:
            log(f"warning: {sid}: {status}" + (f": {out.message}" if out.message else ""))
            counts["errors"] += 1
        bar.set_postfix(ok=counts["done"], skipped=counts["filtered"] + counts["errors"])
    return counts
