"""``VideolensError``: the base of every error the library raises on purpose.

Catch it to tell a videolens refusal (bad checkpoint, video, prompt, spec, knockout, run folder)
from a bug. Each subclass also derives from the built-in type it replaced (``ValueError``,
``KeyError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import math

__all__ = ["VideolensError", "ContextLengthError", "NonFiniteError", "MissingVideoError", "FramePoolingWarning",
           "TokenizerMismatchError",
           "BatchedInputError", "require_finite", "non_finite_fields"]


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


def require_finite(value, what: str):
    """``value`` (a tensor, a number, or records: dicts and lists of them) unchanged when every number
    in it is finite.

    Raises:
        NonFiniteError: ``"<what>: NaN/inf in ..."`` naming the fields or the count.
    """
    import torch

    if torch.is_tensor(value):
        bad = int((~torch.isfinite(value.detach().float())).sum()) if value.is_floating_point() else 0
        if bad:
            raise NonFiniteError(f"{what}: NaN/inf in {bad} of {value.numel()} values")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NonFiniteError(f"{what}: the result is {value} (NaN/inf)")
        return value
    records = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    fields = non_finite_fields([r for r in records if isinstance(r, dict)])
    if fields:
        raise NonFiniteError(f"{what}: NaN/inf in {', '.join(fields[:6])}")
    return value


def non_finite_fields(records) -> list:
    """Names of the fields holding NaN or infinity (searched in nested lists and dicts)."""
    bad: list = []

    def walk(v, name):
        if isinstance(v, float) and not math.isfinite(v):
            bad.append(name)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{name}.{k}" if name else str(k))
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, name)

    for r in records:
        walk(r, "")
    return sorted(set(bad))
