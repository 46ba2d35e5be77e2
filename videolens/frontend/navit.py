"""The VideoLLaMA3 vision front end: frames resized to a visual-token budget, SigLIP-NaViT (axial
2-D RoPE, each frame attending within itself), 2x2 merge by bilinear resize, projector.

Unlike the fixed-size towers (CLIP, SigLIP, InternViT) the frame size here depends on the video:
every frame of a clip is resized to one ``(H', W')``, multiples of ``patch x merge`` (28 px), chosen
by the official processor's rule (``resize_for_budget``) so that the clip fits ``max_tokens``
patch-pairs; the video grid is then ``(T, H'/28, W'/28)``. Pixel values keep the image shape
``[T, 3, H', W']`` (hook ``vision.hook_pixel_values``); the flattening into 14x14 patches in
merge-block order that transformers' ``VideoLlama3VisionModel`` reads happens in ``encode``.

Facts (VideoLLaMA3's released code; official videollama3/model/videollama3_encoder/image_processing_videollama3.py
``simple_batched_resize`` and ``_preprocess``; transformers' ``VideoLlama3VisionModel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, UInt8

from .vision import VisionFrontEnd

__all__ = ["NaViTPreprocessor", "NaViTFrontEnd", "resize_for_budget", "patchify", "PAPER_MAX_VISUAL_TOKENS"]

PAPER_MAX_VISUAL_TOKENS = 8 * 12 * 12
"""The paper's VideoLLaMA3 budget (``--max_visual_tokens 1152``: 8 frames x 12 x 12 merged tokens)."""


def resize_for_budget(height: int, width: int, num_frames: int, factor: int = 28, min_tokens: int = 16,
                      max_tokens: int = PAPER_MAX_VISUAL_TOKENS) -> Tuple[int, int]:
    """The frame size ``(H', W')`` of a ``num_frames`` clip of ``height x width`` frames: the official
    ``simple_batched_resize`` with ``factor = patch_size * merge_size``.

    Each frame gets ``max_tokens * factor**2 // num_frames`` pixels at most: rounded to multiples
    of ``factor``; if over budget, both sides shrink by ``beta = sqrt(H W / budget)`` and are floored to
    multiples of ``factor``; if then under ``min_tokens * factor**2`` pixels, both grow by
    ``sqrt(min / (H W))`` and are ceiled. So a 720x1280 clip of 8 frames with ``max_tokens`` 1152 is
    252x448 (9x16 = 144 merged tokens a frame) and with 128 it is 84x168 (the minimum rule).
    """
    min_pixels = min_tokens * factor * factor
    budget = (max_tokens * factor * factor) // max(1, num_frames)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > budget:
        beta = math.sqrt((height * width) / budget)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    if h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return int(h_bar), int(w_bar)


def patchify(pixels: Float[torch.Tensor, "T C H W"], patch: int = 14, merge: int = 2
             ) -> Float[torch.Tensor, "N Cpp"]:
    """``[T, C, H, W]`` -> ``[T * (H/p) * (W/p), C * p * p]`` in the order the NaViT tower reads:
    frame, merge-block row, merge-block column, row in block, column in block (official
    ``_preprocess`` L: ``transpose(0, 2, 5, 3, 6, 1, 4, 7)``)."""
    return rearrange(pixels, "t c (bh mh p) (bw mw q) -> (t bh bw mh mw) (c p q)", mh=merge, mw=merge, p=patch, q=patch)


