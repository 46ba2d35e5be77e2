"""``VideolensError``: the base of every error the library raises on purpose.

Catch it to tell a videolens refusal (bad checkpoint, video, prompt, spec, knockout, run folder)
from a bug. Each subclass also derives from the built-in type it replaced (``ValueError``,
``KeyError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["VideolensError", "ContextLengthError", "NonFiniteError", "MissingVideoError", "FramePoolingWarning",
           "TokenizerMismatchError",
           "BatchedInputError"]


class VideolensError(Exception):
    """Base of every error videolens raises on purpose (the message says what was expected)."""


class ContextLengthError(VideolensError, ValueError):
    """The prompt (video tokens included) is longer than the model's context."""


class NonFiniteError(VideolensError, ArithmeticError):
    """The model's output holds NaN or infinity (the message says where); never scored."""


class FramePoolingWarning(UserWarning):
    """The number of sampled frames differs from the temporal pooling depth."""


class MissingVideoError(VideolensError, ValueError):
    """Tokens with video placeholders were run without their video (``model(inputs.tokens)``,
    ``model(prompt_text)``): the placeholders' embeddings would stand in for the video silently."""


class TokenizerMismatchError(VideolensError, ValueError):
    """A tokenizer that does not fit the model: ids past the embedding, option letters unknown or shared."""


class BatchedInputError(VideolensError, ValueError):
    """An analysis that takes one sample was given a batch: pass its rows one at a time (``batch[i]``)."""
