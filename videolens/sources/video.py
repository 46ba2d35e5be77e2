"""Decoding videos into sampled frames (TVBench / MVBench middle-of-segment sampling).

The sampling rule is the one the paper's evaluation code uses (map-the-flow tasks/eval/mvbench): the
clip ``[start, end]`` (the whole clip when absent) is split into ``num_frames`` equal segments
and the middle frame of each segment is taken::

    start_idx = max(0, round(start * fps))          # 0 when start is None
    end_idx   = min(round(end * fps), n_frames - 1) # last frame when end is None
    seg       = (end_idx - start_idx) / num_frames
    index_i   = int(start_idx + seg / 2 + round(seg * i))

Policy for short clips: when the clip (or the ``[start, end]`` window) holds fewer frames than
``num_frames``, the rule above repeats frames, exactly as the reference code does; a
``ShortClipWarning`` says so. Nothing is padded or invented.

Method notes (the paper's section, the official code's lines): docs/methods.md#prompt-and-frames.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from jaxtyping import Float, Int, UInt8

from ..errors import VideolensError

__all__ = ["DEFAULT_NUM_FRAMES", "Video", "VideoDecodeError", "VideoWindowError", "ShortClipWarning", "load_video", "sample_frame_indices",
           "longvideobench_frame_indices", "videollama3_frames", "SAMPLERS"]

DEFAULT_NUM_FRAMES = 8
"""Frames per clip when nothing else says (the paper samples 8; the one default every module uses)."""


class VideoDecodeError(VideolensError, ValueError):
    """A file exists but cannot be decoded as a video."""


class VideoWindowError(VideolensError, ValueError):
    """An annotation's ``start``/``end`` window does not fit its video (negative, past the end, or
    ``start >= end``): that sample cannot run, the others can (dataset runs record it as skipped)."""


class ShortClipWarning(UserWarning):
    """The clip has fewer frames than asked for, so sampled frames repeat."""


@dataclass(frozen=True)
class Video:
    """Frames sampled from a video file.

    Attributes:
        frames: uint8 RGB frames, ``[T, H, W, 3]``.
        indices: index of each sampled frame in the source file, ``[T]``.
        timestamps: presentation time of each sampled frame in seconds, ``[T]``.
        fps: average frame rate of the source (frames per second).
        source: path of the decoded file, or ``None`` for frames made in memory.
    """

    frames: UInt8[np.ndarray, "T H W 3"]
    indices: Int[np.ndarray, "T"]
    timestamps: Float[np.ndarray, "T"]
    fps: float
    source: Optional[str] = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(
                f"Video.frames must be uint8 [T, H, W, 3], got {self.frames.dtype} {tuple(self.frames.shape)}"
            )
        if len(self.indices) != len(self.frames) or len(self.timestamps) != len(self.frames):
            raise ValueError("Video.indices and Video.timestamps need one entry per frame")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @classmethod
    def from_frames(cls, frames: np.ndarray, fps: float = 1.0) -> "Video":
        """Wrap in-memory uint8 frames ``[T, H, W, 3]`` (indices 0..T-1, timestamps i / fps)."""
        frames = np.ascontiguousarray(frames)
        n = len(frames)
        return cls(frames, np.arange(n), np.arange(n) / float(fps), float(fps), None)


def _ffmpeg_frames(path: Path, indices: np.ndarray) -> np.ndarray:
    """Frames ``indices`` of a file read in order with ffmpeg (imageio), for files decord cannot
    copy out; uint8 ``[len(indices), H, W, 3]``."""
    import imageio.v2 as imageio

    wanted = {int(i) for i in indices}
    got = {}
    with imageio.get_reader(str(path), format="ffmpeg") as reader:
        for i, frame in enumerate(reader):
            if i in wanted:
                got[i] = np.asarray(frame)[..., :3]
            if i >= max(wanted):
                break
    return np.stack([got[int(i)] for i in indices])


def sample_frame_indices(
    n_frames: int, fps: float, num_frames: int, start: Optional[float] = None, end: Optional[float] = None
) -> Int[np.ndarray, "num_frames"]:
    """Indices of the middle frame of each of ``num_frames`` equal segments (map-the-flow tasks/eval/mvbench).

    Args:
        n_frames: number of frames in the source clip.
        fps: frames per second of the source clip.
        num_frames: number of frames to sample (>= 1).
        start, end: optional window in seconds.

    Returns:
        int64 array ``[num_frames]``, non-decreasing, within ``[0, n_frames - 1]``; it repeats
        indices when the window holds fewer than ``num_frames`` frames.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    max_frame = n_frames - 1
    start_idx = 0 if start is None else max(0, round(start * fps))
    end_idx = max_frame if end is None else min(round(end * fps), max_frame)
    seg = float(end_idx - start_idx) / num_frames
    idx = np.array([int(start_idx + seg / 2 + np.round(seg * i)) for i in range(num_frames)], dtype=np.int64)
    return np.clip(idx, 0, max_frame)


