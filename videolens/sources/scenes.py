"""Scenes of coloured shapes on a canvas, rendered at continuous time: the pixels of the synthetic
clips (``videolens.sources.synthetic`` builds the tasks on them).

A ``Scene`` has a background colour per step and sprites (a shape, a colour per step, a position
that may move and wrap around the canvas); ``render_frames`` gives the ``num_steps`` frames the model
sees, ``write_clip`` a lossless mp4 whose TVBench-sampled frames are exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from jaxtyping import UInt8

__all__ = ["CANVAS", "SPRITE", "NUM_STEPS", "COLORS", "BACKGROUNDS", "BLACK", "SHAPES", "SHAPE_MASKS", "Sprite",
           "Scene", "render_frames", "render_clip", "write_clip"]

CANVAS = 32
SPRITE = 8
NUM_STEPS = 8

# object colours (RGB); names are the words used in questions and options
COLORS: Dict[str, Tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (40, 70, 250),
    "yellow": (240, 230, 30),
    "purple": (170, 40, 230),
    "cyan": (30, 220, 230),
    "orange": (250, 140, 0),
    "white": (245, 245, 245),
}
# background colours for scene transitions (dark to mid tones, distinct from each other)
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "red": (150, 20, 20),
    "green": (20, 130, 20),
    "blue": (20, 40, 160),
    "yellow": (160, 150, 20),
    "purple": (110, 20, 150),
    "cyan": (20, 140, 150),
    "orange": (170, 90, 0),
    "gray": (100, 100, 100),
}
BLACK = (0, 0, 0)


def _shape_masks(size: int = SPRITE) -> Dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    c = size / 2
    return {
        "square": np.ones((size, size), bool),
        "circle": (yy - c) ** 2 + (xx - c) ** 2 <= (size / 2) ** 2,
        "triangle": np.abs(xx - c) <= yy / 2,
        "diamond": np.abs(xx - c) + np.abs(yy - c) <= size / 2,
    }


SHAPE_MASKS = _shape_masks()
SHAPES: Tuple[str, ...] = tuple(SHAPE_MASKS)


# ---- scenes and rendering ---------------------------------------------------------------------
@dataclass(frozen=True)
class Sprite:
    """One shape. ``colors[s]`` is its colour name at step ``s`` (None: not shown); its top-left
    corner is at ``(y + vy * u, x + vx * u)`` pixels at time ``u`` (rounded; modulo the canvas
    when ``wrap``)."""

    shape: str
    colors: Tuple[Optional[str], ...]
    y: float
    x: float
    vy: float = 0.0
    vx: float = 0.0
    wrap: bool = False


@dataclass(frozen=True)
class Scene:
    """A clip as data: a background colour per step and the sprites."""

    backgrounds: Tuple[Tuple[int, int, int], ...]
    sprites: Tuple[Sprite, ...] = ()
    size: int = CANVAS

    @property
    def num_steps(self) -> int:
        return len(self.backgrounds)


def _step(u: float, n: int) -> int:
    return int(min(max(np.floor(u + 0.5), 0), n - 1))


def _render(scene: Scene, u: float) -> UInt8[np.ndarray, "H W 3"]:
    n, H = scene.num_steps, scene.size
    s = _step(u, n)
    img = np.empty((H, H, 3), np.uint8)
    img[:] = scene.backgrounds[s]
    for sp in scene.sprites:
        name = sp.colors[s]
        if name is None:
            continue
        mask = SHAPE_MASKS[sp.shape]
        y = int(np.floor(sp.y + sp.vy * u + 0.5))
        x = int(np.floor(sp.x + sp.vx * u + 0.5))
        rows = np.arange(y, y + mask.shape[0])
        cols = np.arange(x, x + mask.shape[1])
        if sp.wrap:
            rows, cols = rows % H, cols % H
        elif rows.min() < 0 or cols.min() < 0 or rows.max() >= H or cols.max() >= H:
            raise ValueError(f"sprite {sp} leaves the {H}x{H} canvas at u={u}")
        patch = img[np.ix_(rows, cols)]
        patch[mask] = COLORS[name]
        img[np.ix_(rows, cols)] = patch
    return img


def render_frames(scene: Scene) -> UInt8[np.ndarray, "T H W 3"]:
    """The frames the model sees: the scene at ``u = 0 .. num_steps - 1``.

    Returns:
        uint8 ``[num_steps, size, size, 3]``; equal to ``load_video(write_clip(...), num_steps).frames``.
    """
    return np.stack([_render(scene, float(u)) for u in range(scene.num_steps)])


def render_clip(scene: Scene, frames_per_step: int = 2) -> UInt8[np.ndarray, "N H W 3"]:
    """Every frame of the clip file: ``N = num_steps * frames_per_step + 1`` frames.

    Frame ``j`` shows time ``u = (j - i0) / frames_per_step`` where ``i0`` is the first index the
    TVBench sampling rule picks, so the sampled frames are exactly ``render_frames(scene)``.

    Raises:
        ValueError: ``frames_per_step`` is not 1 or an even number (odd values > 1 put the
            sampled frames between render times).
    """
    from .video import sample_frame_indices

    m = int(frames_per_step)
    if m < 1 or (m > 1 and m % 2):
        raise ValueError(f"frames_per_step must be 1 or even, got {frames_per_step}")
    n = scene.num_steps * m + 1
    idx = sample_frame_indices(n, 1.0, scene.num_steps)
    if not np.array_equal(np.diff(idx), np.full(scene.num_steps - 1, m)):
        raise AssertionError(f"sampling rule gave {idx.tolist()} for {n} frames")  # pragma: no cover
    i0 = int(idx[0])
    return np.stack([_render(scene, (j - i0) / m) for j in range(n)])


def write_clip(path, scene: Scene, fps: int = 8, frames_per_step: int = 2) -> Path:
    """Write the scene as a lossless mp4 (libx264rgb, ``-crf 0``: decodes to the same pixels).

    Returns:
        the path written.
    """
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = render_clip(scene, frames_per_step)
    with imageio.get_writer(str(path), fps=fps, codec="libx264rgb", quality=None,
                            ffmpeg_params=["-crf", "0", "-preset", "ultrafast"], macro_block_size=1,
                            pixelformat="bgr24") as wr:
        for f in frames:
            wr.append_data(f)
    return path


