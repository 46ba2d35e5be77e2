"""Corrupted inputs that keep the token layout, for activation and path patching.

Patching moves activations between two runs position by position, so the clean and the corrupted
input must have the same ``TokenLayout`` (same length, same spans). Every corruption here keeps
it: the video ones rearrange the video tokens (or the sampled frames, re-encoded by the vision
front end), the text one swaps in a question with the same token count.

Corruptions (a registry, ``CORRUPTIONS``):

- ``reverse_frames``: frames in reverse order.
- ``shuffle_frames``: frames in a seeded random order that is never the identity.
- ``replace_frame``: one frame replaced (by another frame of the clip, or by given content).
- ``counterfactual_question``: another question / options of exactly the same token layout.

``level="embeds"`` (default) works on the video tokens' temporal slots ``[T', h, w, d]`` and needs
no model; ``level="pixels"`` rearranges the sampled frames ``inputs.video.frames [T, H, W, 3]``
and runs the vision front end again (needs ``model``). The two agree when the front end treats
frames independently and pools time in equal, aligned bins (e.g. PLLaVA 8 frames -> 4 or 8 slots).

Example::

    corrupted = reverse_frames(clean)                 # same layout, video tokens in reverse time
    corrupted = shuffle_frames(clean, seed=3)
    corrupted = counterfactual_question(model, clean, "Which direction does the cube move?")
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch
from jaxtyping import Int

from ..errors import VideolensError
from ..prompting.inputs import VideoLLMInput, tokenize_prompt
from ..sources.video import Video

__all__ = [
    "CORRUPTIONS",
    "LayoutMismatchError",
    "reverse_frames",
    "shuffle_frames",
    "shuffled_order",
    "replace_frame",
    "permute_frames",
    "counterfactual_question",
    "check_same_layout",
]


class LayoutMismatchError(VideolensError, ValueError):
    """A corrupted input does not have the clean input's token layout."""


# ---- layout check ----------------------------------------------------------------------------
def check_same_layout(clean: VideoLLMInput, other: VideoLLMInput) -> None:
    """Raise ``LayoutMismatchError`` unless both inputs have the same length, spans, video
    positions and option letters (what position-wise patching needs).

    The message names every span that differs."""
    a, b = clean.layout, other.layout
    problems = []
    if a.seq_len != b.seq_len:
        problems.append(f"length {a.seq_len} vs {b.seq_len}")
    if a.video_grid != b.video_grid:
        problems.append(f"video grid {a.video_grid} vs {b.video_grid}")
    elif not torch.equal(a.video_positions, b.video_positions):
        problems.append("video positions")
    if a.letters != b.letters:
        problems.append(f"option letters {a.letters} vs {b.letters}")
    for name in sorted(set(a.spans) | set(b.spans)):
        sa, sb = a.spans.get(name), b.spans.get(name)
        if sa != sb:
            problems.append(f"span {name!r}: {sa} vs {sb}")
    if problems:
        raise LayoutMismatchError("the corrupted input changes the token layout: " + "; ".join(problems))


# ---- video corruptions -----------------------------------------------------------------------
def _n_slots(inputs: VideoLLMInput, level: str) -> int:
    """Temporal slots (``level="embeds"``; a stacked batch's ``[B, T, h, w, d]`` counts dim 1) or
    sampled frames (``"pixels"``, one row only: a batch keeps one decoded video)."""
    if level == "embeds":
        return int(inputs.video_embeds.shape[1 if inputs.video_embeds.dim() == 5 else 0])
    if level == "pixels":
        inputs.one_row("level='pixels'")
        if inputs.video is None:
            raise ValueError("level='pixels' needs inputs.video (the decoded frames); this input has none")
        return inputs.video.num_frames
    raise ValueError(f"level must be 'embeds' or 'pixels', got {level!r}")


