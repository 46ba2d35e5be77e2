"""DeepStack (Qwen3-VL): visual features added to the residual stream of the first language-model
layers at the video positions, each through a hook point of its own.

transformers' ``Qwen3VLTextModel`` adds, after decoder layer ``l < k``, the DeepStack level ``l``
(a merger of vision block ``deepstack_visual_indexes[l]``) to the hidden states of the video
tokens. Here that addition is the block's output: after block ``l`` has computed
``blocks.{l}.hook_resid_post``, the block returns ``hook_resid_post + blocks.{l}.hook_deepstack``,
where ``hook_deepstack`` ``[batch, pos, d_model]`` holds level ``l`` at the video positions and
zeros elsewhere. So

- ``blocks.{l+1}.hook_resid_pre = blocks.{l}.hook_resid_post + blocks.{l}.hook_deepstack``
  (the one place where a block's output and the next block's input differ); ``run_with_cache``
  records the additions, and a hook on ``hook_deepstack`` ablates or patches them
  (zeroing it equals transformers' model with DeepStack switched off);
- the additions sit at the video positions, so a knockout of edges from the video (``video->last``,
  cross-frame edges) blocks what they carry as well: the paper's targets apply unchanged.

A forward that resumes from a residual stream (``start_at_layer``, the fast knockout engine,
span patching) must know the video too: ``with model.deepstack.feeding(inputs):`` (the engines
do this). Resuming below layer ``k`` without it raises.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from jaxtyping import Float, Int
from transformer_lens.hook_points import HookPoint

__all__ = ["DeepStack", "add_deepstack_hooks", "feeding"]


def feeding(model, inputs, rows: Optional[Int[torch.Tensor, "R"]] = None):
    """``model.deepstack.feeding(inputs, rows)`` for a DeepStack model, a no-op context for any
    other: what every forward resumed from a residual stream runs inside."""
    ds = getattr(model, "deepstack", None)
    return contextlib.nullcontext() if ds is None else ds.feeding(inputs, rows)


def add_deepstack_hooks(model, levels: int) -> None:
    """Give blocks ``0..levels-1`` a ``hook_deepstack`` hook point (before ``model.setup()``).

    Raises:
        ValueError: more levels than the model has layers.
    """
    if levels > model.cfg.n_layers:
        raise ValueError(f"{levels} DeepStack levels for a language model of {model.cfg.n_layers} layers")
    for l in range(levels):
        model.blocks[l].hook_deepstack = HookPoint()


class DeepStack:
    """The DeepStack additions of one model (module doc): which video features are current, and the
    block hooks that add them.

    Attributes:
        levels: ``k``, the number of levels (blocks ``0..k-1`` add one each).
        offset: absolute position of the first residual row of the current forward (the length of
            a key-value cache being extended; set by ``HookedVideoLLM.forward``).
    """

    def __init__(self, model, levels: int):
        self.levels = int(levels)
        self.offset = 0
        self._video: Optional[tuple] = None  # (positions [n] or [B, n], levels [B, n, k, d])
        self._rows: Optional[torch.Tensor] = None
        self._fed = False
        for l in range(self.levels):
            model.blocks[l].register_forward_hook(_AfterBlock(self, l))

    @contextlib.contextmanager
    def feeding(self, inputs=None, rows: Optional[Int[torch.Tensor, "R"]] = None) -> Iterator[None]:
        """The video whose DeepStack levels the blocks add, for forwards that do not start from a
        ``VideoLLMInput`` (a residual stream resumed at a layer below ``levels``).

        Args:
            inputs: the ``VideoLLMInput`` the residual stream came from (None: no video, nothing
                is added).
            rows: absolute positions of the residual rows when they are not consecutive (a
                forward over a subset of positions); default: ``offset``, ``offset + 1``, ...
        """
        video = None if inputs is None else (inputs.video_positions, self.levels_of(inputs.video_embeds))
        with self.set_video(video, rows):
            yield

    def levels_of(self, packed: Float[torch.Tensor, "... T h w w_packed"]) -> Float[torch.Tensor, "batch n k d_model"]:
        """The DeepStack levels packed after the video tokens (``[T, h, w, (1 + k) d]`` or with a batch
        axis), as ``[batch, T*h*w, k, d]``."""
        packed = packed if packed.dim() == 5 else packed[None]
        d = packed.shape[-1] // (1 + self.levels)
        return packed[..., d:].reshape(packed.shape[0], -1, self.levels, d)

    @contextlib.contextmanager
    def set_video(self, video: Optional[tuple], rows: Optional[torch.Tensor] = None) -> Iterator[None]:
        """Make ``video`` = ``(positions [n] or [batch, n], levels [batch, n, k, d_model])`` current
        (None: no video) while the context lasts; ``HookedVideoLLM`` runs every ``VideoLLMInput``
        inside it."""
        before = (self._video, self._rows, self._fed)
        self._video, self._rows, self._fed = video, rows, True
        try:
            yield
        finally:
            self._video, self._rows, self._fed = before

    def check_resume(self, start_at_layer: Optional[int], floating_input: bool) -> None:
        """Refuse a forward from a residual stream below layer ``levels`` when no video is fed.

        Raises:
            ValueError: naming ``model.deepstack.feeding(inputs)``.
        """
        if floating_input and not self._fed and (start_at_layer or 0) < self.levels:
            raise ValueError(
                f"this model adds DeepStack features after blocks 0..{self.levels - 1}: a forward resumed from a "
                f"residual stream at layer {start_at_layer or 0} must know its video; run it inside "
                "`with model.deepstack.feeding(inputs):` (feeding(None) for a residual stream without video)")

    def addition(self, l: int, out: Float[torch.Tensor, "batch R d_model"]) -> Float[torch.Tensor, "batch R d_model"]:
        """Level ``l`` at the video positions among the residual rows of ``out``, zeros elsewhere."""
        add = torch.zeros_like(out)
        positions, feats = self._video
        B, R = out.shape[0], out.shape[1]
        positions = positions.to(out.device)
        rows = (self._rows.to(out.device) if self._rows is not None
                else torch.arange(self.offset, self.offset + R, device=out.device))
        size = int(max(int(positions.max()) if positions.numel() else 0, int(rows.max()) if R else 0)) + 1
        where = torch.full((size,), -1, dtype=torch.long, device=out.device)
        where[rows] = torch.arange(R, device=out.device)
        level = feats[..., l, :].to(device=out.device, dtype=out.dtype)  # [B or 1, n, d]
        if positions.dim() != 1:  # M-RoPE already refuses such batches (the tables are shared)
            raise ValueError("DeepStack additions need one layout for the whole batch, not a left-padded batch")
        local = where[positions]
        keep = local >= 0
        add[:, local[keep]] = level[:, keep].expand(B, -1, -1) if level.shape[0] == 1 else level[:, keep]
        return add



class _AfterBlock:
    """Block ``l``'s forward hook: its output plus ``blocks.{l}.hook_deepstack`` while a video is current.
    An object, not a closure, so a deep copy or pickle of the model keeps it tied to the copy's own
    ``DeepStack``."""

    def __init__(self, deepstack: DeepStack, l: int):
        self.deepstack, self.l = deepstack, l

    def __call__(self, module, args, output):
        if self.deepstack._video is None:
            return None
        return output + module.hook_deepstack(self.deepstack.addition(self.l, output))
