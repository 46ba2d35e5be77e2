"""Layer selections: one rule for every analysis (knockout, logit lens, attention views, patching).

Head selections (``resolve_heads``) follow one rule too: a non-empty list of distinct indices in
``[0, n_heads)``, kept in the order given.

A layer selection is ``None`` or ``"all"`` (every index), an int, an iterable of ints, or a string of
comma-separated items (``"0-4,10,-1"``: ranges inclusive). Negative ints count from the end, as
Python and TransformerLens index (``-1`` is the last). ``final`` names the last index (the logit
lens' "after the last block" entry). The result is sorted and without repeats.

Example::

    resolve_layers("0-2,-1", 32)   # [0, 1, 2, 31]
    resolve_layers(None, 4)        # [0, 1, 2, 3]
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional, Union

__all__ = ["LayerSpec", "resolve_layers", "resolve_heads"]

LayerSpec = Optional[Union[int, str, Iterable[int]]]


def _parse(text: str, n: int) -> List[int]:
    out: List[int] = []
    for part in text.replace(" ", "").split(","):
        if part in ("all", "*"):
            out.extend(range(n))
        elif part in ("final", "final_post", "last"):
            out.append(n - 1)
        elif re.fullmatch(r"-?\d+--?\d+|\d+-\d+", part):
            a, b = re.fullmatch(r"(-?\d+)-(-?\d+)", part).groups()
            lo, hi = (int(a) % n if int(a) < 0 else int(a)), (int(b) % n if int(b) < 0 else int(b))
            out.extend(range(lo, hi + 1))
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise ValueError(f"layers: cannot read {part!r} (use e.g. '0-4,10,-1')") from None
    return out


def resolve_layers(layers: LayerSpec, n: int, what: str = "layers") -> List[int]:
    """The selected indices among ``n`` (module doc), sorted and distinct.

    Args:
        layers: the selection.
        n: how many indices there are (``cfg.n_layers`` for blocks, ``n_layers + 1`` for lens layers).
        what: the argument's name for messages.

    Raises:
        ValueError: an index outside ``[-n, n)``, an unreadable string, or an empty selection.
    """
    if layers is None:
        return list(range(n))
    if isinstance(layers, str):
        items = _parse(layers, n)
    elif isinstance(layers, int):
        items = [layers]
    else:
        items = [int(l) for l in layers]
    bad = [l for l in items if not -n <= l < n]
    if bad:
        raise ValueError(f"{what} {bad} out of range for {n} layers (indices in [{-n}, {n - 1}])")
    out = sorted({l % n for l in items})
    if not out:
        raise ValueError(f"{what}: the selection is empty")
    return out


def resolve_heads(heads: Iterable[int], n_heads: Optional[int] = None) -> List[int]:
    """Head indices as ints: non-empty, distinct, each in ``[0, n_heads)`` (or >= 0 when the head
    count is not known yet). Order is kept.

    Raises:
        ValueError: an empty list, a repeated or negative index, or one ``>= n_heads``.
    """
    try:
        hs = [int(h) for h in heads]
    except (TypeError, ValueError):
        raise ValueError(f"heads must be a list of head indices, got {heads!r}") from None
    if not hs or len(set(hs)) != len(hs) or any(h < 0 or (n_heads is not None and h >= n_heads) for h in hs):
        limit = "" if n_heads is None else f" for {n_heads} heads"
        raise ValueError(f"heads {hs} out of range{limit} (distinct indices from 0)")
    return hs
