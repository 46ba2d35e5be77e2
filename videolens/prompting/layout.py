"""TokenLayout: where each part of a VideoQA prompt sits in the token sequence.

Spans are half-open ``[start, stop)`` token positions of the final sequence (video placeholders
already expanded). Token groups follow Map the Flow's methods: video, frame i, question, non-option
question, each option, true option, false options, last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from jaxtyping import Int
from ..registry import Registry

__all__ = ["Span", "TokenLayout", "GROUP_RESOLVERS", "register_group", "slot_frames", "resolve_positions", "PositionSpec"]


@dataclass(frozen=True)
class Span:
    """Half-open range of token positions ``[start, stop)``."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop:
            raise ValueError(f"bad span [{self.start}, {self.stop})")

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __contains__(self, pos: object) -> bool:
        return isinstance(pos, int) and self.start <= pos < self.stop

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    def positions(self) -> Int[torch.Tensor, "n"]:
        return torch.arange(self.start, self.stop)


@dataclass(frozen=True)
class TokenLayout:
    """Token positions of every part of one prompt.

    Attributes:
        seq_len: number of positions S.
        spans: named spans (``system``, ``video``, ``frame:i``, ``question``, ``question_text``,
            ``non_option_question``, ``option:X``, ``answer_prefix``, ``bos`` when present).
        video_grid: ``(T, h, w)`` of the video tokens (T = temporal slots after pooling).
        video_positions: position of every video token, ordered frame, row, column, ``[T*h*w]``.
        letters: option letters in order; ``true_letter``: the right one (None when unknown).
        slot_frames: for each temporal slot of the video tokens, the sampled frames it holds
            (``slot_frames(num_frames, T)``); ``((0,), (1,), ...)`` when every slot is one frame.
            None for hand-made layouts.
        frame_spans: for templates whose token groups count the per-frame text (``video_group
            "block"``, the official VideoLLaMA3 analysis), the span of each frame with its
            timestamp text and the separator before it; the groups ``video`` and ``frame:i`` and the
            frame relations then use the whole block. None: groups hold video tokens only.
    """

    seq_len: int
    spans: Dict[str, Span]
    video_grid: Tuple[int, int, int]
    video_positions: Int[torch.Tensor, "n_video"]
    letters: Tuple[str, ...]
    true_letter: str | None = None
    slot_frames: Optional[Tuple[Tuple[int, ...], ...]] = None
    frame_spans: Optional[Tuple[Span, ...]] = None

    # ---- the named groups -------------------------------------------------------------------
    @property
    def video(self) -> Span:
        """The whole video block (for per-frame templates it includes timestamp text)."""
        return self.spans["video"]

    @property
    def n_frames(self) -> int:
        return self.video_grid[0]

    @property
    def frames(self) -> List[Span]:
        """Span of each frame's video tokens (temporal slot after pooling), or of each frame's
        block (tokens and text) when the layout has ``frame_spans``."""
        if self.frame_spans is not None:
            return list(self.frame_spans)
        per = self.video_grid[1] * self.video_grid[2]
        pos = self.video_positions
        return [Span(int(pos[i * per]), int(pos[(i + 1) * per - 1]) + 1) for i in range(self.n_frames)]

    @property
    def question(self) -> Span:
        """Question text and all option lines."""
        return self.spans["question"]

    @property
    def non_option_question(self) -> Span:
        """The raw question text only, without ``Question:``, ``Options:`` or the option lines (the
        official code's ``question_without_options``; the official code, map-the-flow). The whole header
        ``Question: ... Options:`` is the group ``question_header``."""
        return self.spans["non_option_question"]

    @property
    def options(self) -> Dict[str, Span]:
        """Letter -> span of the line ``(X) text``."""
        return {L: self.spans[f"option:{L}"] for L in self.letters}

    @property
    def true_option(self) -> Span:
        if self.true_letter is None:
            raise ValueError("this layout has no ground-truth letter")
        return self.spans[f"option:{self.true_letter}"]

    @property
    def false_options(self) -> List[Span]:
        if self.true_letter is None:
            raise ValueError("this layout has no ground-truth letter")
        return [s for L, s in self.options.items() if L != self.true_letter]

    @property
    def last(self) -> int:
        """The final prompt position, where the answer letter is predicted."""
        return self.seq_len - 1

    def frame_of(self, pos: int) -> int:
        """Frame index of a video token position (raises ValueError for other positions)."""
        return int(self.video_coords(pos)[0])

    def video_coords(self, pos: int) -> Tuple[int, int, int]:
        """(frame, row, column) of a video token position."""
        hits = (self.video_positions == pos).nonzero()
        if len(hits) == 0:
            raise ValueError(f"position {pos} is not a video token")
        i = int(hits[0])
        T, h, w = self.video_grid
        return i // (h * w), (i // w) % h, i % w

    def frame_lookup(self) -> Int[torch.Tensor, "S"]:
        """Frame of every position of the sequence (the frame's block with ``frame_spans``, its
        video tokens otherwise), -1 outside the frames; used by the frame relations. Built once per
        layout (the layout is frozen); each call returns a copy."""
        lookup = self.__dict__.get("_frame_lookup")
        if lookup is None:
            lookup = torch.full((self.seq_len,), -1, dtype=torch.long)
            if self.frame_spans is not None:
                for i, span in enumerate(self.frame_spans):
                    lookup[span.slice] = i
            else:
                lookup[self.video_positions] = self.video_frame_index
            object.__setattr__(self, "_frame_lookup", lookup)  # a cache, not a field: eq and replace ignore it
        return lookup.clone()

    def video_group(self) -> Int[torch.Tensor, "n"]:
        """Positions of the group ``video``: the video tokens, or the whole video block (text
        included) when the layout has ``frame_spans``."""
        if self.frame_spans is not None:
            return self.spans["video"].positions()
        return self.video_positions.clone()

    @property
    def video_frame_index(self) -> Int[torch.Tensor, "n_video"]:
        """Frame of each video token, aligned with ``video_positions``."""
        T, h, w = self.video_grid
        return torch.arange(T).repeat_interleave(h * w)

    @property
    def video_row_index(self) -> Int[torch.Tensor, "n_video"]:
        T, h, w = self.video_grid
        return torch.arange(h).repeat_interleave(w).repeat(T)

    @property
    def video_col_index(self) -> Int[torch.Tensor, "n_video"]:
        T, h, w = self.video_grid
        return torch.arange(w).repeat(T * h)

    # ---- group lookup by name ------------------------------------------------------------------
    def positions(self, group: str) -> Int[torch.Tensor, "n"]:
        """Positions of a named group, sorted.

        Names: ``video``, ``frame:i`` (negative i counts from the end), ``question``,
        ``non_option_question``, ``question_text``, ``option:X``, ``true_option``,
        ``false_options``, ``last``, ``system``, ``span:a:b`` (explicit ``[a, b)``), any name of
        ``spans``, and groups added with ``register_group``.

        Raises:
            KeyError: unknown group name (the message lists the known ones).
        """
        head, _, arg = group.partition(":")
        if head in GROUP_RESOLVERS:
            out = GROUP_RESOLVERS[head](self, arg)
        elif group in self.spans:
            out = self.spans[group].positions()
        else:
            raise KeyError(
                f"unknown token group {group!r}; known: {sorted(GROUP_RESOLVERS)} and spans {sorted(self.spans)}"
            )
        return torch.as_tensor(out, dtype=torch.long).reshape(-1).sort().values


