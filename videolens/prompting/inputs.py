"""Turning a VideoQA sample into model input: tokens with placeholders, a TokenLayout, video embeddings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float, Int

from ..sources.data import VideoQA
from ..errors import BatchedInputError, VideolensError
from .layout import Span, TokenLayout
from .prompts import BuiltPrompt, PromptTemplate, build_prompt
from ..sources.video import Video

__all__ = ["VideoLLMInput", "TokenizedPrompt", "tokenize_prompt", "stack_inputs", "PromptTokenizationError"]


class PromptTokenizationError(VideolensError, ValueError):
    """The tokenizer cannot produce the prompt's layout (placeholder or option letters split)."""


@dataclass
class TokenizedPrompt:
    tokens: Int[torch.Tensor, "1 seq"]
    layout: TokenLayout
    option_token_ids: Dict[str, int]
    prompt: BuiltPrompt


@dataclass
class VideoLLMInput:
    """Everything one forward pass needs, computed once per sample.

    Attributes:
        tokens: ``[1, S]`` token ids; video positions hold the placeholder id.
        video_embeds: ``[T, h, w, d_model]`` video tokens from the vision front end, in the
            order frame, row, column; spliced in at ``hook_embed``. A DeepStack model's (Qwen3-VL)
            are ``[T, h, w, (1 + k) d_model]``: the tokens, then its ``k`` DeepStack levels
            (``videolens.hooked.deepstack``), so video edits move both.
        layout: token spans and groups.
        option_token_ids: option letter -> token id of that letter right after the prompt.
        sample: the VideoQA sample (None for hand-made inputs).
        video: the decoded frames.
        pixel_values: ``[T, 3, H, W]`` (``[B, T, 3, H, W]`` stacked) when prepared with
            ``keep_pixels=True``: the forward then runs the vision front end itself, so the
            ``vision.*`` hook points fire in ``run_with_cache`` / ``run_with_hooks`` (and
            ``video_embeds`` is what the front end gave at ``prepare``).
        attention_mask: ``[B, S]``, 0 on left padding, for a batch of prompts of different
            lengths (``stack_inputs``); None when no row is padded.
        row_layouts: each row's own layout (positions counted in that row's unpadded tokens) in a
            padded batch; ``layout`` is then the longest row's.
        prepared_by: ``model_identity`` of the model whose ``prepare`` made it (None when unknown).
        row_meta: in a stacked batch, each row's own ``sample``, ``video``, ``prompt_text``,
            ``layout`` and ``option_token_ids``, so ``batch[i]`` is row i's input (its true answer,
            its spans), not the first row's.
    """

    tokens: Int[torch.Tensor, "1 seq"]
    video_embeds: Float[torch.Tensor, "T h w d_model"]
    layout: TokenLayout
    option_token_ids: Dict[str, int]
    sample: Optional[VideoQA] = None
    video: Optional[Video] = None
    prompt_text: str = ""
    pixel_values: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None
    row_layouts: Optional[List[TokenLayout]] = None
    row_meta: Optional[List[Dict[str, Any]]] = None
    prepared_by: Optional[Dict[str, str]] = None

    @property
    def video_positions(self) -> torch.Tensor:
        """Where the video tokens sit: ``[n]``, or ``[B, n]`` in a left-padded batch."""
        if self.row_layouts is None:
            return self.layout.video_positions
        S = self.seq_len
        return torch.stack([L.video_positions + (S - L.seq_len) for L in self.row_layouts])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    # ---- a token batch where TransformerLens expects one (transformer_lens.patching, ...) --------
    @property
    def shape(self) -> torch.Size:
        """``tokens.shape``: ``[batch, pos]``; TransformerLens helpers read the positions from it."""
        return self.tokens.shape

    def size(self, dim: Optional[int] = None):
        return self.tokens.size() if dim is None else self.tokens.size(dim)

    def dim(self) -> int:
        return self.tokens.dim()

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    def check_fits(self, model) -> None:
        """Refuse video embeddings of another width than ``model``'s, and warn when another
        checkpoint prepared this input (its vision front end and projector made the video tokens).

        Raises:
            ValueError: the video embeddings' width differs from ``model.cfg.d_model``.
        """
        width = getattr(model, "video_width", model.cfg.d_model)
        if int(self.video_embeds.shape[-1]) != width:
            raise ValueError(f"this input's video tokens are {int(self.video_embeds.shape[-1])} wide but the model "
                             f"reads {width} (its residual stream is {model.cfg.d_model}"
                             + (", DeepStack levels packed after it" if width != model.cfg.d_model else "")
                             + "): prepare the sample with this model")
        here = model_identity(model)
        if self.prepared_by and here and _other_weights(self.prepared_by, here):
            import warnings

            warnings.warn(f"this input was prepared by a model with other weights than {model.checkpoint_path}: its "
                          "video tokens come from that model's vision front end; prepare the sample with this model",
                          stacklevel=4)

    def one_row(self, what: str) -> "VideoLLMInput":
        """``self`` when it holds one row; analyses that read one sample call it first.

        Raises:
            BatchedInputError: a batch (``"<what> takes one sample: pass batch[i] ..."``).
        """
        if self.batch_size != 1:
            raise BatchedInputError(f"{what} takes one sample, got a batch of {self.batch_size} rows: pass batch[i] "
                                    f"(each row keeps its own video)")
        return self

    def __getitem__(self, rows) -> "VideoLLMInput":
        """Rows of a batch (an int or a slice), each with its own video: ``stacked[1]``,
        ``stacked[:2]``. Token-level indexing (``inputs[0, 5]``) is refused: index ``inputs.tokens``.

        Raises:
            IndexError: a tuple index, or rows out of range.
        """
        if isinstance(rows, tuple):
            raise IndexError("a VideoLLMInput indexes batch rows only; index .tokens for positions")
        keep = slice(rows, rows + 1 if rows != -1 else None) if isinstance(rows, int) else rows
        tokens = self.tokens[keep]
        if tokens.shape[0] == 0:
            raise IndexError(f"rows {rows!r} out of range for a batch of {self.batch_size}")
        embeds = self.video_embeds if self.video_embeds.dim() == 5 else self.video_embeds[None]
        pixels = self.pixel_values
        if pixels is not None:
            pixels = (pixels if pixels.dim() == 5 else pixels[None])[keep]
        if self.row_meta is not None:  # a stacked batch (padded or not): each row is its own sample, unpadded
            chosen = list(range(self.batch_size))[keep]
            if len(chosen) > 1 or not isinstance(rows, int):
                return stack_inputs([self[i] for i in chosen])
            meta = self.row_meta[chosen[0]]
            L = meta["layout"]
            return VideoLLMInput(tokens[:, self.seq_len - L.seq_len:], embeds[keep], L, meta["option_token_ids"],
                                 meta["sample"], meta["video"], meta["prompt_text"], pixels)
        return VideoLLMInput(tokens, embeds[keep], self.layout, self.option_token_ids, self.sample, self.video,
                             self.prompt_text, pixels)

    def with_video_embeds(self, video_embeds: torch.Tensor) -> "VideoLLMInput":
        """A copy with other video embeddings of the same shape (for corrupted runs); it carries no
        pixel values, so the forward uses these embeddings."""
        if video_embeds.shape != self.video_embeds.shape:
            raise ValueError(
                f"video_embeds must keep the shape {tuple(self.video_embeds.shape)}, got {tuple(video_embeds.shape)}"
            )
        return dataclasses.replace(self, video_embeds=video_embeds, pixel_values=None)

    def to(self, device) -> "VideoLLMInput":
        """A copy with its tensors on ``device``."""
        moved = {k: getattr(self, k).to(device) for k in ("tokens", "video_embeds", "pixel_values", "attention_mask")
                 if getattr(self, k) is not None}
        return dataclasses.replace(self, **moved)