def _reencode(model, inputs: VideoLLMInput, frames: np.ndarray) -> VideoLLMInput:
    if model is None:
        raise ValueError("level='pixels' needs the model (its vision front end re-encodes the frames)")
    old = inputs.video
    video = Video(np.ascontiguousarray(frames), old.indices, old.timestamps, old.fps, old.source)
    with torch.no_grad():
        embeds = model.vision(video.frames).to(inputs.video_embeds.dtype)
    out = inputs.with_video_embeds(embeds.to(inputs.video_embeds.device))
    out.video = video
    return out


def permute_frames(
    inputs: VideoLLMInput, order: Sequence[int], level: str = "embeds", model=None
) -> VideoLLMInput:
    """Frames in the given order: new frame ``i`` is old frame ``order[i]``.

    Args:
        inputs: the clean input; a stacked batch (``level="embeds"``) has every row's frames
            permuted the same way, each row keeping its own video.
        order: a permutation of ``range(T)`` (T = temporal slots for ``level="embeds"``, sampled
            frames for ``level="pixels"``).
        level: ``"embeds"`` (rearrange video tokens ``[T', h, w, d]``) or ``"pixels"`` (rearrange
            ``inputs.video.frames`` and run ``model.vision`` again).
        model: the ``HookedVideoLLM`` (only for ``level="pixels"``).

    Returns:
        A ``VideoLLMInput`` with the same tokens and layout.

    Raises:
        ValueError: ``order`` is not a permutation of the frame indices, or ``level`` is unknown.
    """
    T = _n_slots(inputs, level)
    order = [int(i) for i in order]
    if sorted(order) != list(range(T)):
        raise ValueError(f"order must be a permutation of range({T}), got {order}")
    if level == "embeds":
        idx = torch.tensor(order, device=inputs.video_embeds.device)
        embeds = inputs.video_embeds
        return inputs.with_video_embeds((embeds[:, idx] if embeds.dim() == 5 else embeds[idx]).clone())
    return _reencode(model, inputs, inputs.video.frames[order])


def reverse_frames(inputs: VideoLLMInput, level: str = "embeds", model=None) -> VideoLLMInput:
    """Frames in reverse temporal order (same layout). See ``permute_frames`` for ``level``."""
    T = _n_slots(inputs, level)
    return permute_frames(inputs, list(range(T - 1, -1, -1)), level, model)


def shuffled_order(n: int, seed: int = 0) -> Int[torch.Tensor, "n"]:
    """A seeded random permutation of ``range(n)`` that is not the identity (for ``n >= 2``)."""
    g = torch.Generator().manual_seed(int(seed))
    for _ in range(1000):
        order = torch.randperm(n, generator=g)
        if n < 2 or not torch.equal(order, torch.arange(n)):
            return order
    raise RuntimeError("could not draw a non-identity permutation")  # pragma: no cover


def shuffle_frames(inputs: VideoLLMInput, seed: int = 0, level: str = "embeds", model=None) -> VideoLLMInput:
    """Frames in a seeded random order (never the identity; same layout).

    The order is ``shuffled_order(T, seed)``; see ``permute_frames`` for ``level``.

    Raises:
        ValueError: fewer than 2 frames (nothing to shuffle).
    """
    T = _n_slots(inputs, level)
    if T < 2:
        raise ValueError(f"shuffle_frames needs at least 2 frames, the input has {T}")
    return permute_frames(inputs, shuffled_order(T, seed).tolist(), level, model)


FrameSource = Union[int, torch.Tensor, np.ndarray, VideoLLMInput]


