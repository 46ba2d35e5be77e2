"""Qwen2.5-VL's video path: frames resized by ``smart_resize``, paired in time (temporal patch 2),
the vision transformer with its windowed attention and 2x2 merger, and the 3-D multimodal RoPE
(M-RoPE) of the text model, computed from the layout and applied INSIDE the hooked attention.

TransformerLens' attention reads rotary ``sin``/``cos`` tables by position index. ``MRope`` writes,
before each forward of a ``VideoLLMInput``, tables whose row ``i`` is token ``i``'s M-RoPE angle: the
frequency dimensions split in ``mrope_section`` parts taking the temporal, height and width position
ids, as transformers' ``Qwen2_5_VLRotaryEmbedding`` does. Rows past the prompt continue the text
positions (``max position + 1``, ...), so generation with the key-value cache stays right. So
``blocks.{l}.attn.hook_rot_q`` / ``hook_rot_k`` carry the M-RoPE-rotated vectors, and a knockout
masks the real model's attention.

Position ids follow transformers 5 ``Qwen2_5_VLModel.get_rope_index``: text tokens count up; video
tokens get ``(start + t * tokens_per_second * second_per_grid, start + row, start + col)``; the text
after the video resumes at ``start + max(rows, cols)``.

Qwen3-VL (``Qwen3VLPreprocessor``, ``Qwen3VLFrontEnd``): the clip is sized as one budget, the
frequencies take their axis interleaved (``MRope.interleaved``), each temporal slot is its own run of
video tokens between timestamp text (``layout_position_ids``), and the front end also returns the
DeepStack levels (``videolens.hooked.deepstack``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, Int, UInt8

from transformer_lens.hook_points import HookPoint

from .._tl_compat import set_rotary_tables
from .vision import CLIP_MEAN, CLIP_STD, VisionFrontEnd

__all__ = ["QwenVLPreprocessor", "QwenVLFrontEnd", "Qwen3VLPreprocessor", "Qwen3VLFrontEnd", "MRope",
           "mrope_position_ids", "layout_position_ids", "patchify_video", "processor_slot_times", "seconds_per_slot"]


def patchify_video(pixels: Float[torch.Tensor, "T C H W"], patch: int = 14, merge: int = 2, temporal: int = 2
                   ) -> Float[torch.Tensor, "N D"]:
    """``[T, C, H, W]`` -> ``[T/2 * (H/p) * (W/p), C * 2 * p * p]`` in the order Qwen2-VL's video
    processor writes (``patchify``: time pair, merge-block row and column, row and column in the
    block; each row channels, time, patch rows, patch columns)."""
    return rearrange(pixels, "(gt tp) c (bh mh p) (bw mw q) -> (gt bh bw mh mw) (c tp p q)",
                     tp=temporal, mh=merge, mw=merge, p=patch, q=patch)


@dataclass
class QwenVLPreprocessor:
    """uint8 frames -> ``[T, 3, H', W']`` with ``(H', W') = smart_resize(H, W, 28, min_pixels,
    max_pixels)`` (transformers' Qwen2-VL rule; PIL bicubic), rescaled and normalised (CLIP mean/std).

    Attributes:
        min_pixels, max_pixels: per frame (transformers' video processor defaults:
            128 x 28 x 28 and 768 x 28 x 28).
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    mean: Tuple[float, float, float] = CLIP_MEAN
    std: Tuple[float, float, float] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def frame_size(self, height: int, width: int, num_frames: int = 1) -> Tuple[int, int]:
        """``(H', W')`` of each frame: the pixel bounds hold per frame (``num_frames`` is unused)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize  # no torchvision

        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def __call__(self, frames: UInt8[np.ndarray, "T H W 3"]) -> Float[torch.Tensor, "T 3 h w"]:
        from PIL import Image

        h, w = self.frame_size(int(frames.shape[1]), int(frames.shape[2]), len(frames))
        out = np.empty((len(frames), h, w, 3), dtype=np.float32)
        for i, f in enumerate(frames):
            img = Image.fromarray(np.ascontiguousarray(f))
            out[i] = np.asarray(img if img.size == (w, h) else img.resize((w, h), resample=3), dtype=np.float32)
        out = (out / np.float32(255.0) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return rearrange(torch.from_numpy(out), "t h w c -> t c h w").contiguous()


class QwenVLFrontEnd(VisionFrontEnd):
    """Qwen2.5-VL's vision transformer (transformers' ``Qwen2_5_VisionTransformerPretrainedModel``:
    windowed and full attention blocks, 2-D RoPE, the merger MLP that projects to the text width).

    Frames are paired in time: ``T`` frames give ``T/2`` temporal slots of ``H'/28 x W'/28`` tokens.
    ``vision.hook_patch_features`` carries the merger's output (already text-width) as a grid.

    Attributes:
        tokens_per_second: Qwen2.5-VL's temporal id rate; None for Qwen2-VL (one id a slot).
    """

    preprocess: QwenVLPreprocessor
    frame_size_dependent = True

    def __init__(self, tower: torch.nn.Module, preprocess: QwenVLPreprocessor, tokens_per_second: Optional[float]):
        super().__init__(tower, {}, feature_layer=-1, drop_cls=False, preprocess=preprocess)
        self.tokens_per_second = None if tokens_per_second is None else float(tokens_per_second)

    def temporal_interval(self, video) -> float:
        """Temporal position-id step per slot: ``tokens_per_second`` x seconds per slot (Qwen2.5-VL),
        or 1 (Qwen2-VL, ``tokens_per_second`` None)."""
        if self.tokens_per_second is None:
            return 1.0
        return self.tokens_per_second * seconds_per_slot(video, self.preprocess)

    def output_grid(self, num_frames: int, frame_size: Optional[Tuple[int, int]] = None) -> Tuple[int, int, int]:
        """``(T/2, H'/28, W'/28)``.

        Raises:
            ValueError: no ``frame_size``, or a frame count the temporal patch does not divide.
        """
        tp = self.preprocess.temporal_patch_size
        if num_frames % tp:
            raise ValueError(f"{num_frames} frames do not pair up into temporal patches of {tp}: sample a multiple "
                             f"of {tp} (num_frames)")
        if frame_size is None:
            raise ValueError("the Qwen-VL front end needs the frame size to know its token grid")
        h, w = self.preprocess.frame_size(int(frame_size[0]), int(frame_size[1]), num_frames)
        return num_frames // tp, h // self.preprocess.factor, w // self.preprocess.factor

    def patch_features(self, pixel_values: Float[torch.Tensor, "T 3 H W"]) -> Float[torch.Tensor, "t h w d"]:
        out, grid = self._tower(pixel_values)
        return grid(out.pooler_output)

    def _tower(self, pixel_values: Float[torch.Tensor, "T 3 H W"]):
        """The tower's output on the frames, and a function that lays its ``[t*h*w, d]`` rows out as
        the ``[t, h, w, d]`` grid."""
        pp = self.preprocess
        T, _, H, W = pixel_values.shape
        # the grid of frames already resized: read from their size, not resized again (smart_resize is
        # not idempotent: with min_pixels == max_pixels its rounding can land above max_pixels)
        if H % pp.factor or W % pp.factor:
            raise ValueError(f"frames of {H}x{W} pixels do not split into {pp.factor}-pixel merge blocks")
        t, h = T // pp.temporal_patch_size, H // pp.factor
        grid = torch.tensor([[t, H // pp.patch_size, W // pp.patch_size]], device=pixel_values.device)
        flat = patchify_video(pixel_values, pp.patch_size, pp.merge_size, pp.temporal_patch_size)
        return self.tower(flat, grid_thw=grid), lambda rows: rearrange(rows, "(t h w) d -> t h w d", t=t, h=h)


@dataclass
class Qwen3VLPreprocessor(QwenVLPreprocessor):
    """Qwen3-VL's video resize: transformers' ``Qwen3VLVideoProcessor`` ``smart_resize(num_frames, H, W,
    temporal_factor=2, factor=32, min_pixels, max_pixels)``, whose pixel bounds hold for the whole clip
    (``size.shortest_edge`` / ``size.longest_edge``), not per frame; with ``cap_pixels_per_frame`` the
    budget becomes ``max(min(max_video_tokens x 32², longest_edge // T), 1.05 x shortest_edge) x T``
    (qwen-vl-utils' rule). Mean and std 0.5.

    Attributes:
        cap_pixels_per_frame: the video processor's option of that name (transformers' default: off).
        max_video_tokens: its per-frame token ceiling under the cap.
    """

    patch_size: int = 16
    min_pixels: int = 128 * 32 * 32
    max_pixels: int = 768 * 32 * 32
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 768

    def frame_size(self, height: int, width: int, num_frames: int = 2) -> Tuple[int, int]:
        """``(H', W')`` of every frame of a clip of ``num_frames`` frames of ``height x width``."""
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

        budget = self.max_pixels
        if self.cap_pixels_per_frame:
            per_frame = max(min(self.max_video_tokens * self.factor ** 2, self.max_pixels // num_frames),
                            int(self.min_pixels * 1.05))
            budget = per_frame * num_frames
        return smart_resize(num_frames, height, width, self.temporal_patch_size, self.factor, self.min_pixels, budget)


class Qwen3VLFrontEnd(QwenVLFrontEnd):
    """Qwen3-VL's vision transformer (transformers' ``Qwen3VLVisionModel``: learned position grid
    resampled to each frame, 2-D RoPE, the merger) and its DeepStack mergers, which turn the hidden
    states of the blocks ``deepstack_visual_indexes`` into ``deepstack_levels`` more text-width
    vectors per video token. The language model adds level ``l`` to its residual stream at the video
    positions after block ``l`` (``videolens.hooked.deepstack``).

    ``encode`` packs them with the video tokens along the last axis, ``[T', h, w, (1 + k) d_model]``
    (the merger's tokens, then level 0, 1, ...), so every video-level edit of an input (a frame
    permuted, replaced, re-encoded) moves the DeepStack features with their tokens. Temporal slots
    are written as Qwen3-VL's processor writes them, one ``<t seconds>`` block per slot
    (``slot_times``).
    """

    def __init__(self, tower: torch.nn.Module, preprocess: QwenVLPreprocessor, deepstack_levels: int):
        super().__init__(tower, preprocess, None)
        self.deepstack_levels = int(deepstack_levels)
        self.hook_deepstack_features = HookPoint()  # [k, t, h, w, d_model], fired by encode

    def encode(self, pixel_values: Float[torch.Tensor, "T 3 H W"]) -> Float[torch.Tensor, "t h w w_packed"]:
        """Pixel values -> ``[T', h, w, (1 + deepstack_levels) d_model]``: the video tokens and the
        DeepStack levels packed along the last axis (class doc). Hook points on the way as
        ``VisionFrontEnd.encode``, plus ``vision.hook_deepstack_features`` ``[k, T', h, w, d_model]``."""
        pixel_values = self.hook_pixel_values(pixel_values)
        with self._pattern_hooks_live():
            grid, levels = self._features(pixel_values)
            grid = self.hook_patch_features(grid)
        levels = self.hook_deepstack_features(levels)
        return torch.cat([grid, rearrange(levels, "k t h w d -> t h w (k d)")], dim=-1)

    def _features(self, pixel_values):
        out, grid = self._tower(pixel_values)
        return grid(out.pooler_output), torch.stack([grid(f) for f in out.deepstack_features])

    def patch_features(self, pixel_values: Float[torch.Tensor, "T 3 H W"]) -> Float[torch.Tensor, "t h w d"]:
        return self._features(pixel_values)[0]

    def slot_times(self, video, slots: int) -> List[float]:
        """Seconds written before each temporal slot: ``processor_slot_times`` of the sampled
        frames' indices and the source's frame rate (24 when unknown, as the processor assumes)."""
        fps = float(video.fps) if video.fps else 24.0
        return processor_slot_times(video.indices, fps, self.preprocess.temporal_patch_size)[:slots]


def processor_slot_times(indices: Sequence[int], fps: float, temporal_patch_size: int = 2) -> List[float]:
    """Qwen3-VL's slot timestamps (transformers ``Qwen3VLProcessor._calculate_timestamps``): each frame
    at index / fps, a slot at the mean of its first and last frame, the last frame repeated to fill
    the last slot."""
    idx = [int(i) for i in indices]
    idx += [idx[-1]] * (-len(idx) % temporal_patch_size)
    return [(idx[i] / fps + idx[i + temporal_patch_size - 1] / fps) / 2 for i in range(0, len(idx), temporal_patch_size)]


def seconds_per_slot(video, preprocess: QwenVLPreprocessor) -> float:
    """Seconds between temporal slots: ``temporal_patch_size`` x the sampled frames' spacing (the
    processor's ``second_per_grid_ts = temporal_patch_size / fps``); 1 s a frame for in-memory
    frames without timestamps."""
    stamps = np.asarray(getattr(video, "timestamps", []), dtype=np.float64)
    step = float((stamps[-1] - stamps[0]) / (len(stamps) - 1)) if len(stamps) > 1 else 1.0
    return preprocess.temporal_patch_size * (step if step > 0 else 1.0)


def mrope_position_ids(seq_len: int, video_start: int, video_grid: Tuple[int, int, int], interval: float
                       ) -> Int[torch.Tensor, "3 S"]:
    """3-D position ids ``[3, S]`` (temporal, height, width) of a prompt with one video of merged
    grid ``(t, h, w)`` in one run starting at ``video_start``; ``interval`` = tokens_per_second x
    seconds per temporal slot (transformers 5 ``get_rope_index``; the temporal id is
    ``int(t * interval)``). ``layout_position_ids`` with a single run."""
    t, h, w = video_grid
    return layout_position_ids(seq_len, torch.arange(video_start, video_start + t * h * w), video_grid, interval)


def layout_position_ids(seq_len: int, video_positions: Int[torch.Tensor, "n"], video_grid: Tuple[int, int, int],
                        interval: float = 1.0) -> Int[torch.Tensor, "3 S"]:
    """3-D position ids ``[3, S]`` of a prompt whose video tokens (frame, row, column order) sit at
    ``video_positions``, in one run (Qwen2-VL / Qwen2.5-VL) or in one run per temporal slot with
    text between them (Qwen3-VL's ``<t seconds><|vision_start|>...<|vision_end|>`` blocks).

    As transformers 5 ``get_rope_index`` (Qwen2.5-VL's and Qwen3-VL's): text tokens count up from
    the last id; a run of ``k`` slots starting at id ``s`` gives its tokens
    ``(s + int(i * interval), s + row, s + col)`` for slot ``i``; the text after it resumes at
    ``s + max(h, w)``. Qwen3-VL's runs are single slots, so ``interval`` does not matter there.

    Raises:
        ValueError: a run that does not hold whole ``h x w`` slots.
    """
    t, h, w = video_grid
    pos = video_positions.tolist()
    runs, i = [], 0
    while i < len(pos):
        j = i
        while j + 1 < len(pos) and pos[j + 1] == pos[j] + 1:
            j += 1
        runs.append((pos[i], j - i + 1))
        i = j + 1
    parts, cursor, current = [], 0, 0
    for start, n in runs:
        if n % (h * w):
            raise ValueError(f"a run of {n} video tokens at position {start} is not whole {h}x{w} slots")
        text = start - cursor
        parts.append(torch.arange(text).expand(3, -1) + current)
        current += text
        k = n // (h * w)
        tt, hh, ww = torch.meshgrid((torch.arange(k) * interval).long(), torch.arange(h), torch.arange(w), indexing="ij")
        parts.append(torch.stack([tt, hh, ww]).reshape(3, -1) + current)
        current += max(h, w)
        cursor = start + n
    parts.append(torch.arange(seq_len - cursor).expand(3, -1) + current)
    return torch.cat(parts, dim=1)


@dataclass
class MRope:
    """M-RoPE tables for a HookedTransformer (module doc).

    Attributes:
        inv_freq: ``[d_head / 2]`` inverse frequencies (rope theta).
        sections: ``mrope_section`` (e.g. ``[16, 24, 24]``): frequency dimensions per axis.
        plain: the 1-D ``(sin, cos)`` tables ``[n_ctx, d_head]`` used for inputs without a video.
        current: a key of the tables in the blocks.
    """

    inv_freq: torch.Tensor
    sections: Sequence[int]
    plain: Tuple[torch.Tensor, torch.Tensor]
    current: object = None
    interleaved: bool = False

    def axis_of_frequency(self) -> Int[torch.Tensor, "d_half"]:
        """Which position id (0 temporal, 1 height, 2 width) drives each of the ``d_head / 2``
        frequencies: consecutive blocks of ``sections`` (Qwen2-VL / Qwen2.5-VL), or interleaved
        (Qwen3-VL's ``mrope_interleaved``: frequency ``j`` is height when ``j % 3 == 1`` and
        ``j < 3 * sections[1]``, width when ``j % 3 == 2`` and ``j < 3 * sections[2]``, else temporal;
        transformers' ``Qwen3VLTextRotaryEmbedding.recomposition_frequencies``)."""
        half = int(self.inv_freq.shape[0])
        if not self.interleaved:
            return torch.cat([torch.full((int(n),), i % 3) for i, n in enumerate(self.sections)])[:half]
        axis = torch.zeros(half, dtype=torch.long)
        for dim in (1, 2):
            axis[dim:3 * int(self.sections[dim]):3] = dim
        return axis

    def tables(self, pos3: Int[torch.Tensor, "3 S"], n_ctx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(sin, cos)`` ``[n_ctx, d_head]``: rows ``< S`` from ``pos3``, then text positions."""
        S = pos3.shape[1]
        tail = torch.arange(max(0, n_ctx - S)) + int(pos3.max()) + 1
        pos = torch.cat([pos3, tail.expand(3, -1)], dim=1)[:, :n_ctx].float()  # [3, n_ctx]
        freqs = pos[..., None] * self.inv_freq.float()  # [3, n_ctx, d/2]
        axis = self.axis_of_frequency()
        freqs = freqs.gather(0, axis.expand(1, freqs.shape[1], -1)).squeeze(0)  # each frequency from its axis
        emb = torch.cat([freqs, freqs], dim=-1)
        dtype = self.plain[0].dtype
        return emb.sin().to(dtype), emb.cos().to(dtype)

    def select(self, model, inputs, cached: bool) -> None:
        """Write the tables for this forward: the input's M-RoPE tables for a ``VideoLLMInput``,
        the plain ones for bare tokens (or text) without a cache; unchanged while a cache is
        extended or a residual stream is resumed at a later layer (the tables of the input it
        came from stay).

        Raises:
            ValueError: a batch whose rows have different layouts (the tables are shared).
        """
        from ..prompting.inputs import VideoLLMInput

        if isinstance(inputs, VideoLLMInput):
            layouts = inputs.row_layouts if inputs.row_layouts is not None else [inputs.layout]
            first = layouts[0]
            if any(L.video_grid != first.video_grid or L.video.start != first.video.start or L.seq_len != first.seq_len
                   or not torch.equal(L.video_positions, first.video_positions) for L in layouts[1:]):
                raise ValueError("M-RoPE tables are shared by the batch: batch only samples with the same layout")
            interval = model.vision.temporal_interval(inputs.video)
            if inputs.row_meta is not None and any(model.vision.temporal_interval(m["video"]) != interval
                                                   for m in inputs.row_meta):
                raise ValueError("M-RoPE tables are shared by the batch: its videos' seconds per temporal slot differ "
                                 "(other frame rates); run the rows one at a time (batch[i])")
            t, h, w = first.video_grid
            key = (first.seq_len, tuple(first.video_positions[:: h * w].tolist()), first.video_grid, interval)
            if key != self.current:
                pos3 = layout_position_ids(first.seq_len, first.video_positions, first.video_grid, interval)
                sin, cos = self.tables(pos3, model.cfg.n_ctx)
                for block in model.blocks:
                    set_rotary_tables(block.attn, sin, cos)
                self.current = key
        elif (isinstance(inputs, (str, list)) or (torch.is_tensor(inputs) and not inputs.is_floating_point())) \
                and not cached and self.current != "plain":
            for block in model.blocks:
                set_rotary_tables(block.attn, *self.plain)
            self.current = "plain"