def model_identity(model) -> Optional[Dict[str, str]]:
    """What tells a model's weights apart cheaply: ``videolens.fingerprint.quick_identity`` of its
    folder (set by ``from_pretrained``), else ``{"path": folder}``; None for a model built in memory."""
    ident = getattr(model, "identity", None)
    if ident:
        return ident
    path = getattr(model, "checkpoint_path", None)
    return {"path": path} if path else None


def _other_weights(a: Dict[str, str], b: Dict[str, str]) -> bool:
    """Whether two identities are other weights: config.json or any file both hold differs (the same
    weights re-sharded into other files count as the same model)."""
    common = set(a) & set(b)
    return bool(common) and any(a[k] != b[k] for k in common)


def stack_inputs(inputs: Sequence[VideoLLMInput], pad_id: int = 0) -> VideoLLMInput:
    """One batched input from prepared inputs with one video grid: tokens ``[B, S]``, video
    embeddings ``[B, T, h, w, d]``. ``model(stacked)`` gives logits ``[B, S, d_vocab]`` equal to the
    inputs run one by one (within 1e-4); ``option_probs`` / ``answer`` give one result per row.

    Inputs of one layout stack as they are (the layout, option ids and sample of the first stand
    for the batch; ``stacked[i]`` gives back row i's own, ``row_meta``). Prompts of different lengths are left-padded with ``pad_id`` to the longest, with an
    ``attention_mask`` (0 on padding; TransformerLens then masks those keys and starts each row's
    rotary positions at its first real token) and each row's own layout in ``row_layouts``; the
    last position is every row's answer position. Analyses that need one layout (knockout,
    pathways, span patching) take the rows one at a time (``stacked[i]``).

    Raises:
        ValueError: no inputs, or inputs whose video grids or option letters differ.
    """
    if not inputs:
        raise ValueError("stack_inputs needs at least one input")
    first = inputs[0]
    rows = [x[i] for x in inputs for i in range(x.batch_size)] if any(x.batch_size > 1 for x in inputs) else list(inputs)
    for i, x in enumerate(rows):
        if x.layout.video_grid != first.layout.video_grid or x.layout.letters != first.layout.letters:
            raise ValueError(f"input {i} has another video grid or other option letters than input 0; they cannot stack")
    same = all(x.tokens.shape == first.tokens.shape and torch.equal(x.layout.video_positions, first.layout.video_positions)
               for x in rows)
    pixels = (torch.stack([x.pixel_values for x in rows]) if all(x.pixel_values is not None for x in rows) else None)
    embeds = torch.stack([x.video_embeds for x in rows])
    meta = [{"sample": x.sample, "video": x.video, "prompt_text": x.prompt_text, "layout": x.layout,
             "option_token_ids": x.option_token_ids} for x in rows]
    if same:
        return VideoLLMInput(tokens=torch.cat([x.tokens for x in rows]), video_embeds=embeds, layout=first.layout,
                             option_token_ids=first.option_token_ids, sample=first.sample, video=first.video,
                             prompt_text=first.prompt_text, pixel_values=pixels, row_meta=meta)
    S = max(x.seq_len for x in rows)
    tokens = torch.full((len(rows), S), int(pad_id), dtype=first.tokens.dtype, device=first.tokens.device)
    mask = torch.zeros((len(rows), S), dtype=torch.long, device=first.tokens.device)
    for i, x in enumerate(rows):
        tokens[i, S - x.seq_len:] = x.tokens[0]
        mask[i, S - x.seq_len:] = 1
    longest = max(rows, key=lambda x: x.seq_len)
    return VideoLLMInput(tokens=tokens, video_embeds=embeds, layout=longest.layout, option_token_ids=first.option_token_ids,
                         sample=first.sample, video=first.video, prompt_text=first.prompt_text, pixel_values=pixels,
                         attention_mask=mask, row_layouts=[x.layout for x in rows], row_meta=meta)