@dataclass
class NaViTPreprocessor:
    """uint8 frames -> resized, rescaled, normalised frames ``[T, 3, H', W']`` (bicubic resize with
    PIL, as transformers' ``resize`` of the official processor does).

    Attributes:
        patch_size, merge_size: the tower's patch (14) and the merge (2).
        min_tokens, max_tokens: the processor's budget, in ``(patch * merge)``-pixel squares
            (``max_tokens`` = the paper's ``--max_visual_tokens``).
        mean, std: normalisation (0.5, 0.5 for VideoLLaMA3).
    """

    patch_size: int = 14
    merge_size: int = 2
    min_tokens: int = 16
    max_tokens: int = PAPER_MAX_VISUAL_TOKENS
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = 3  # PIL bicubic

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def frame_size(self, height: int, width: int, num_frames: int) -> Tuple[int, int]:
        return resize_for_budget(height, width, num_frames, self.factor, self.min_tokens, self.max_tokens)

    def __call__(self, frames: UInt8[np.ndarray, "T H W 3"]) -> Float[torch.Tensor, "T 3 h w"]:
        from PIL import Image

        h, w = self.frame_size(int(frames.shape[1]), int(frames.shape[2]), len(frames))
        out = np.empty((len(frames), h, w, 3), dtype=np.float32)
        for i, f in enumerate(frames):
            img = Image.fromarray(np.ascontiguousarray(f))
            if img.size != (w, h):
                img = img.resize((w, h), resample=self.resample)
            out[i] = np.asarray(img, dtype=np.float32)
        out = out / np.float32(255.0)  # rescale, then normalise (the official order, float32)
        out = (out - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return rearrange(torch.from_numpy(out), "t h w c -> t c h w").contiguous()


class NaViTFrontEnd(VisionFrontEnd):
    """VideoLLaMA3's front end on transformers' ``VideoLlama3VisionModel`` (its per-frame attention,
    axial 2-D RoPE, post-layernorm and bilinear 2x2 merge) and the ``readout`` projector.

    ``vision.hook_patch_features`` carries the MERGED tower output ``[T, H'/28, W'/28, d_vision]``
    (the tower merges before returning), then ``vision.hook_out.projector`` the video tokens.
    ``vision.blocks.{i}.hook_resid_post`` is ``[T * (H'/14) * (W'/14), d_vision]`` (the tower runs
    all frames as one packed sequence) and ``hook_pattern`` fires once per frame with
    ``[1, heads, P, P]``.
    """

    preprocess: NaViTPreprocessor
    frame_size_dependent = True

    def __init__(self, tower: torch.nn.Module, projector: torch.nn.Module, preprocess: NaViTPreprocessor):
        super().__init__(tower, {"projector": projector}, feature_layer=-1, drop_cls=False, preprocess=preprocess)

    def output_grid(self, num_frames: int, frame_size: Tuple[int, int] | None = None) -> Tuple[int, int, int]:
        """``(T, h, w)`` merged tokens for ``num_frames`` frames of ``frame_size = (H, W)`` pixels.

        Raises:
            ValueError: no ``frame_size`` (this front end's grid depends on the video).
        """
        if frame_size is None:
            raise ValueError("the VideoLLaMA3 front end needs the frame size to know its token grid")
        h, w = self.preprocess.frame_size(int(frame_size[0]), int(frame_size[1]), num_frames)
        return num_frames, h // self.preprocess.factor, w // self.preprocess.factor

    def patch_features(self, pixel_values: Float[torch.Tensor, "T 3 H W"]) -> Float[torch.Tensor, "T h w d_vision"]:
        """The tower on all frames (one packed sequence, attention within each frame), merged 2x2.

        Raises:
            ValueError: a frame size that is not a multiple of ``patch x merge`` pixels.
        """
        p, m = self.preprocess.patch_size, self.preprocess.merge_size
        T, _, H, W = pixel_values.shape
        if H % (p * m) or W % (p * m):
            raise ValueError(f"frames of {H}x{W} pixels do not split into {p * m}-pixel merge blocks")
        grid = torch.tensor([[T, H // p, W // p]], device=pixel_values.device)
        merge = torch.tensor([m], device=pixel_values.device)
        out = self.tower(pixel_values=patchify(pixel_values, p, m), grid_thw=grid, merge_sizes=merge)
        return rearrange(out.last_hidden_state, "(t h w) d -> t h w d", t=T, h=H // (p * m))
