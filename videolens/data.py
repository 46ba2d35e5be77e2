"""Multiple-choice VideoQA samples and TVBench / MVBench-format annotation files."""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import VideolensError
from .video import Video, load_video

__all__ = ["VideoQA", "load_tvbench", "option_letters", "AnnotationError"]

option_letters = string.ascii_uppercase


class AnnotationError(VideolensError, ValueError):
    """A malformed entry in an annotation file (the message names the file and the entry index)."""


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

    def __post_init__(self) -> None:
        self.candidates = list(self.candidates)
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
    def answer_index(self) -> int:
        return self.candidates.index(self.answer)

    @property
    def answer_letter(self) -> str:
        return option_letters[self.answer_index]

    @property
    def sample_id(self) -> str:
        """A stable id for records: the question_id, else video name + question."""
        if self.question_id:
            return str(self.question_id)
        name = self.video.source if isinstance(self.video, Video) else os.fspath(self.video)
        return f"{Path(str(name)).name}::{self.question}"

    def load(self, num_frames: int = 8) -> Video:
        """Decode the video (or return it when already decoded; ``num_frames`` must then match)."""
        if isinstance(self.video, Video):
            if self.video.num_frames != num_frames:
                raise ValueError(
                    f"sample holds a decoded video with {self.video.num_frames} frames, {num_frames} asked"
                )
            return self.video
        return load_video(self.video, num_frames=num_frames, start=self.start, end=self.end)


_REQUIRED = ("video", "question", "candidates", "answer")


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
        AnnotationError: the file is not a JSON list, or an entry misses a field, has fewer than
            2 candidates, an answer not among its candidates, or a bad start/end; the message
            names the file and the entry's index.
    """
    json_path = Path(json_path)
    if not json_path.exists():
        raise FileNotFoundError(f"annotation file not found: {json_path}")
    try:
        entries = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{json_path} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise AnnotationError(f"{json_path}: expected a JSON list of entries, got {type(entries).__name__}")
    task = task or json_path.stem.replace("_sample", "")
    samples = []
    for i, e in enumerate(entries):
        where = f"{json_path}: entry {i}"
        if not isinstance(e, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(e).__name__}")
        missing = [k for k in _REQUIRED if k not in e]
        if missing:
            raise AnnotationError(f"{where}: missing field(s) {missing}")
        cands = e["candidates"]
        if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
            raise AnnotationError(f"{where}: 'candidates' must be a list of strings")
        if len(cands) < 2:
            raise AnnotationError(f"{where}: needs at least 2 candidates, got {len(cands)}")
        if e["answer"] not in cands:
            raise AnnotationError(f"{where}: answer {e['answer']!r} is not among the candidates {cands!r}")
        start, end = e.get("start"), e.get("end")
        try:
            start = None if start is None else float(start)
            end = None if end is None else float(end)
        except (TypeError, ValueError) as exc:
            raise AnnotationError(f"{where}: start/end must be numbers of seconds") from exc
        if start is not None and end is not None and start >= end:
            raise AnnotationError(f"{where}: start={start} must be before end={end}")
        samples.append(
            VideoQA(
                video=str(Path(video_root) / e["video"]),
                question=str(e["question"]),
                candidates=cands,
                answer=e["answer"],
                start=start,
                end=end,
                task=task,
                question_id=e.get("question_id") or f"{task}_{i}",
                extra={k: v for k, v in e.items() if k not in (*_REQUIRED, "start", "end", "question_id")},
            )
        )
    return samples