def longvideobench_frame_indices(n_frames: int, fps: float, num_frames: int, duration: float
                                 ) -> Int[np.ndarray, "num_frames"]:
    """LongVideoBench's own sampling (map-the-flow ``tasks/eval/longvideobench`` ``load_video``):
    ``n = min(num_frames, int(duration))`` frames ``int(int(duration * fps) / n) * i``, the last one
    repeated up to ``num_frames``. ``duration`` is the annotation's. Differences, to avoid the
    official code's crashes: ``n`` is at least 1 (clips under a second) and indices are clipped to the
    file's last frame (an annotated duration longer than the file)."""
    n = max(1, min(num_frames, int(duration)))
    step = int(int(duration * fps) / n)
    idx = [step * i for i in range(n)]
    idx += [idx[-1]] * (num_frames - n)
    return np.clip(np.asarray(idx, dtype=np.int64), 0, n_frames - 1)


def videollama3_frames(pts: Float[np.ndarray, "n"], seconds: float, num_frames: int,
                       start: Optional[float] = None, end: Optional[float] = None
                       ) -> Tuple[Int[np.ndarray, "k"], Float[np.ndarray, "k"]]:
    """VideoLLaMA3's own sampling (official videollama3/mm_utils.py ``load_video`` with ``fps=None``,
    ``precise_time=True``, as the *_videollama3 analysis scripts call it): every frame whose
    presentation time lies in ``[start, start + duration)`` is decoded (the whole file without a
    window), ``num_frames`` of those ``n`` are picked at ``linspace(0, n - 1, num_frames)`` floored,
    and frame ``k`` of the window is stamped ``linspace(start, start + duration, n)[k]`` (not its
    presentation time). ``duration = min(seconds - start, end - start)``. A window holding fewer
    than ``num_frames`` frames keeps them all (the official code does not repeat frames).

    Args:
        pts: presentation time (s) of every frame of the file, ``[n_total]``.
        seconds: the file's length (s); frames / average fps with decord.

    Returns:
        (indices into the file ``[k]``, timestamps in seconds ``[k]``), ``k = min(num_frames, n)``.
    """
    t0 = 0.0 if start is None else float(start)
    duration = seconds - t0
    if end is not None:
        duration = min(duration, float(end) - t0)
    eps = 1e-6
    window = np.nonzero((pts >= t0 - eps) & (pts < t0 + duration - eps))[0]
    if len(window) == 0:
        window = np.array([int(np.argmin(np.abs(pts - t0)))])
    stamps = np.linspace(t0, t0 + duration, len(window))
    pick = np.linspace(0, len(window) - 1, num_frames, dtype=int) if len(window) > num_frames else np.arange(len(window))
    return window[pick].astype(np.int64), stamps[pick]


SAMPLERS = ("uniform", "longvideobench", "videollama3")
"""Frame samplers ``load_video`` knows: the paper's MVBench/TVBench rule, LongVideoBench's own,
and VideoLLaMA3's own (``videollama3_frames``)."""