def replace_frame(
    inputs: VideoLLMInput,
    frame: int,
    source: Optional[FrameSource] = None,
    level: str = "embeds",
    model=None,
) -> VideoLLMInput:
    """One frame replaced, everything else (tokens, layout, other frames) kept.

    Args:
        inputs: the clean input.
        frame: index of the frame to replace (negative counts from the end).
        source: what goes in its place: another frame index of the same clip (default: the
            previous frame, or frame 1 when ``frame`` is 0); a tensor / array with one frame's
            content (``[h, w, d_model]`` video tokens for ``level="embeds"``, uint8
            ``[H, W, 3]`` pixels for ``level="pixels"``); or another ``VideoLLMInput`` whose
            frame ``frame`` is taken.
        level, model: see ``permute_frames``.

    Raises:
        ValueError: ``frame`` out of range, or ``source`` of the wrong shape.
        videolens.errors.BatchedInputError: a batch (pass ``batch[i]``).
    """
    inputs.one_row("replace_frame")
    T = _n_slots(inputs, level)
    if not -T <= frame < T:
        raise ValueError(f"frame {frame} out of range for {T} frames")
    frame = frame % T
    if T < 2 and (source is None or isinstance(source, int)):
        raise ValueError("with a single frame, pass the replacement content as source")
    if source is None:
        source = frame - 1 if frame > 0 else 1
    current = inputs.video_embeds if level == "embeds" else inputs.video.frames
    if isinstance(source, VideoLLMInput):
        other = source.video_embeds if level == "embeds" else source.video.frames
        content = other[frame]
    elif isinstance(source, int):
        if not -T <= source < T:
            raise ValueError(f"source frame {source} out of range for {T} frames")
        content = current[source]
    else:
        content = source
    if tuple(content.shape) != tuple(current.shape[1:]):
        raise ValueError(f"replacement frame must have shape {tuple(current.shape[1:])}, got {tuple(content.shape)}")
    if level == "embeds":
        new = inputs.video_embeds.clone()
        new[frame] = torch.as_tensor(content, dtype=new.dtype, device=new.device)
        return inputs.with_video_embeds(new)
    frames = inputs.video.frames.copy()
    frames[frame] = np.asarray(content, dtype=np.uint8)
    return _reencode(model, inputs, frames)


# ---- text corruption -------------------------------------------------------------------------
def counterfactual_question(
    model,
    inputs: VideoLLMInput,
    question: str,
    candidates: Optional[Sequence[str]] = None,
    answer: Optional[str] = None,
) -> VideoLLMInput:
    """The same video with another question (and optionally other options) of the same layout.

    The video tokens are reused (the vision front end does not run again). The new prompt must
    tokenize to exactly the clean layout: same length and every span (question, each option,
    answer prefix, ...) at the same positions.

    Args:
        model: the ``HookedVideoLLM`` (its tokenizer and template build the prompt).
        inputs: the clean input (with ``inputs.sample``).
        question: the counterfactual question text.
        candidates: new options (default: the clean ones).
        answer: the right option among ``candidates`` (default: the clean answer when it is
            still a candidate, else the option at the clean answer's index).

    Raises:
        LayoutMismatchError: the new prompt's layout differs (the message names the spans).
        ValueError: ``inputs`` has no sample.
        videolens.errors.BatchedInputError: a batch (pass ``batch[i]``).
    """
    from ..sources.data import VideoQA

    inputs.one_row("counterfactual_question")
    if inputs.sample is None:
        raise ValueError("counterfactual_question needs inputs.sample (inputs made by model.prepare)")
    old = inputs.sample
    candidates = list(old.candidates if candidates is None else candidates)
    if answer is None:
        answer = old.answer if old.answer in candidates else candidates[min(old.answer_index, len(candidates) - 1)]
    sample = VideoQA(video=old.video, question=question, candidates=candidates, answer=answer, start=old.start,
                     end=old.end, task=old.task, question_id=None, extra=dict(old.extra))
    timestamps = None
    if model.template.frame_format is not None:
        timestamps = model.vision.slot_times(inputs.video, inputs.layout.n_frames)
    tp = tokenize_prompt(model.tokenizer, model.template, question, candidates, model.placeholder_id,
                         inputs.layout.video_grid, true_letter=sample.answer_letter, timestamps=timestamps)
    out = VideoLLMInput(tp.tokens.to(inputs.tokens.device), inputs.video_embeds, tp.layout, tp.option_token_ids,
                        sample, inputs.video, tp.prompt.text)
    check_same_layout(inputs, out)
    return out


CORRUPTIONS: Dict[str, Callable[..., VideoLLMInput]] = {
    "reverse_frames": reverse_frames,
    "shuffle_frames": shuffle_frames,
    "replace_frame": replace_frame,
    "counterfactual_question": counterfactual_question,
}
