"""``VideoEmbed``: the token embedding that writes a video's tokens over its placeholder positions."""

from __future__ import annotations

import weakref
from typing import Optional

import torch
from jaxtyping import Float, Int

from .._tl_compat import Embed, HookedTransformerConfig
from ..errors import MissingVideoError, TokenizerMismatchError

__all__ = ["VideoEmbed"]


class VideoEmbed(Embed):
    """``W_E[tokens]`` with the current input's video tokens written over its video positions.

    The video tokens are set for the duration of one forward pass by ``HookedVideoLLM``; token
    ids at those positions (placeholders, possibly outside the vocabulary) are never looked up.
    Tokens that hold the placeholder id while no video is set raise ``MissingVideoError`` unless
    ``allow_missing_video`` is True (then the placeholder's own embedding row is used). Any other id
    without an embedding row raises ``TokenizerMismatchError`` (not an IndexError from inside).
    """

    def __init__(self, cfg: HookedTransformerConfig, placeholder_id: Optional[int] = None):
        super().__init__(cfg)
        self.video: Optional[tuple] = None  # (positions [n] or [batch, n], embeds [batch, n, d_model])
        self.placeholder_id = placeholder_id
        self.allow_missing_video = False
        self._checked: Optional[tuple] = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_checked"] = None  # a weak reference: not picklable, and only a cache
        return state

    def _check_ids(self, tokens: torch.Tensor) -> None:
        """Raise ``TokenizerMismatchError`` for ids (other than the placeholder) the embedding has no
        row for. Checked once per token tensor (a knockout sweep reruns the same tokens many times)."""
        ref, version = self._checked or (None, None)
        if (ref is not None and ref() is tokens and version == tokens._version) or not tokens.numel():
            return
        rows = self.W_E.shape[0]
        outside = (tokens >= rows) | (tokens < 0)
        if self.placeholder_id is not None:
            outside &= tokens != self.placeholder_id
        if bool(outside.any()):
            bad = sorted({int(t) for t in tokens[outside].tolist()})
            raise TokenizerMismatchError(
                f"token id(s) {bad[:8]} lie outside the embedding ({rows} rows): the tokens come from a tokenizer "
                "that does not fit this model")
        self._checked = (weakref.ref(tokens), tokens._version)

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_model"]:
        if self.video is None:
            if (self.placeholder_id is not None and not self.allow_missing_video
                    and bool((tokens == self.placeholder_id).any())):
                n = int((tokens == self.placeholder_id).sum())
                raise MissingVideoError(
                    f"the tokens hold the video placeholder (id {self.placeholder_id}) at {n} position(s) but no video: "
                    "run the VideoLLMInput (model(inputs), run_with_cache(inputs)); to run the bare tokens on purpose "
                    "set model.allow_missing_video = True")
            self._check_ids(tokens)
            return super().forward(tokens)
        self._check_ids(tokens)
        positions, embeds = self.video
        if positions.numel() and int(positions.max()) >= tokens.shape[1]:
            raise ValueError("video positions lie past the tokens: pass the VideoLLMInput, not a slice of it")
        safe = tokens.clone()
        if positions.dim() == 2:  # a left-padded batch: each row's video sits at its own positions
            rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
            safe[rows, positions] = 0
            out = super().forward(safe)
            out[rows, positions] = embeds.to(out.dtype)
            return out
        safe[:, positions] = 0
        out = super().forward(safe)
        out[:, positions] = embeds.to(out.dtype)
        return out
