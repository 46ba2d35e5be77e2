"""Position groups to patch: the video's frames and the prompt's text spans.

TransformerLens patches one position at a time; a 1,300-token video prompt would need thousands
of runs per layer. Here a patch covers a group of positions named as in ``TokenLayout.positions``
(``frame:3``, ``non_option_question``, ``option:B``, ``last``, ``span:a:b``, ...). Named sets of
groups are data (``GROUP_SETS``):

- ``frames``: ``frame:0`` ... ``frame:T-1`` (temporal slots of the video tokens)
- ``text``: ``non_option_question``, ``option:A`` ... , ``last``
- ``default``: ``frames`` then ``text``
- ``all``: one group with every position (patching it reproduces the source run)
- ``positions``: every single position (``pos:i``), as ``transformer_lens.patching`` does
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Sequence, Union

import torch
from jaxtyping import Int

from ..prompting.layout import TokenLayout

__all__ = ["GROUP_SETS", "patch_groups", "GroupSpec"]

GroupSpec = Union[str, Sequence[str], Mapping[str, Sequence[int]]]


def _frames(L: TokenLayout) -> List[str]:
    return [f"frame:{i}" for i in range(L.n_frames)]


def _text(L: TokenLayout) -> List[str]:
    return ["non_option_question"] + [f"option:{x}" for x in L.letters] + ["last"]


GROUP_SETS: Dict[str, Callable[[TokenLayout], List[str]]] = {
    "frames": _frames,
    "text": _text,
    "default": lambda L: _frames(L) + _text(L),
    "all": lambda L: ["span:0:%d" % L.seq_len],
    "positions": lambda L: [f"span:{p}:{p + 1}" for p in range(L.seq_len)],
}


def patch_groups(layout: TokenLayout, spec: GroupSpec = "default") -> Dict[str, Int[torch.Tensor, "n"]]:
    """Ordered ``{name: positions}`` for a group spec.

    Args:
        layout: the prompt's layout.
        spec: a name of ``GROUP_SETS``, a list of group names (each resolved with
            ``layout.positions``, sets may be mixed in: ``["frames", "last"]``), or a mapping
            ``{name: positions}`` used as given.

    Returns:
        dict name -> LongTensor of positions (sorted). ``all`` is named ``all``; ``positions``
        entries are named ``pos:i``.

    Raises:
        KeyError: an unknown group or set name (from ``layout.positions``); ValueError: an empty group.
    """
    if isinstance(spec, Mapping):
        out = {str(k): torch.as_tensor(list(v), dtype=torch.long) for k, v in spec.items()}
    else:
        names: List[str] = []
        for item in [spec] if isinstance(spec, str) else list(spec):
            names += GROUP_SETS[item](layout) if item in GROUP_SETS else [item]
        out = {}
        for n in names:
            label = n
            if spec == "all":
                label = "all"
            elif spec == "positions":
                label = f"pos:{n.split(':')[1]}"
            out[label] = layout.positions(n)
    for k, v in out.items():
        if v.numel() == 0:
            raise ValueError(f"patch group {k!r} has no positions")
        if int(v.max()) >= layout.seq_len or int(v.min()) < 0:
            raise ValueError(f"patch group {k!r} has positions outside [0, {layout.seq_len})")
    return out
