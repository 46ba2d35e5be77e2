"""Multiple-choice VideoQA samples and TVBench / MVBench-format annotation files."""

from __future__ import annotations

import json
import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..errors import VideolensError
from .video import DEFAULT_NUM_FRAMES, Video, load_video

__all__ = ["VideoQA", "load_tvbench", "option_letters", "AnnotationError",
           "InvalidSampleError", "PLACEHOLDER_STRINGS"]

option_letters = string.ascii_uppercase

PLACEHOLDER_STRINGS = ("<image>", "<video>", "<img>", "</img>", "<IMG_CONTEXT>", "<|image_pad|>", "<|video_pad|>",
                       "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>")
"""Video/image placeholder strings of the supported families: in a question or an option they
would become a placeholder token (and a video slot) instead of text."""

_OPTION_LINE = re.compile(r"[\r\n]\s*\(?[A-Z]\)")


class AnnotationError(VideolensError, ValueError):
    """A malformed entry in an annotation file (the message names the file and the entry index)."""


class InvalidSampleError(VideolensError, ValueError):
    """A sample whose entry cannot be run (a bad start/end): raised when it is loaded, so a dataset
    run records that one sample as skipped and goes on."""


def _check_text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    if not value.strip():
        raise ValueError(f"{name} is empty")
    hit = next((p for p in PLACEHOLDER_STRINGS if p in value), None)
    if hit:
        raise ValueError(f"{name} contains the placeholder string {hit!r}, which would become a video slot")
    return value


def check_times(start, end) -> tuple:
    """``(start, end)`` as floats or None.

    Raises:
        ValueError: not numbers, not finite, negative, or start >= end.
    """
    out = []
    for name, v in (("start", start), ("end", end)):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool):
            raise ValueError(f"{name} must be a number of seconds, got {v!r}")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number of seconds, got {v!r}") from None
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"{name} must be a finite, non-negative number of seconds, got {v!r}")
        out.append(f)
    if out[0] is not None and out[1] is not None and out[0] >= out[1]:
        raise ValueError(f"start={out[0]} must be before end={out[1]}")
    return tuple(out)


@dataclass
class VideoQA:
    """One multiple-choice VideoQA sample.

    Attributes:
        video: path of the video file, or an already decoded ``Video``.
        question: the question text.
        candidates: 2 to 26 answer options, in the order they are shown as (A), (B), ...
        answer: the right option; must equal one of ``candidates``.
        start, end: optional window of the clip in seconds.
        task: optional task name (for example ``"action_sequence"``).
        question_id: optional identifier from the annotation file.
        sampler: frame sampling rule (``videolens.sources.video.load_video``): ``"uniform"``, or
            ``"longvideobench"`` (with ``extra["duration"]``, the annotated duration).
        option_format: how the prompt writes an option line (``"({letter}) {text}"``; Video-MME's
            own options read ``"{letter}. {text}"``).
        options_end: text the prompt writes after the last option (Video-MME: ``"\n"``).
        open_ended: a question without options (VCGBench): ``candidates`` is empty, ``answer`` is the
            reference text, the prompt shows the question alone; only open-ended analyses
            (``videolens flow --open-ended``) run it.
        invalid: why this sample cannot run (set by ``load_tvbench`` for a bad start/end);
            ``load`` then raises ``InvalidSampleError`` so a dataset run skips just this sample.

    Raises:
        ValueError: the question or an option is not a string, is empty or holds a placeholder
            string (``PLACEHOLDER_STRINGS``); candidates is a string, or holds duplicates or an
            option line (``"...\n(C) ..."``); fewer than 2 or more than 26 candidates; the answer
            is not one of them; start/end not finite non-negative seconds with start < end.
    """

    video: Union[str, os.PathLike, Video]
    question: str
    candidates: List[str]
    answer: str
    start: Optional[float] = None
    end: Optional[float] = None
    task: Optional[str] = None
    question_id: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    invalid: Optional[str] = None
    sampler: str = "uniform"
    option_format: str = "({letter}) {text}"
    options_end: str = ""
    open_ended: bool = False

    def __post_init__(self) -> None:
        _check_text("question", self.question)
        if isinstance(self.candidates, (str, bytes)) or not isinstance(self.candidates, (list, tuple)):
            raise ValueError(f"candidates must be a list of strings, got {type(self.candidates).__name__} "
                             f"{self.candidates!r}")
        self.candidates = list(self.candidates)
        if self.open_ended:
            if self.candidates:
                raise ValueError("an open-ended sample has no candidates")
            _check_text("answer", self.answer)
            if self.invalid is None:
                self.start, self.end = check_times(self.start, self.end)
            return
        for i, c in enumerate(self.candidates):
            _check_text(f"candidate {i}", c)
            if _OPTION_LINE.search(c):
                raise ValueError(f"candidate {i} ({c!r}) holds a line break followed by an option label, "
                                 "which would forge an option line in the prompt")
        stripped = [c.strip() for c in self.candidates]  # "left" and "left " read the same in the prompt
        dup = sorted({c for c in self.candidates if stripped.count(c.strip()) > 1})
        if dup:
            raise ValueError(f"duplicate candidates {dup}: each option must differ (beyond spaces at either end)")
        if self.invalid is None:
            self.start, self.end = check_times(self.start, self.end)
        if len(self.candidates) < 2:
            raise ValueError(f"a VideoQA needs at least 2 candidates, got {len(self.candidates)}")
        if len(self.candidates) > len(option_letters):
            raise ValueError(f"at most {len(option_letters)} candidates, got {len(self.candidates)}")
        if self.answer not in self.candidates:
            raise ValueError(f"answer {self.answer!r} is not among the candidates {self.candidates!r}")

    @property
    def letters(self) -> List[str]:
        """Option letters in order: ``["A", "B", ...]``."""
        return [option_letters[i] for i in range(len(self.candidates))]

    @property
    def answer_index(self) -> Optional[int]:
        return None if self.open_ended else self.candidates.index(self.answer)

    @property
    def answer_letter(self) -> Optional[str]:
        """The right option's letter (None for an open-ended sample)."""
        return None if self.open_ended else option_letters[self.answer_index]

    @property
    def sample_id(self) -> str:
        """A stable id for records: the question_id, else video name + question."""
        if self.question_id:
            return str(self.question_id)
        name = self.video.source if isinstance(self.video, Video) else os.fspath(self.video)
        return f"{Path(str(name)).name}::{self.question}"

    def load(self, num_frames: int = DEFAULT_NUM_FRAMES, sampler: Optional[str] = None) -> Video:
        """Decode the video (or return it when already decoded; ``num_frames`` must then match)
        with ``sampler`` (``videolens.sources.video.SAMPLERS``), None meaning the sample's own."""
        if self.invalid:
            raise InvalidSampleError(f"{self.sample_id}: {self.invalid}")
        if isinstance(self.video, Video):
            if self.video.num_frames != num_frames:
                raise ValueError(
                    f"sample holds a decoded video with {self.video.num_frames} frames, {num_frames} asked"
                )
            return self.video
        return load_video(self.video, num_frames=num_frames, start=self.start, end=self.end, sampler=sampler or self.sampler,
                          duration=self.extra.get("duration"))