def load_video(
    path: Union[str, os.PathLike],
    num_frames: int = DEFAULT_NUM_FRAMES,
    start: Optional[float] = None,
    end: Optional[float] = None,
    sampler: str = "uniform",
    duration: Optional[float] = None,
) -> Video:
    """Decode ``num_frames`` frames of a video file with decord.

    Args:
        path: video file (any container/codec decord's FFmpeg reads: mp4, webm, avi, ...).
        num_frames: frames to sample, >= 1 (the paper uses 8).
        start, end: optional window in seconds; ``0 <= start < end <=`` the clip's length.
        sampler: ``"uniform"`` (the middle frame of equal segments, the paper's MVBench/TVBench rule),
            ``"longvideobench"`` (``longvideobench_frame_indices``, with the annotated ``duration``)
            or ``"videollama3"`` (``videollama3_frames``: its timestamps are the official ones,
            not presentation times).

    Returns:
        ``Video`` with frames uint8 ``[num_frames, H, W, 3]``, source indices and timestamps (s).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoDecodeError: the file is not a decodable video, or has no frames.
        VideoWindowError: ``start``/``end`` negative, past the clip's end, or ``start >= end``.
        ValueError: ``num_frames < 1``.

    Warns:
        ShortClipWarning: the window holds fewer frames than ``num_frames``; frames repeat.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoDecodeError(f"{path} is not a file")
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        n_total = len(reader)
        fps = float(reader.get_avg_fps())
    except Exception as exc:  # decord raises its own DECORDError or RuntimeError
        raise VideoDecodeError(f"cannot decode {path} as a video: {exc}") from exc
    if n_total < 1 or not np.isfinite(fps) or fps <= 0:
        raise VideoDecodeError(f"{path} has no decodable frames (frames={n_total}, fps={fps})")
    seconds = n_total / fps  # the file's length (``duration`` is an annotation's, for the longvideobench sampler)
    tol = 1.0 / fps
    if start is not None and start < 0:
        raise VideoWindowError(f"start={start} s is negative for {path}")
    if end is not None and end > seconds + tol:
        raise VideoWindowError(f"end={end} s is past the end of {path} ({seconds:.3f} s)")
    if start is not None and start >= seconds:
        raise VideoWindowError(f"start={start} s is past the end of {path} ({seconds:.3f} s)")
    if start is not None and end is not None and start >= end:
        raise VideoWindowError(f"start={start} s must be before end={end} s for {path}")

    stamps = None
    if sampler == "videollama3":
        try:
            pts = np.asarray(reader.get_frame_timestamp(list(range(n_total))), dtype=np.float64)[:, 0]
        except Exception as exc:
            raise VideoDecodeError(f"cannot read the frame times of {path}: {exc}") from exc
        indices, stamps = videollama3_frames(pts, seconds, num_frames, start, end)
    elif sampler == "longvideobench":
        if duration is None:
            raise ValueError(f"{path}: the longvideobench sampler needs the annotated duration")
        indices = longvideobench_frame_indices(n_total, fps, num_frames, float(duration))
    elif sampler == "uniform":
        indices = sample_frame_indices(n_total, fps, num_frames, start, end)
    else:
        raise ValueError(f"unknown frame sampler {sampler!r} ({', '.join(SAMPLERS)})")
    if len(np.unique(indices)) < num_frames:
        warnings.warn(
            f"{path}: the window holds fewer than {num_frames} distinct frames; sampled frames repeat "
            f"(indices {indices.tolist()})",
            ShortClipWarning,
            stacklevel=2,
        )
    try:
        frames = reader.get_batch(indices.tolist()).asnumpy()
        if stamps is None:
            stamps = np.asarray(reader.get_frame_timestamp(indices.tolist()), dtype=np.float64)[:, 0]
    except Exception as exc:  # decord fails on some frame sizes (e.g. 16x2000): ffmpeg (imageio) reads them
        try:
            frames = _ffmpeg_frames(path, indices)
        except Exception:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VideoDecodeError(f"cannot decode frames {indices.tolist()} of {path} (neither decord nor ffmpeg "
                                   f"could): {first[-160:]}") from exc
        if stamps is None:
            stamps = indices.astype(np.float64) / fps
    return Video(np.ascontiguousarray(frames, dtype=np.uint8), indices, stamps, fps, str(path))
