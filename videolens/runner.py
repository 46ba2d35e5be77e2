"""The per-sample loop of dataset runs: prepare each unfinished sample, analyse it, write its records
(resumable through ``videolens.runs.RecordWriter``). ``videolens lens`` and ``videolens genprob``
are thin wrappers over it; ``videolens.knockout.run_dataset`` shares its skip rule.

Example::

    from videolens.runner import run_samples
    with RecordWriter(out / "genprob.jsonl", config) as w:
        run_samples(model, samples, w, lambda sample, inputs: [my_record(model, inputs)])
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from .data import VideoQA
from .inputs import PromptTokenizationError, VideoLLMInput
from .model import ContextLengthError
from .video import VideoDecodeError

__all__ = ["SKIP_ERRORS", "run_samples", "sample_record"]

SKIP_ERRORS = (FileNotFoundError, VideoDecodeError, ContextLengthError, PromptTokenizationError)
"""Per-sample problems that skip the sample (recorded with a status) instead of ending a run."""


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

    A sample whose video cannot be read, or whose prompt is too long or cannot be tokenized
    (``SKIP_ERRORS``), is marked done with status ``"error"`` and an ``error`` record.

    Returns:
        counts ``{"done": ..., "skipped": ... (finished earlier), "errors": ...}``.
    """
    from tqdm.auto import tqdm

    counts = {"done": 0, "skipped": 0, "errors": 0}
    for sample in tqdm(samples, desc=desc, unit="sample", disable=not progress):
        sid = sample.sample_id
        if writer.is_done(sid):
            counts["skipped"] += 1
            continue
        try:
            inputs = model.prepare(sample, num_frames=num_frames)
        except SKIP_ERRORS as exc:
            tqdm.write(f"{sid}: skipped: {exc}")
            writer.write_sample(sid, [{"kind": "error", "message": str(exc)}], status="error")
            counts["errors"] += 1
            continue
        writer.write_sample(sid, [sample_record(sample, inputs), *fn(sample, inputs)])
        counts["done"] += 1
    return counts
