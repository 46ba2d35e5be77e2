"""One VideoQA sample -> ``VideoLLMInput``: decode the frames (the family's sampler when it has
one), know the token grid (from the frames' size for VideoLLaMA3), build and tokenize the prompt
with its layout, check the context length, run the vision front end once."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import torch

from ..sources.data import VideoQA
from ..errors import ContextLengthError, FramePoolingWarning
from ..prompting.inputs import VideoLLMInput, model_identity, tokenize_prompt
from ..prompting.layout import slot_frames
from ..sources.video import Video

__all__ = ["prepare_one"]


def prepare_one(model, sample: VideoQA, num_frames: int, keep_pixels: bool = False) -> VideoLLMInput:
    """``HookedVideoLLM.prepare`` for one sample (see its docstring)."""
    if not isinstance(sample, VideoQA):
        raise TypeError(f"prepare takes a VideoQA (vl.VideoQA(video=..., question=..., candidates=..., answer=...)) "
                        f"or a list of them, got {type(sample).__name__}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int):
        raise TypeError(f"num_frames must be an integer, got {num_frames!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    video: Optional[Video] = None
    if model.vision.frame_size_dependent:  # the token grid follows the decoded frames' size
        video = sample.load(num_frames, sampler=model.frame_sampler)
        grid = model.vision.output_grid(video.num_frames, tuple(video.frames.shape[1:3]))
    else:
        grid = model.vision.output_grid(num_frames)
    if grid[0] != num_frames and not model.vision.frame_size_dependent:
        warnings.warn(
            f"num_frames={num_frames} sampled frames are pooled into {grid[0]} temporal slots (the pooling depth): "
            f"token groups frame:0..{grid[0] - 1} are pooling slots of averaged or repeated frames, not sampled "
            f"frames (layout.slot_frames lists them); pass num_frames={grid[0]} (or "
            f"from_pretrained(pooling_shape=...)) for one frame a slot",
            FramePoolingWarning, stacklevel=3)
    timestamps = None
    if model.template.frame_format is not None:
        if video is None:
            video = sample.load(num_frames, sampler=model.frame_sampler)
        timestamps = model.vision.slot_times(video, grid[0])
    tp = tokenize_prompt(
        model.tokenizer,
        model.template,
        sample.question,
        sample.candidates,
        model.placeholder_id,
        grid,
        true_letter=sample.answer_letter,
        timestamps=timestamps,
        n_trailing=model.vision.n_trailing,
        option_format=sample.option_format,
        options_end=sample.options_end,
    )
    S = tp.layout.seq_len
    if S > model.cfg.n_ctx:
        raise ContextLengthError(
            f"the prompt has {S} positions ({grid[0]}x{grid[1]}x{grid[2]} video tokens), "
            f"more than the model's context of {model.cfg.n_ctx}"
        )
    if video is None:
        video = sample.load(num_frames, sampler=model.frame_sampler)
    pixels = model.vision.pixels(video.frames)
    with torch.no_grad():
        embeds = model.vision.encode(pixels)
    return VideoLLMInput(
        tokens=tp.tokens.to(model.device),
        video_embeds=embeds,
        layout=dataclasses.replace(tp.layout, slot_frames=slot_frames(video.num_frames, grid[0])),
        option_token_ids=tp.option_token_ids,
        sample=sample,
        video=video,
        prompt_text=tp.prompt.text,
        pixel_values=pixels if keep_pixels else None,
        prepared_by=model_identity(model),
    )

