"""Open-ended attention knockout (paper Section 4.3, official
``analysis/information_flow_analysis_open_ended.py``): the model writes its answer greedily, then the
probability of answer tokens it generated is traced under knockouts, each tracked token's
preceding position playing the role of ``last``.

For the tracked token at answer offset ``j`` the input is the prompt plus the first ``j`` generated
tokens; ``last`` is its final position (the token before the tracked one) and ``response`` the
answer tokens before it. The official target ``vqrl-to-qrl`` blocks, one pair at a time in a window
of layers: video -> question, video -> last, question -> last, response -> last. The score is the
probability of the tracked token, its relative change in percent (the official ``relative_diff``).

Difference from the paper: the official script tracks the n-th VERB of the answer (spaCy
``en_core_web_lg`` part-of-speech tags, a model this project cannot download); videolens tracks the
first ``track`` generated answer tokens (or the offsets given), and every record names its token.
The answer is prompted with ``answer_prefix`` in place of the template's (``"Answer:"``: the bundled
model's open-ended signal); the options stay in the prompt as the template writes them.

Method notes (the paper's section, the official code's lines): docs/methods.md#open-ended-knockout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, List, Optional, Sequence

import torch

from ..errors import require_finite
from ..hooked.edges import parse_pair
from ..hooked.generation import greedy_tokens
from ..prompting.inputs import VideoLLMInput
from ..prompting.layout import Span
from .engine import get_engine, knockout_logits
from ..hooked.edges import blocked_mask
from .sweep import layer_window

__all__ = ["OPEN_ENDED_PAIRS", "OpenEndedSettings", "answer_prefix", "open_ended_input", "extend_with_answer",
           "open_ended_sweep"]

OPEN_ENDED_PAIRS = ("video->question", "video->last", "question->last", "response->last")
"""The official ``vqrl-to-qrl`` block mappings, in its order."""


@dataclasses.dataclass(frozen=True)
class OpenEndedSettings:
    """The settings of an open-ended knockout run (``videolens flow --open-ended``), validated when built.

    Attributes:
        window: layers per knockout window (the paper's 9).
        track: trace the first ``track`` generated tokens (unless ``offsets``).
        offsets: answer offsets to trace (0 = the first generated token), or None.
        max_new_tokens: answer length generated.
        layers: centre layers (None: every layer).
        method: ``"fast"`` or ``"full"`` (the same numbers).
        answer_prefix: what the prompt ends with (``"Answer:"``; ``""`` for VCGBench's official prompt).

    Raises (when built):
        ValueError: a window, track or answer length below 1, a negative offset, an unknown method.
    """

    window: int = 9
    track: int = 1
    offsets: Optional[Sequence[int]] = None
    max_new_tokens: int = 24
    layers: Optional[Sequence[int]] = None
    method: str = "fast"
    answer_prefix: str = "Answer:"

    def __post_init__(self) -> None:
        from .settings import check_method, check_window

        check_window(self.window)  # the model's depth is checked by check()
        for name in ("track", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.offsets is not None:
            object.__setattr__(self, "offsets", tuple(int(o) for o in self.offsets))
            if any(o < 0 for o in self.offsets):
                raise ValueError(f"answer offsets must be >= 0, got {list(self.offsets)}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        check_method(self.method)

    def check(self, model) -> "OpenEndedSettings":
        """Window within the model's depth, centre layers in range.

        Raises:
            ValueError: either is not.
        """
        from .settings import check_centres, check_window

        check_window(self.window, model.cfg.n_layers)
        check_centres(self.layers, model.cfg.n_layers)
        return self

    def header(self) -> dict:
        """The settings that identify a run (records header fields); the method changes no number."""
        return {"open_ended": True, "track": self.track, "max_new_tokens": self.max_new_tokens,
                "answer_prefix": self.answer_prefix, "window": self.window,
                **({"offsets": list(self.offsets)} if self.offsets is not None else {}),
                **({"layers": list(self.layers)} if self.layers is not None else {})}


@contextlib.contextmanager
def answer_prefix(model, prefix: str = "Answer:"):
    """While active, ``model.prepare`` writes ``prefix`` in place of the template's answer prefix."""
    template = model.template
    model.template = dataclasses.replace(template, answer_prefix=prefix)
    try:
        yield model
    finally:
        model.template = template


def open_ended_input(model, sample, num_frames: Optional[int] = None, prefix: str = "Answer:") -> VideoLLMInput:
    """``model.prepare(sample)`` with the template's answer prefix replaced by ``prefix``."""
    with answer_prefix(model, prefix):
        return model.prepare(sample, num_frames=num_frames)


def extend_with_answer(inputs: VideoLLMInput, answer: Sequence[int]) -> VideoLLMInput:
    """The input followed by ``answer`` tokens; the layout gains the span ``response`` (those
    tokens) and its ``last`` moves to the final one."""
    ext = torch.tensor([list(answer)], dtype=inputs.tokens.dtype, device=inputs.tokens.device)
    tokens = torch.cat([inputs.tokens, ext], dim=1)
    L = inputs.layout
    spans = dict(L.spans, response=Span(L.seq_len, L.seq_len + len(answer)))
    layout = dataclasses.replace(L, seq_len=L.seq_len + len(answer), spans=spans)
    return dataclasses.replace(inputs, tokens=tokens, layout=layout)


def _register_response_group() -> None:
    from ..prompting.layout import GROUP_RESOLVERS, register_group

    if "response" not in GROUP_RESOLVERS:
        register_group("response", lambda L, a: L.spans["response"].positions() if "response" in L.spans
                       else torch.empty(0, dtype=torch.long))


@torch.no_grad()
def open_ended_sweep(model, inputs: VideoLLMInput, window: int = 9, track: int = 1,
                     offsets: Optional[Sequence[int]] = None, max_new_tokens: int = 24,
                     layers: Optional[Sequence[int]] = None, method: str = "fast",
                     settings: Optional[OpenEndedSettings] = None) -> List[Dict]:
    """Generate the answer greedily, then knock out every ``OPEN_ENDED_PAIRS`` pair in a window
    around every layer for each tracked answer token.

    Args:
        inputs: a prepared input ending in the answer prefix (``open_ended_input``).
        settings: an ``OpenEndedSettings`` (its fields replace the keyword options below).
        window: layers per knockout window (the paper's 9).
        track: trace the first ``track`` generated tokens (ignored when ``offsets`` is given).
        offsets: answer offsets to trace (0 = the first generated token).
        max_new_tokens: generation length.
        layers: centre layers (default: all).

    Returns:
        one record per (tracked token, pair, centre layer) with ``answer`` (the generated text),
        ``tracked`` (offset, token id and text), ``base_prob`` / ``ko_prob`` of the tracked token,
        ``rel_change`` (percent), ``ko_answer_t``; an empty list when nothing was generated.

    Raises:
        ValueError: an offset outside the generated answer.
    """
    inputs.one_row("open_ended_sweep")
    if settings is not None:
        window, track, offsets = settings.window, settings.track, settings.offsets
        max_new_tokens, layers, method = settings.max_new_tokens, settings.layers, settings.method
    _register_response_group()
    answer = greedy_tokens(model, inputs, max_new_tokens)  # with the key-value cache
    if not answer:
        return []
    offsets = list(range(min(track, len(answer)))) if offsets is None else list(offsets)
    bad = [o for o in offsets if not 0 <= o < len(answer)]
    if bad:
        raise ValueError(f"answer offsets {bad} lie outside the {len(answer)} generated tokens")
    n = model.cfg.n_layers
    centres = list(range(n)) if layers is None else list(layers)
    engine = get_engine(method)
    text = model.tokenizer.decode(answer)
    records = []
    for j in offsets:
        x = extend_with_answer(inputs, answer[:j])
        target_t = answer[j]
        clean = engine.clean(model, x)
        base = float(clean.logits.float().softmax(-1)[target_t])
        tracked = {"offset": j, "token_id": target_t, "token": model.tokenizer.decode([target_t])}
        for pair in OPEN_ENDED_PAIRS:
            if pair.startswith("response") and j == 0:
                continue  # no response before the first answer token
            n_blocked = int(blocked_mask(x.layout, [parse_pair(pair)]).sum())
            for c in centres:
                win = layer_window(c, window, n)
                logits = knockout_logits(model, x, [parse_pair(pair)], win, method=method, clean=clean)
                p = logits.float().softmax(-1)
                ko = float(p[target_t])
                ko_t = int(p.argmax())
                records.append({"target": "open-ended", "pair": pair, "layer": c, "layers": win, "window": window,
                                "n_blocked": n_blocked, "answer": text, "tracked": tracked, "base_prob": base,
                                "ko_prob": ko, "rel_change": (ko - base) * 100.0 / base if base > 0 else 0.0,
                                "ko_answer_t": ko_t, "base_letter": tracked["token"],
                                "ko_letter": model.tokenizer.decode([ko_t]), "true_letter": None})
    return require_finite(records, "open_ended_sweep")
