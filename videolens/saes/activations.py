"""An activation source for training SAEs on a VideoLLM: clips run through the model, one hook
point's activations kept at chosen positions (video tokens, question tokens, the last position...),
shuffled into training batches.

``ActivationSource`` is the iterator SAELens' ``SAETrainer`` takes as its data provider: each
``next()`` is a ``[batch_size, d_in]`` float32 tensor. It runs ``clips_per_fill`` clips at a time
(each clip prepared once, the forward stopped after the hook's block), pools their rows with what
was left from the last fill and shuffles them; an epoch is one pass over the clips in an order drawn
from the seed, and the source goes round again as long as the trainer asks. Its state
(``state_dict``: epoch, cursor, rows not yet served) is saved with every checkpoint, so a resumed
training reads exactly the rows an uninterrupted one would.

Example::

    source = ActivationSource(model, samples, "blocks.2.hook_resid_post", positions="video", batch_size=256)
    batch = next(source)                      # [256, d_model]
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from jaxtyping import Float

from ..prompting.layout import PositionSpec
from ..sources.data import VideoQA

__all__ = ["ActivationSource", "hook_activations", "hook_layer", "stop_after"]


def hook_layer(hook_name: str) -> Optional[int]:
    """The block a hook point belongs to (``blocks.2.hook_resid_post`` -> 2), None outside the blocks."""
    parts = hook_name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def stop_after(model, hook_name: str) -> Optional[int]:
    """``stop_at_layer`` for a forward that only needs ``hook_name``: the block after the hook's, or
    None (the whole forward) outside the blocks or at the last one."""
    layer = hook_layer(hook_name)
    return layer + 1 if layer is not None and layer + 1 < model.cfg.n_layers else None


@torch.no_grad()
def hook_activations(model, inputs, hook_name: str, positions: PositionSpec = "video"
                     ) -> Float[torch.Tensor, "n d_in"]:
    """One input's activations at ``hook_name`` at ``positions`` (``videolens.prompting.layout.resolve_positions``:
    a token group such as ``"video"``, ``"question"``, ``"last"``, a list of groups, or indices; None:
    all), in position order, heads flattened for ``attn.hook_z`` (as SAELens reads it). The forward
    stops after the hook's block.

    Raises:
        KeyError: the model has no such hook point (the message names it).
        ValueError: a batched input (give one sample), or an empty position selection.
    """
    from ..prompting.layout import resolve_positions

    if hook_name not in model.hook_dict:
        raise KeyError(f"the model has no hook point {hook_name!r} (model.hook_dict lists them)")
    if int(inputs.tokens.shape[0]) != 1:
        raise ValueError("hook_activations takes one sample; give the rows of a batch one at a time (batch[i])")
    _, cache = model.run_with_cache(inputs, names_filter=hook_name, stop_at_layer=stop_after(model, hook_name))
    act = cache[hook_name][0]
    act = act.reshape(act.shape[0], -1)
    return act[resolve_positions(positions, act.shape[0], inputs.layout).to(act.device)].float()


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & (2 ** 63 - 1)


class ActivationSource:
    """Training batches of one hook point's activations over clips (module doc).

    Args:
        model: the ``HookedVideoLLM``.
        samples: the clips (``VideoQA``; an unreadable one is skipped with a warning).
        hook_name: the hook point.
        positions: which positions of each clip (``hook_activations``).
        batch_size: rows per batch.
        clips_per_fill: clips run per fill of the shuffle pool.
        seed: the clip order and the shuffles.
        num_frames: frames per clip (default: the model's).

    Raises:
        ValueError: no samples, or no clip gives a row (``__next__``).
    """

    def __init__(self, model, samples: Sequence[VideoQA], hook_name: str, positions: PositionSpec = "video",
                 batch_size: int = 256, clips_per_fill: int = 16, seed: int = 0, num_frames: Optional[int] = None):
        if not samples:
            raise ValueError("the activation source has no clips")
        self.model, self.samples, self.hook_name, self.positions = model, list(samples), hook_name, positions
        self.batch_size, self.clips_per_fill, self.seed, self.num_frames = int(batch_size), int(clips_per_fill), seed, num_frames
        self.epoch, self.cursor, self.fills = 0, 0, 0
        self._rows: Optional[torch.Tensor] = None
        self.skipped: List[str] = []

    def _order(self) -> List[int]:
        g = torch.Generator().manual_seed(_seed(self.seed, "order", self.epoch))
        return torch.randperm(len(self.samples), generator=g).tolist()

    def _fill(self) -> None:
        from ..running.samples import prepare_or_skip

        order = self._order()
        got = []
        for i in order[self.cursor:self.cursor + self.clips_per_fill]:
            sample = self.samples[i]
            inputs, status, message = prepare_or_skip(self.model, sample, self.num_frames)
            if inputs is None:
                if self.epoch == 0:
                    self.skipped.append(sample.sample_id)
                    warnings.warn(f"activation source: {sample.sample_id} {status}: {message}", stacklevel=2)
                continue
            got.append(hook_activations(self.model, inputs, self.hook_name, self.positions).cpu())
        self.cursor += self.clips_per_fill
        if self.cursor >= len(order):
            self.epoch, self.cursor = self.epoch + 1, 0
            if len(self.skipped) == len(self.samples):
                raise ValueError(f"activation source: none of the {len(self.samples)} clips could be read")
        if not got:
            return
        pool = torch.cat(([self._rows] if self._rows is not None else []) + got)
        g = torch.Generator().manual_seed(_seed(self.seed, "shuffle", self.fills))
        self._rows = pool[torch.randperm(pool.shape[0], generator=g)]
        self.fills += 1

    def __iter__(self) -> "ActivationSource":
        return self

    def __next__(self) -> Float[torch.Tensor, "batch d_in"]:
        while self._rows is None or self._rows.shape[0] < self.batch_size:
            self._fill()
        out, self._rows = self._rows[:self.batch_size], self._rows[self.batch_size:]
        return out

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed source needs to serve the same rows next."""
        return {"epoch": self.epoch, "cursor": self.cursor, "fills": self.fills, "rows": self._rows,
                "skipped": list(self.skipped)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epoch, self.cursor, self.fills = int(state["epoch"]), int(state["cursor"]), int(state["fills"])
        self._rows, self.skipped = state["rows"], list(state.get("skipped", []))