def slot_frames(num_frames: int, slots: int) -> Tuple[Tuple[int, ...], ...]:
    """The sampled frames each of ``slots`` temporal slots averages under adaptive average pooling
    (PLLaVA's 3-D pooling; torch's window ``[floor(i n / t), ceil((i + 1) n / t))``): with 16 frames
    and 8 slots slot 3 holds frames (6, 7); with 4 frames and 8 slots each frame fills two slots."""
    return tuple(tuple(range((i * num_frames) // slots, -((-(i + 1) * num_frames) // slots))) for i in range(slots))


def _cat(spans: Sequence[Span]) -> torch.Tensor:
    if not spans:
        return torch.empty(0, dtype=torch.long)
    return torch.cat([s.positions() for s in spans])


def _frame(layout: TokenLayout, arg: str) -> torch.Tensor:
    if not arg:
        raise KeyError("group 'frame' needs an index, e.g. 'frame:0'")
    i = int(arg)
    if not -layout.n_frames <= i < layout.n_frames:
        raise KeyError(f"frame {i} out of range for {layout.n_frames} frames")
    return layout.frames[i].positions()


def _option(layout: TokenLayout, arg: str) -> torch.Tensor:
    if arg not in layout.letters:
        raise KeyError(f"no option {arg!r}; options are {list(layout.letters)}")
    return layout.options[arg].positions()


def _explicit(layout: TokenLayout, arg: str) -> torch.Tensor:
    a, _, b = arg.partition(":")
    span = Span(int(a), int(b))
    if span.stop > layout.seq_len:
        raise KeyError(f"span {arg} ends past the sequence ({layout.seq_len} positions)")
    return span.positions()


GROUP_RESOLVERS: Registry[Callable[[TokenLayout, str], torch.Tensor]] = Registry("token group", {
    "video": lambda L, a: L.video_group(),
    "frame": _frame,
    "question": lambda L, a: L.question.positions(),
    "non_option_question": lambda L, a: L.non_option_question.positions(),
    "option": _option,
    "true_option": lambda L, a: L.true_option.positions(),
    "false_options": lambda L, a: _cat(L.false_options),
    "last": lambda L, a: torch.tensor([L.last]),
    "after_video": lambda L, a: torch.arange(int(L.video_group().max()) + 1, L.seq_len),
    "span": _explicit,
})


def register_group(name: str, resolver: Callable[[TokenLayout, str], torch.Tensor], overwrite: bool = False) -> None:
    """Add a named token group: ``resolver(layout, arg)`` returns positions for ``name:arg``.

    Raises:
        ValueError: a name with ':' or one already registered (unless ``overwrite``).
    """
    if ":" in name:
        raise ValueError("group names cannot contain ':'")
    GROUP_RESOLVERS.register(name, resolver, overwrite)


PositionSpec = Union[None, str, int, Sequence[Union[int, str]], torch.Tensor]
"""Positions: all (None), token group names, or indices (``resolve_positions``)."""


def resolve_positions(positions: PositionSpec, seq_len: int, layout: Optional[TokenLayout] = None) -> Int[torch.Tensor, "n"]:
    """Positions as a LongTensor in ``[0, seq_len)``.

    Args:
        positions: ``None`` (all), a token group name of ``TokenLayout.positions`` (``"video"``,
            ``"last"``, ``"frame:3"``, ``"question"``, ...), a list of group names (their sorted
            union), an int (negative counts from the end), or a sequence / tensor of ints (kept in
            the given order).
        seq_len: sequence length S.
        layout: needed when groups are named.

    Raises:
        ValueError: a position out of range, an empty selection, or a group name without a layout.
        KeyError: an unknown group name.
    """
    if positions is None:
        return torch.arange(seq_len)
    if isinstance(positions, str):
        positions = [positions]
    if isinstance(positions, (list, tuple)) and any(isinstance(p, str) for p in positions):
        if not all(isinstance(p, str) for p in positions):
            raise ValueError("positions: give either group names or integer positions, not a mix")
        if layout is None:
            raise ValueError("positions: group names need a TokenLayout (pass a VideoLLMInput, or layout=)")
        pos = torch.cat([layout.positions(g) for g in positions]).unique(sorted=True)
    else:
        pos = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
    if pos.numel() == 0:
        raise ValueError("positions: the selection is empty")
    if int(pos.min()) < -seq_len or int(pos.max()) >= seq_len:
        raise ValueError(f"positions: out of range for a sequence of {seq_len} positions")
    return pos % seq_len