def _content_start(text: str, start: int, end: int) -> Optional[int]:
    """First non-space character of ``text[start:end]``; None for a whitespace-only token (a lone
    "▁" or a newline byte), which belongs to no span (the official code, map-the-flow)."""
    while start < end and text[start].isspace():
        start += 1
    return start if start < end else None


def tokenize_prompt(
    tokenizer,
    template: PromptTemplate,
    question: str,
    candidates: Sequence[str],
    placeholder_id: int,
    video_grid: Tuple[int, int, int],
    true_letter: Optional[str] = None,
    timestamps: Optional[Sequence[float]] = None,
    n_trailing: int = 0,
    option_format: str = "({letter}) {text}",
    options_end: str = "",
) -> TokenizedPrompt:
    """Tokenize a prompt once and read every span off the tokenizer's offset mapping.

    Each video placeholder in the prompt must be exactly one token with id ``placeholder_id``;
    it is expanded to ``T*h*w`` tokens (one placeholder for the whole video) or ``h*w`` tokens
    (one per frame), then ``n_trailing`` more after the last one (LLaVA-OneVision's newline vector:
    span ``video_newline``). A token belongs to the span that holds its first non-space character.

    Raises:
        PromptTokenizationError: the tokenizer is not a fast tokenizer (no offsets), splits the
            placeholder, or an option letter is not a single token after the prompt, is the unknown
            token, or shares its id with another letter.
    """
    placeholder = tokenizer.convert_ids_to_tokens(int(placeholder_id))
    if placeholder is None:
        raise PromptTokenizationError(f"placeholder id {placeholder_id} is not in the tokenizer's vocabulary")
    built = build_prompt(template, question, candidates, placeholder, timestamps, option_format, options_end)
    text = built.text
    if not getattr(tokenizer, "is_fast", False):
        raise PromptTokenizationError("a fast tokenizer (with offset mapping) is required")
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids: List[int] = list(enc["input_ids"])
    offsets: List[Tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]

    T, h, w = video_grid
    n_ph = sum(1 for k in built.spans if k.startswith("placeholder:"))
    per_placeholder = T * h * w if n_ph == 1 else h * w
    if n_ph > 1 and n_ph != T:
        raise PromptTokenizationError(f"{n_ph} frame placeholders for {T} video frames")

    # which token sits where (by first non-space character), before expansion
    owner_start = [_content_start(text, s, e) for s, e in offsets]
    ph_tokens = []
    for k in range(n_ph):
        cs, ce = built.spans[f"placeholder:{k}"]
        hit = [i for i, st in enumerate(owner_start) if st is not None and cs <= st < ce]
        if len(hit) != 1 or ids[hit[0]] != placeholder_id:
            raise PromptTokenizationError(
                f"the video placeholder {placeholder!r} is not a single token with id {placeholder_id} "
                f"(tokens {[ids[i] for i in hit]})"
            )
        ph_tokens.append(hit[0])

    # expand placeholders; new_pos[i] = position of old token i in the expanded sequence
    new_ids: List[int] = []
    new_pos: List[int] = []
    video_positions: List[int] = []
    trailing: Optional[Span] = None
    for i, tid in enumerate(ids):
        new_pos.append(len(new_ids))
        if i in ph_tokens:
            video_positions.extend(range(len(new_ids), len(new_ids) + per_placeholder))
            new_ids.extend([placeholder_id] * per_placeholder)
            if n_trailing and i == ph_tokens[-1]:
                trailing = Span(len(new_ids), len(new_ids) + n_trailing)
                new_ids.extend([placeholder_id] * n_trailing)
        else:
            new_ids.append(tid)
    S = len(new_ids)

    def token_span(cs: int, ce: int, name: str) -> Span:
        inside = [i for i, st in enumerate(owner_start) if st is not None and cs <= st < ce]
        if not inside:
            raise PromptTokenizationError(f"span {name!r} ({text[cs:ce]!r}) has no tokens")
        first, last = inside[0], inside[-1]
        width = per_placeholder + (n_trailing if last == ph_tokens[-1] else 0)
        stop = new_pos[last] + (width if last in ph_tokens else 1)
        return Span(new_pos[first], stop)

    spans: Dict[str, Span] = {}
    for name, (cs, ce) in built.spans.items():
        if name.startswith("placeholder:") or ce <= cs:
            continue
        spans[name] = token_span(cs, ce, name)
    if trailing is not None:
        spans["video_newline"] = trailing
    specials = [i for i, (s, e) in enumerate(offsets) if e <= s]
    if specials and specials[0] == 0:
        spans["bos"] = Span(0, 1)

    # each option letter must be one token right after the prompt
    option_ids: Dict[str, int] = {}
    for letter in built.letters:
        ext = tokenizer(text + letter, add_special_tokens=True)["input_ids"]
        if len(ext) != len(ids) + 1 or list(ext[: len(ids)]) != ids:
            raise PromptTokenizationError(
                f"option letter {letter!r} is not a single token after {template.answer_prefix!r}"
            )
        option_ids[letter] = int(ext[-1])
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in option_ids.values():
        raise PromptTokenizationError(f"option letter(s) {[L for L, i in option_ids.items() if i == unk]} are the unknown "
                                      f"token {tokenizer.unk_token!r}: the tokenizer does not fit this model")
    if len(set(option_ids.values())) < len(option_ids):
        raise PromptTokenizationError(f"option letters share token ids ({option_ids}): the tokenizer does not fit this model")

    frame_spans = None
    if template.video_group == "block":
        frame_spans = tuple(spans.pop(f"frame_block:{i}") for i in range(n_ph))
    else:
        for i in range(n_ph):
            spans.pop(f"frame_block:{i}", None)
    layout = TokenLayout(
        seq_len=S,
        spans=spans,
        video_grid=(T, h, w),
        video_positions=torch.tensor(video_positions, dtype=torch.long),
        letters=tuple(built.letters),
        true_letter=true_letter,
        frame_spans=frame_spans,
    )
    return TokenizedPrompt(torch.tensor([new_ids], dtype=torch.long), layout, option_ids, built)
