"""The same attention view with and without an attention knockout, side by side.

The knockout sets the pre-softmax scores of the blocked edges to -inf on
``blocks.{l}.attn.hook_attn_scores`` (Map the Flow's methods) with
``videolens.knockout.knockout_hooks``; the view of the knocked-out run is pooled exactly like the
full run's, so the two compare unit by unit (e.g. with cross-frame edges blocked, the last
position's attention to early frames can only arrive through text positions).

Example::

    views = compare_knockout(model, inputs, "video->video[cross_frame]", knockout_layers=range(0, 3),
                             query="last", layers=2, heads="mean", video="patch")
    save_html("ko.html", [heads_panel(v, title=k) for k, v in views.items()])
    plot_overlay(views, inputs.video.frames, path="ko.png")
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Union

from ..prompting.inputs import VideoLLMInput
from .pooling import VideoAttention, video_attention

__all__ = ["compare_knockout"]


def compare_knockout(
    model,
    inputs: VideoLLMInput,
    pairs: Union[str, Iterable] = "video->video[cross_frame]",
    knockout_layers: Optional[Iterable[int]] = None,
    heads_blocked=None,
    names: tuple = ("full attention", None),
    **view_kwargs,
) -> Dict[str, VideoAttention]:
    """Two pooled views of the same input: plain, and with ``pairs`` blocked in ``knockout_layers``.

    Args:
        model, inputs: as ``video_attention``.
        pairs: edge pairs to block (``"video->video[cross_frame]"``, ``EdgePair``, or a list;
            ``videolens.hooked.edges`` syntax).
        knockout_layers: layers where the edges are blocked (default: every layer).
        heads_blocked: heads where they are blocked (default: all).
        names: row titles (the second defaults to ``"blocked: <pairs>"``).
        view_kwargs: passed to ``video_attention`` (``query``, ``layers``, ``heads``, ``video``, ``block``).

    Returns:
        ``{names[0]: view, names[1]: knocked-out view}`` (insertion-ordered).

    Raises:
        videolens.hooked.edges.EmptyRowError, KeyError, ValueError: from the mask or the view arguments.
    """
    inputs.one_row("compare_knockout")
    from ..knockout import knockout_hooks

    ko_layers = range(model.cfg.n_layers) if knockout_layers is None else knockout_layers
    hooks = knockout_hooks(model, pairs, ko_layers, heads=heads_blocked, layout=inputs.layout)
    label = pairs if isinstance(pairs, str) else ", ".join(str(getattr(p, "label", p)) for p in pairs)
    first, second = names[0], names[1] or f"blocked: {label}"
    full = video_attention(model, inputs, title=first, **view_kwargs)
    ko = video_attention(model, inputs, fwd_hooks=hooks, title=second, **view_kwargs)
    return {first: full, second: ko}