_REQUIRED = ("video", "question", "candidates", "answer")


def read_annotation_json(path: Path):
    """The parsed content of an annotation file (every format's loader reads it this way).

    Raises:
        FileNotFoundError: no such file.
        AnnotationError: a folder, or not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"annotation file not found: {path}")
    if path.is_dir():
        raise AnnotationError(f"{path} is a folder; expected a JSON annotation file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path} is not valid JSON: {exc}") from exc


def check_entry(entry, where: str, required: Sequence[str]) -> None:
    """Raise ``AnnotationError`` at ``where`` unless ``entry`` is an object with every ``required`` field."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(entry).__name__}")
    missing = [k for k in required if k not in entry]
    if missing:
        raise AnnotationError(f"{where}: missing field(s) {missing}")


def claim_id(seen: Dict[str, int], sample_id: str, index: int, path: Path, field_name: str) -> None:
    """Record ``sample_id`` as entry ``index``'s; raise ``AnnotationError`` naming both entries when
    an earlier entry of ``path`` has it."""
    if sample_id in seen:
        raise AnnotationError(f"{path}: entries {seen[sample_id]} and {index} have the same {field_name} {sample_id!r}")
    seen[sample_id] = index


def load_tvbench(
    json_path: Union[str, os.PathLike], video_root: Union[str, os.PathLike], task: Optional[str] = None
) -> List[VideoQA]:
    """Read an MVBench / TVBench-format annotation file.

    The file is a JSON list of objects with ``video`` (relative to ``video_root``), ``question``,
    ``candidates`` (2+ strings) and ``answer`` (one of the candidates), and optionally ``start``
    and ``end`` (seconds) and ``question_id``. Video files are not opened here.

    Args:
        json_path: the annotation file.
        video_root: folder the ``video`` entries are relative to.
        task: task name to attach; defaults to the file's stem (``action_sequence`` for
            ``action_sequence.json``).

    Raises:
        FileNotFoundError: ``json_path`` does not exist.
        AnnotationError: the path is a folder or not a JSON list, an entry misses a field or
            fails ``VideoQA``'s checks (question and options type-checked, no placeholder strings,
            forged option lines or duplicate options, 2-26 candidates, answer among them), or two
            entries share a question_id; the message names the file and the entry's index.

    An entry with a bad start/end (not a finite number, start >= end) is kept with ``invalid``
    set: loading that sample raises ``InvalidSampleError`` and a dataset run records it as skipped.
    """
    json_path = Path(json_path)
    entries = read_annotation_json(json_path)
    if not isinstance(entries, list):
        raise AnnotationError(f"{json_path}: expected a JSON list of entries, got {type(entries).__name__}")
    task = task or json_path.stem.replace("_sample", "")
    samples: List[VideoQA] = []
    first_entry: Dict[str, int] = {}
    for i, e in enumerate(entries):
        where = f"{json_path}: entry {i}"
        check_entry(e, where, _REQUIRED)
        if not isinstance(e["video"], str) or not e["video"]:
            raise AnnotationError(f"{where}: 'video' must be a file name, got {e['video']!r}")
        invalid = None
        try:
            start, end = check_times(e.get("start"), e.get("end"))
        except ValueError as exc:  # this sample's own skip, not the run's end
            start, end, invalid = None, None, f"{where}: {exc}"
        qid = e.get("question_id")
        if qid is not None and not isinstance(qid, (str, int)):
            raise AnnotationError(f"{where}: question_id must be a string or an integer, got {qid!r}")
        qid = str(qid) if qid is not None and str(qid) else f"{task}_{i}"
        claim_id(first_entry, qid, i, json_path, "question_id")
        try:
            sample = VideoQA(
                video=str(Path(video_root) / e["video"]),
                question=e["question"],
                candidates=e["candidates"],
                answer=e["answer"],
                start=start,
                end=end,
                task=task,
                question_id=qid,
                extra={k: v for k, v in e.items() if k not in (*_REQUIRED, "start", "end", "question_id")},
                invalid=invalid,
            )
        except ValueError as exc:
            raise AnnotationError(f"{where}: {exc}") from exc
        samples.append(sample)
    return samples
