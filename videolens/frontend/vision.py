"""The vision front end: frames -> vision tower -> (pooling, projector in the family's order) -> video tokens.

Every family describes its front end as data: which hidden state of the tower to read, whether
to drop the CLS token, and the ordered list of steps (``project``, 3-D adaptive average pooling,
per-frame 2-D pooling). Features travel between steps as a grid ``[T, rows, cols, d]``.

Hook points (names as seen from the HookedVideoLLM root):
- ``vision.hook_pixel_values``  ``[T, 3, H, W]``  normalised frames, fired by ``encode``.
- ``vision.hook_patch_features`` ``[T, rows, cols, d_vision]``  tower output grid, fired by ``encode``.
- ``vision.hook_video_embeds``  ``[1, T', h, w, d_model]``  the video tokens, fired on every
  forward pass of the language model (the front end itself runs once, in ``model.prepare``), so
  ``run_with_cache`` records them and ``run_with_hooks`` can patch them.
"""

from __future__ import annotations

import contextlib
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, UInt8
from torch import nn
from transformer_lens.hook_points import HookPoint

__all__ = [
    "VisionFrontEnd",
    "Projector",
    "AdaptivePool3d",
    "SpatialPool2d",
    "PixelShuffle",
    "FramePreprocessor",
    "PllavaPreResize",
    "CLIP_MEAN",
    "CLIP_STD",
]

from .preprocess import CLIP_MEAN, CLIP_STD, FramePreprocessor, PllavaPreResize  # noqa: E402,F401 (re-exported)


