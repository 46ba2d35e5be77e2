"""Patching metrics on the option letters at the last prompt position.

A metric maps logits ``[batch, pos, d_vocab]`` to one value per batch element ``[batch]`` (so a
batch of patched runs is scored at once; with batch 1 ``.item()`` gives the scalar that
``transformer_lens.patching`` expects). Probabilities are the softmax over the full vocabulary at
the last position, read at the option letter token (Map the Flow's methods).

Example::

    metric = logit_diff(clean, good="A", bad="B")
    clean_value = metric(model(clean))            # tensor([2.31])
    score = normalised(metric, clean_value, metric(model(corrupted)))
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from jaxtyping import Float

from ..prompting.inputs import VideoLLMInput

__all__ = ["Metric", "logit_diff", "option_prob", "normalised"]

Metric = Callable[[Float[torch.Tensor, "batch pos d_vocab"]], Float[torch.Tensor, "batch"]]
Letters = Union[str, Sequence[str], None]


def _ids(inputs: VideoLLMInput, letters: Sequence[str]) -> list:
    bad = [L for L in letters if L not in inputs.option_token_ids]
    if bad:
        raise KeyError(f"no option letter(s) {bad}; options are {list(inputs.layout.letters)}")
    return [inputs.option_token_ids[L] for L in letters]


def _letters(inputs: VideoLLMInput, letters: Letters, default: Sequence[str], what: str) -> list:
    if letters is None:
        if not default:
            raise ValueError(f"{what}: the input has no ground-truth letter; pass the letter(s) explicitly")
        return list(default)
    return [letters] if isinstance(letters, str) else list(letters)


def logit_diff(inputs: VideoLLMInput, good: Letters = None, bad: Letters = None) -> Metric:
    """Option-letter logit difference at the last position.

    ``metric(logits) = mean_g logits[:, -1, g] - mean_b logits[:, -1, b]`` (units: logits),
    the IOI-style metric of activation patching.

    Args:
        inputs: the input whose option letters are scored (clean and corrupted share them).
        good: letter(s) counted positively (default: the true letter).
        bad: letter(s) counted negatively (default: the mean over the false letters).

    Raises:
        KeyError: a letter that is not an option; ValueError: no true letter and none given.
    """
    L = inputs.layout
    good_l = _letters(inputs, good, [L.true_letter] if L.true_letter else [], "good")
    bad_l = _letters(inputs, bad, [x for x in L.letters if x not in good_l], "bad")
    g, b = _ids(inputs, good_l), _ids(inputs, bad_l)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1].float()
        return last[:, g].mean(-1) - last[:, b].mean(-1)

    metric.__name__ = f"logit_diff({'+'.join(good_l)} - {'+'.join(bad_l)})"
    return metric


def option_prob(inputs: VideoLLMInput, letter: Optional[str] = None) -> Metric:
    """Probability of one option letter at the last position (full-vocabulary softmax, in [0, 1]).

    Args:
        letter: the option letter (default: the true letter).
    """
    L = inputs.layout
    (letter,) = _letters(inputs, letter, [L.true_letter] if L.true_letter else [], "letter")
    (tid,) = _ids(inputs, [letter])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].float().softmax(-1)[:, tid]

    metric.__name__ = f"p({letter})"
    return metric


def normalised(metric: Metric, clean_value: Union[float, torch.Tensor], corrupted_value: Union[float, torch.Tensor]) -> Metric:
    """``(metric - corrupted) / (clean - corrupted)``: 0 at the corrupted run, 1 at the clean run.

    Raises:
        ValueError: the clean and corrupted values are equal (nothing to normalise by).
    """
    c, k = float(clean_value), float(corrupted_value)
    if c == k:
        raise ValueError(f"clean and corrupted metric are both {c}; the corruption changes nothing to recover")

    def scaled(logits: torch.Tensor) -> torch.Tensor:
        return (metric(logits) - k) / (c - k)

    scaled.__name__ = f"normalised({getattr(metric, '__name__', 'metric')})"
    return scaled
