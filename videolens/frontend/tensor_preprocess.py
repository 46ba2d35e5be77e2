"""Frame preprocessing on tensors: the CLIP-style steps of ``FramePreprocessor`` as batched torch ops
on the front end's device, a named option beside the default PIL path.

The default (``FramePreprocessor.backend = "pil"``) runs transformers' PIL CLIP image processor
frame by frame, the code the paper's processors run. ``backend = "torch"`` does the same steps on
all frames at once: the PLLaVA pre-resize when set, the shortest-edge resize, the centre crop,
rescale and normalise. Resizes use ``torch.nn.functional.interpolate(..., antialias=True)`` (the
same bicubic / bilinear kernels as PIL, a = -0.5), on uint8 frames on the CPU and on float frames
rounded back to uint8 levels elsewhere. PIL computes in fixed point, so a few output pixels land
one or two uint8 levels away: measured on the shared real videos, at most 2/255 before
normalising (``TOLERANCE_LEVELS``), with under 1% of values off at all on the CPU's uint8 kernels
and about 2% on the float kernels other devices run (tests/test_tensor_preprocess.py checks
both on real frames). That is a difference from the paper's code, which is why it is not the
default.

Example::

    model.vision.preprocess.backend = "torch"      # or from_pretrained(..., preprocessing="torch")
    inputs = model.prepare(sample)                  # frames resized on the model's device
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, UInt8

__all__ = ["BACKENDS", "TOLERANCE_LEVELS", "tensor_pixel_values"]

BACKENDS = ("pil", "torch")
"""``FramePreprocessor.backend`` values: ``"pil"`` (default, transformers' PIL processor, the
paper's) and ``"torch"`` (this module)."""

TOLERANCE_LEVELS = 2
"""Largest difference from the PIL path in uint8 levels before rescaling and normalising."""

_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resample codes -> interpolate modes


def _resize(x: torch.Tensor, size: Tuple[int, int], mode: str, uint8_kernel: Optional[bool] = None) -> torch.Tensor:
    """uint8 ``[T, 3, H, W]`` -> uint8 ``[T, 3, h, w]`` with PIL's antialiased kernels: torch's uint8
    kernels on the CPU (they follow PIL's), elsewhere float ones in PIL's two passes, each rounded
    to uint8 levels."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.device.type == "cpu" if uint8_kernel is None else uint8_kernel:
        return F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    y = x.float()
    for step in ((x.shape[-2], size[1]), tuple(size)):  # PIL: columns, then rows, uint8 in between
        if tuple(y.shape[-2:]) != step:
            y = F.interpolate(y, size=step, mode=mode, antialias=True, align_corners=False).round_().clamp_(0, 255)
    return y.to(torch.uint8)


def _shortest_edge(height: int, width: int, size: int) -> Tuple[int, int]:
    """transformers' ``get_resize_output_image_size(size=size, default_to_square=False)``."""
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(size * long / short)
    return (size, new_long) if height <= width else (new_long, size)


def tensor_pixel_values(pre, frames: UInt8[np.ndarray, "T H W 3"], device="cpu") -> Float[torch.Tensor, "T 3 h w"]:
    """``FramePreprocessor``'s steps on a batch of frames as torch ops on ``device``.

    Args:
        pre: the ``FramePreprocessor`` (its sizes, mean, std, resample and pre-resize are used).
        frames: uint8 ``[T, H, W, 3]``.
        device: where to run (the front end's device).

    Returns:
        float32 pixel values ``[T, 3, crop_h, crop_w]``, equal to the PIL path within
        ``TOLERANCE_LEVELS`` uint8 levels before normalising.

    Raises:
        ValueError: a processor option this path does not cover (another resample, no crop, ...).
    """
    opts = pre._proc
    resample = int(getattr(opts, "resample", 3))
    if resample not in _MODES:
        raise ValueError(f"preprocessing='torch' covers bilinear and bicubic resampling; this processor uses {resample}")
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        if getattr(opts, flag, True) is False:
            raise ValueError(f"preprocessing='torch' needs {flag}=True (the processor config turns it off)")
    mode = _MODES[resample]
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).contiguous()
    if pre.pre_resize is not None:
        size, (rows, cols) = pre.pre_resize.output_size(int(x.shape[2]), int(x.shape[3]))
        x = _resize(x, size, mode)[:, :, rows, cols]
    x = _resize(x, _shortest_edge(int(x.shape[2]), int(x.shape[3]), int(opts.size["shortest_edge"])), mode)
    ch, cw = int(opts.crop_size["height"]), int(opts.crop_size["width"])
    h, w = int(x.shape[2]), int(x.shape[3])
    if h < ch or w < cw:
        raise ValueError(f"preprocessing='torch': frames of {h}x{w} after resizing are smaller than the {ch}x{cw} crop")
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[:, :, top:top + ch, left:left + cw].float() * float(opts.rescale_factor)
    mean = torch.tensor(opts.image_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(opts.image_std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