class Projector(nn.Module):
    """Two-layer MLP ``linear_1 -> act -> linear_2`` (LLaVA's multi_modal_projector)."""

    def __init__(self, d_in: int, d_out: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        from transformers.activations import ACT2FN

        self.linear_1 = nn.Linear(d_in, d_out, bias=bias)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(d_out, d_out, bias=bias)

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_out"]:
        return self.linear_2(self.act(self.linear_1(x)))


class AdaptivePool3d(nn.Module):
    """AdaptiveAvgPool3d over (frames, rows, cols) to ``shape`` (PLLaVA's pooling)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.pool = nn.AdaptiveAvgPool3d(self.shape)

    def forward(self, grid: Float[torch.Tensor, "T r c d"]) -> Float[torch.Tensor, "t h w d"]:
        x = rearrange(grid, "t r c d -> 1 d t r c")
        return rearrange(self.pool(x), "1 d t r c -> t r c d")

    def out_grid(self, grid: Tuple[int, int, int]) -> Tuple[int, int, int]:
        return self.shape


class PixelShuffle(nn.Module):
    """InternVL's pixel shuffle (``ps_version`` v2) with ``downsample_ratio`` 0.5: each 2x2 block of
    the feature grid becomes one token of 4x the width, ``[T, r, c, d] -> [T, r/2, c/2, 4d]``
    (official ``InternVLChatModel.pixel_shuffle``; Mini-InternVL-Chat-4B-V1-5's released code)."""

    def __init__(self, scale: float = 0.5):
        super().__init__()
        if scale != 0.5:
            raise ValueError(f"pixel shuffle scale {scale} is not supported (0.5)")
        self.scale = scale

    def forward(self, grid: Float[torch.Tensor, "T r c d"]) -> Float[torch.Tensor, "T h w d4"]:
        n, w, h, c = grid.shape
        s = self.scale
        x = grid.reshape(n, w, int(h * s), int(c / s)).permute(0, 2, 1, 3)
        x = x.reshape(n, int(h * s), int(w * s), int(c / (s * s)))
        return x.permute(0, 2, 1, 3).contiguous()

    def out_grid(self, grid: Tuple[int, int, int]) -> Tuple[int, int, int]:
        t, r, c = grid
        return t, int(r * self.scale), int(c * self.scale)


class SpatialPool2d(nn.Module):
    """Per-frame 2-D average (or max) pooling with kernel = stride (HF LlavaNextVideo's resampler)."""

    def __init__(self, stride: int, mode: str = "average"):
        super().__init__()
        if mode not in ("average", "max"):
            raise ValueError(f"spatial pool mode {mode!r} is not supported (average, max)")
        self.stride = int(stride)
        self.pool = nn.AvgPool2d(stride, stride) if mode == "average" else nn.MaxPool2d(stride, stride)

    def forward(self, grid: Float[torch.Tensor, "T r c d"]) -> Float[torch.Tensor, "T h w d"]:
        x = rearrange(grid, "t r c d -> t d r c")
        return rearrange(self.pool(x), "t d r c -> t r c d")

    def out_grid(self, grid: Tuple[int, int, int]) -> Tuple[int, int, int]:
        t, r, c = grid
        return t, r // self.stride, c // self.stride


def _encoder_layers(tower: nn.Module) -> List[nn.Module]:
    """The transformer layers of a vision tower: ``(vision_model.)encoder.layers`` (CLIP, SigLIP,
    NaViT), ``encoder.layer`` (InternViT) or ``blocks`` (Qwen-VL)."""
    encoder = getattr(getattr(tower, "vision_model", tower), "encoder", None)
    return list(getattr(encoder, "layers", None) or getattr(encoder, "layer", None) or getattr(tower, "blocks", None) or [])


HOOKED_ATTENTION = "videolens_hooked"
"""transformers attention implementation (``AttentionInterface``) the tower switches to while a
hook sits on a ``vision.blocks.{i}.hook_pattern``: eager attention whose softmax pattern passes
through that hook point before it weighs the values."""


def _hooked_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    pattern = scores.softmax(-1, dtype=torch.float32).to(query.dtype)  # [frames, heads, q, k]
    hooks = getattr(module, "_videolens_hooks", None)
    if hooks is not None:
        pattern = hooks.hook_pattern(pattern)
    pattern = nn.functional.dropout(pattern, p=dropout, training=module.training)
    return torch.matmul(pattern, value).transpose(1, 2).contiguous(), pattern


def _register_hooked_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(HOOKED_ATTENTION, _hooked_attention)


class VisionBlockHooks(nn.Module):
    """Hook points of one vision-tower layer.

    ``hook_resid_post``: the layer's output (the tower's residual stream after the layer), fired by
    a forward hook on the layer; what a hook returns replaces it, so the next layer and
    ``hidden_states`` see the edit. ``hook_pattern``: the layer's attention pattern
    ``[frames, heads, 1 + P, 1 + P]``, computed by ``HOOKED_ATTENTION`` while a hook is on it (an
    edit changes the attention output).
    """

    def __init__(self):
        super().__init__()
        self.hook_resid_post = HookPoint()
        self.hook_pattern = HookPoint()

    def after_layer(self, module, args, output):
        if isinstance(output, tuple):
            return (self.hook_resid_post(output[0]), *output[1:])
        return self.hook_resid_post(output)


class VisionFrontEnd(nn.Module):
    """Vision tower + ordered steps (projector / pooling) producing video tokens ``[T', h, w, d_model]``.

    Args:
        tower: a transformers vision model (``CLIPVisionModel``, ``SiglipVisionModel``, ...)
            returning ``hidden_states``.
        steps: ordered modules applied to the feature grid; the projector is the one named
            ``projector``.
        feature_layer: which ``hidden_states`` entry to read (-2 for LLaVA).
        drop_cls: drop the first (CLS) token ("default" feature select strategy).
        preprocess: turns uint8 frames into the tower's pixel values.
        extra: parameters stored with the front end but not used for videos (for example
            LLaVA-NeXT's ``image_newline``), kept so every checkpoint tensor has a home.
        trailing: the name of an ``extra`` vector written as one more video-block token after
            the video tokens (LLaVA-OneVision's ``image_newline``: ONE after the whole video);
            the layout records it as the span ``video_newline``.
    """

    def __init__(
        self,
        tower: nn.Module,
        steps: Dict[str, nn.Module],
        feature_layer: int,
        drop_cls: bool,
        preprocess: FramePreprocessor,
        extra: Optional[Dict[str, torch.Tensor]] = None,
        trailing: Optional[str] = None,
    ):
        super().__init__()
        self.tower = tower
        self.steps = nn.ModuleDict(steps)
        self.feature_layer = int(feature_layer)
        self.drop_cls = bool(drop_cls)
        self.preprocess = preprocess
        self.extra = nn.ParameterDict({k: nn.Parameter(v, requires_grad=False) for k, v in (extra or {}).items()})
        if trailing is not None and trailing not in self.extra:
            raise ValueError(f"trailing token {trailing!r} is not one of the extra parameters {sorted(self.extra)}")
        self.trailing = trailing
        self.hook_pixel_values = HookPoint()
        self.hook_patch_features = HookPoint()
        self.hook_video_embeds = HookPoint()
        self.hook_out = nn.ModuleDict({name: HookPoint() for name in steps})  # vision.hook_out.projector, .pool
        layers = _encoder_layers(tower)
        self.blocks = nn.ModuleList([VisionBlockHooks() for _ in layers])  # vision.blocks.{i}.hook_resid_post
        for layer, hooks in zip(layers, self.blocks):
            layer.register_forward_hook(hooks.after_layer)
            attn = getattr(layer, "self_attn", None) or getattr(layer, "attention", None) or getattr(layer, "attn", None)
            if attn is not None:
                object.__setattr__(attn, "_videolens_hooks", hooks)  # a reference, not a child module

    @property
    def image_size(self) -> int:
        size = self.tower.config.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def patch_grid(self) -> Tuple[int, int]:
        patch = self.tower.config.patch_size
        n = self.image_size // int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        return n, n

    frame_size_dependent = False

    deepstack_levels = 0
    """DeepStack levels packed after the video tokens in ``encode``'s output (Qwen3-VL's
    ``videolens.frontend.qwen_vl.Qwen3VLFrontEnd``); 0 for every other front end."""

    def slot_times(self, video, slots: int) -> List[float]:
        """Seconds written before each temporal slot by per-frame templates (``frame_format``'s
        ``{time}``): the sampled frames' timestamps, one every ``num_frames // slots`` frames."""
        return [float(t) for t in video.timestamps[:: max(1, video.num_frames // slots)][:slots]]

    @property
    def n_trailing(self) -> int:
        """Tokens written after the video tokens (``trailing``), 0 or 1."""
        return 0 if self.trailing is None else 1

    def trailing_embeds(self) -> Float[torch.Tensor, "n d_model"]:
        """The ``trailing`` vector(s) ``[n_trailing, d_model]`` (empty when there are none)."""
        if self.trailing is None:
            param = next(self.parameters())
            return torch.empty(0, 0, dtype=param.dtype, device=param.device)
        return self.extra[self.trailing].reshape(1, -1)
    """True for front ends whose token grid depends on the frames' size (``videolens.frontend.navit``)."""

    def output_grid(self, num_frames: int, frame_size: Optional[Tuple[int, int]] = None) -> Tuple[int, int, int]:
        """``(T', h, w)`` of the video tokens for ``num_frames`` input frames (``frame_size``, the
        frames' ``(H, W)``, matters only to front ends with ``frame_size_dependent``)."""
        grid = (num_frames, *self.patch_grid)
        for step in self.steps.values():
            if hasattr(step, "out_grid"):
                grid = step.out_grid(grid)
        return tuple(int(g) for g in grid)

    def patch_features(self, pixel_values: Float[torch.Tensor, "T 3 H W"]) -> Float[torch.Tensor, "T r c d_vision"]:
        """Tower hidden state ``feature_layer``, CLS dropped, as a grid."""
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True)
        feats = out.hidden_states[self.feature_layer]
        if self.drop_cls:
            feats = feats[:, 1:]
        n = feats.shape[1]
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch features do not form a square grid")
        return rearrange(feats, "t (r c) d -> t r c d", r=side)

    def encode(self, pixel_values: Float[torch.Tensor, "T 3 H W"]) -> Float[torch.Tensor, "T h w d_model"]:
        """Pixel values -> video tokens (runs the tower; no ``hook_video_embeds``).

        Hook points on the way: ``vision.hook_pixel_values`` ``[T, 3, H, W]``,
        ``vision.blocks.{i}.hook_pattern`` (``[T, heads, 1 + P, 1 + P]``) and
        ``vision.blocks.{i}.hook_resid_post`` (each tower layer's output, ``[T, 1 + P, d_vision]``;
        edits flow into the next layer), ``vision.hook_patch_features`` ``[T, r, c, d_vision]``,
        then ``vision.hook_out.<step>`` after each step (``projector``: ``[T, r, c, d_model]``,
        ``pool``: the pooled grid).
        """
        pixel_values = self.hook_pixel_values(pixel_values)
        with self._pattern_hooks_live():
            grid = self.hook_patch_features(self.patch_features(pixel_values))
        for name, step in self.steps.items():
            grid = self.hook_out[name](step(grid))
        return grid

    @contextlib.contextmanager
    def _pattern_hooks_live(self):
        """Switch the tower to ``HOOKED_ATTENTION`` while a hook sits on a ``hook_pattern``
        (otherwise the tower keeps its own, faster, attention)."""
        config = getattr(self.tower, "config", None)
        if config is None or not any(b.hook_pattern.fwd_hooks for b in self.blocks):
            yield
            return
        _register_hooked_attention()
        before = config._attn_implementation
        config._attn_implementation = HOOKED_ATTENTION
        try:
            yield
        finally:
            config._attn_implementation = before

    def pixels(self, frames: UInt8[np.ndarray, "T H W 3"]) -> Float[torch.Tensor, "T 3 H W"]:
        """uint8 frames -> the tower's pixel values, in the front end's dtype and device."""
        param = next(self.tower.parameters())
        on_device = getattr(self.preprocess, "backend", "pil") == "torch"  # FramePreprocessor(backend="torch")
        pixels = self.preprocess(frames, device=param.device) if on_device else self.preprocess(frames)
        return pixels.to(device=param.device, dtype=param.dtype)

    def forward(self, frames: UInt8[np.ndarray, "T H W 3"]) -> Float[torch.Tensor, "T h w d_model"]:
        """uint8 frames -> video tokens, in the front end's dtype and device."""
        return self.encode(self.pixels(frames))
