"""Frame preprocessing of CLIP-style front ends: uint8 frames -> the tower's pixel values.

``FramePreprocessor`` runs transformers' PIL CLIP image processor (the paper's) or, with
``backend="torch"``, the same steps as batched torch ops (``videolens.frontend.tensor_preprocess``);
``PllavaPreResize`` is the official PLLaVA processor's resize before CLIP's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float, UInt8

__all__ = ["CLIP_MEAN", "CLIP_STD", "PllavaPreResize", "FramePreprocessor"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PllavaPreResize:
    """The official ``PllavaProcessor`` resize that runs BEFORE CLIP's resize and crop
    (official models/pllava/processing_pllava.py ``resize_crop_longshort``).

    For one video of ``H x W`` frames with aspect ratio ``r = long / short``: the short edge becomes
    ``s = max(min(short, int(min(640, long) / r)), clip_size)``, the long edge
    ``int(s * long / short)`` (bicubic, uint8, PIL), and the long edge is then cut to
    ``int(s * r)`` starting at ``((long' - int(s * r)) // 2) // 2`` (the official offset, halved
    twice). 1280x720 frames become 640x360. Without it pixel_values differ by up to 0.165.

    Attributes:
        clip_size: the image processor's ``size["shortest_edge"]`` (336 for CLIP ViT-L/14-336).
        max_long_edge: the official cap on the long edge (640).
    """

    clip_size: int
    max_long_edge: int = 640

    def output_size(self, height: int, width: int) -> Tuple[Tuple[int, int], Tuple[slice, slice]]:
        """``((h, w) to resize to, (row slice, column slice) to keep)`` for ``height x width`` frames."""
        rate = max(height, width) / min(height, width)
        short = min(min(height, width), int(min(self.max_long_edge, max(height, width)) / rate))
        short = max(short, self.clip_size)
        # transformers' get_resize_output_image_size(size=short, default_to_square=False)
        long = int(short * max(height, width) / min(height, width))
        size = (long, short) if height > width else (short, long)
        keep_long = int(short * rate)
        start = ((long - keep_long) // 2) // 2
        cut = slice(start, start + keep_long)
        return size, ((cut, slice(None)) if height > width else (slice(None), cut))

    def __call__(self, frames: UInt8[np.ndarray, "T H W 3"]) -> UInt8[np.ndarray, "T h w 3"]:
        from PIL import Image

        (h, w), (rows, cols) = self.output_size(int(frames.shape[1]), int(frames.shape[2]))
        out = []
        for f in frames:
            img = Image.fromarray(np.ascontiguousarray(f))
            if img.size != (w, h):
                img = img.resize((w, h), resample=Image.Resampling.BICUBIC)
            out.append(np.asarray(img)[rows, cols])
        return np.stack(out)


@dataclass
class FramePreprocessor:
    """Optional pre-resize, then shortest-edge resize (bicubic), centre crop, rescale to [0, 1],
    normalise (as the official loader).

    Uses transformers' PIL CLIP image processor, the same code the reference models' processors run.
    ``pre_resize`` (e.g. ``PllavaPreResize``, the PLLaVA family's default) runs on the uint8 frames
    first; set it to None for plain CLIP preprocessing (a difference from the paper's code).
    ``backend="torch"`` runs the same steps as batched torch ops on the front end's device
    (``videolens.frontend.tensor_preprocess``: within 2 uint8 levels of PIL; a difference from the paper's code).
    """

    image_size: int
    mean: Tuple[float, float, float] = CLIP_MEAN
    std: Tuple[float, float, float] = CLIP_STD
    options: Dict = field(default_factory=dict)
    pre_resize: Optional[PllavaPreResize] = None
    backend: str = "pil"

    def __post_init__(self) -> None:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        kw = dict(
            size={"shortest_edge": self.image_size},
            crop_size={"height": self.image_size, "width": self.image_size},
            image_mean=list(self.mean),
            image_std=list(self.std),
            do_convert_rgb=False,
        )
        kw.update(self.options)
        self._proc = CLIPImageProcessorPil(**kw)

    @classmethod
    def from_processor_config(cls, cfg: Dict, image_size: int, pre_resize: bool = False) -> "FramePreprocessor":
        """Build from a checkpoint's ``preprocessor_config.json`` (sizes, mean, std, resample);
        ``pre_resize`` adds the official PLLaVA pre-resize at the config's shortest edge."""
        size = cfg.get("size", {})
        shortest = size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size)
        crop = cfg.get("crop_size", {"height": image_size, "width": image_size})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        opts = {k: cfg[k] for k in ("do_resize", "do_center_crop", "do_rescale", "rescale_factor", "do_normalize", "resample") if k in cfg}
        opts["size"] = {"shortest_edge": shortest}
        opts["crop_size"] = crop
        return cls(
            image_size=image_size,
            mean=tuple(cfg.get("image_mean", CLIP_MEAN)),
            std=tuple(cfg.get("image_std", CLIP_STD)),
            options=opts,
            pre_resize=PllavaPreResize(int(shortest)) if pre_resize else None,
        )

    def __call__(self, frames: UInt8[np.ndarray, "T H W 3"], device=None) -> Float[torch.Tensor, "T 3 S S"]:
        if self.backend == "torch":
            from .tensor_preprocess import tensor_pixel_values

            return tensor_pixel_values(self, frames, device or "cpu")
        if self.pre_resize is not None:
            frames = self.pre_resize(frames)
        out = self._proc(list(frames), return_tensors="pt")["pixel_values"]
        return out.float()
