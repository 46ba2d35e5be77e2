"""Training batches from synthetic clips: prompts, targets, attention modes, alignment targets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

from videolens import synthetic
from videolens.hooked.edges import blocked_mask
from videolens.prompting.inputs import tokenize_prompt
from videolens.prompting.prompts import TEMPLATES
from .config import CROSS_FRAME, TrainConfig

# ---- batches ----------------------------------------------------------------------------------
@dataclass
class Item:
    tokens: List[int]
    targets: List[Tuple[int, object]]  # (position predicting, token id or list of ids for uniform)
    mode: str
    layout: object
    frames: np.ndarray
    task: str
    letter_pos: int
    option_ids: List[int]
    answer_id: int
    video_targets: List[Tuple[int, List[int]]] = ()  # (video position, direction word ids): --video-targets


class Batcher:
    """Makes tokenised training/eval items from synthetic samples."""

    def __init__(self, tokenizer, cfg: TrainConfig):
        self.tok = tokenizer
        self.cfg = cfg
        self.template = TEMPLATES["eval_mvbench_vicuna"]
        self.ph = int(tokenizer.convert_tokens_to_ids("<image>"))
        self.grid = tuple(cfg.pooling_shape)
        self.yes_no = tuple(int(tokenizer.convert_tokens_to_ids(w)) for w in ("Yes", "No"))
        self.colours = _colour_words(tokenizer)
        self.position_codes = region_position_codes(self.grid[1:], cfg.d_model, cfg.seed)

    def item(self, s: synthetic.SyntheticSample, mode: str, aux: bool, train: bool = True) -> Item:
        letter = "ABCDEFGH"[s.candidates.index(s.answer)]
        tp = tokenize_prompt(self.tok, self.template, s.question, s.candidates, self.ph, self.grid, true_letter=letter)
        ids = tp.tokens[0].tolist()
        opt_ids = [tp.option_token_ids[L] for L in tp.layout.letters]
        ans_id = tp.option_token_ids[letter]
        frames = s.frames()
        targets: List[Tuple[int, object]] = []
        vt: List[Tuple[int, List[int]]] = []
        if aux:
            # replace the final "Best option:(" by "Answer: <text> Best option:(" and append the letter
            tail = self.tok(self.template.answer_prefix, add_special_tokens=False)["input_ids"]
            assert ids[-len(tail):] == tail
            extra = self.tok(f"Answer: {s.answer} " + self.template.answer_prefix, add_special_tokens=False)["input_ids"]
            ids = ids[: -len(tail)] + extra
            start = len(ids) - len(extra) + 2  # after "Answer :"
            for p in range(start, len(ids)):
                targets.append((p - 1, ids[p]))
            letter_pos = len(ids) - 1
            targets.append((letter_pos, ans_id))
        else:
            letter_pos = len(ids) - 1
            # temporal task with cross-frame edges blocked: no frame carries the answer, so only a
            # uniform letter target (and no intermediate targets)
            uniform = mode == "knockout" and s.task in synthetic.TEMPORAL_TASKS
            if self.cfg.inplace_answer and train and not uniform:
                words = self.tok(s.answer.rstrip("."), add_special_tokens=False)["input_ids"]
                for j, t in enumerate(words):
                    targets.append((letter_pos - len(words) + j, t))
            if self.cfg.video_targets and train and mode != "knockout" and s.task == "moving_direction":
                vt = self.direction_targets(s, frames, tp.layout)
            if self.cfg.option_flags and train and not uniform:
                yes, no = self.yes_no
                for L in tp.layout.letters:
                    targets.append((tp.layout.spans[f"option:{L}"].stop - 1, yes if L == letter else no))
            if uniform:
                targets.append((letter_pos, opt_ids))
                return Item(ids, targets, mode, tp.layout, frames, s.task, letter_pos, opt_ids, ans_id, vt)
            targets.append((letter_pos, ans_id))
        if self.cfg.echo_option and train:
            echo = self.tok(f") {s.answer}", add_special_tokens=False)["input_ids"]
            ids = ids + [ans_id] + echo
            for k, t in enumerate(echo):
                targets.append((letter_pos + 1 + k, t))
        return Item(ids, targets, mode, tp.layout, frames, s.task, letter_pos, opt_ids, ans_id, vt)

    def direction_targets(self, s: synthetic.SyntheticSample, frames: np.ndarray, layout) -> List[Tuple[int, List[int]]]:
        """``(position, [vertical word id, horizontal word id])`` for the video token holding the
        moving object in every frame after the first (``--video-targets``); ``frames`` is
        ``s.frames()``, uint8 ``[T, H, W, 3]``."""
        words = s.answer.rstrip(".").split()
        ids = [int(self.tok.convert_tokens_to_ids(words[0])), int(self.tok.convert_tokens_to_ids(words[-1]))]
        on = token_colour_ids(frames[None], self.grid, *self.colours)[0] >= 0
        per_frame = self.grid[1] * self.grid[2]
        vpos = layout.video_positions
        return [(int(vpos[k]), ids) for k in np.flatnonzero(on) if k >= per_frame]

    def text_item(self, s: synthetic.SyntheticSample) -> Tuple[List[int], List[Tuple[int, int]]]:
        """A short text-only sequence teaching option matching: the question block, then
        ``ASSISTANT:Answer: <answer> Best option:(`` -> letter, then ``) <answer>``."""
        t = self.template
        letters = "ABCDEFGH"[: len(s.candidates)]
        letter = letters[s.candidates.index(s.answer)]
        opts = "\n".join(f"({L}) {c}" for L, c in zip(letters, s.candidates))
        head = (t.question_prefix + s.question + t.options_header + opts + t.after_question
                + f"Answer: {s.answer} " + t.answer_prefix)
        ids = self.tok(head, add_special_tokens=True)["input_ids"]
        tail = self.tok(f"{letter}) {s.answer}", add_special_tokens=False)["input_ids"]
        n = len(ids)
        ids = ids + tail
        return ids, [(n - 1 + k, t_) for k, t_ in enumerate(tail)]

    def collate(self, items: Sequence[Item]):
        B = len(items)
        S = max(len(it.tokens) for it in items)
        tokens = torch.full((B, S), int(self.tok.pad_token_id), dtype=torch.long)
        for i, it in enumerate(items):
            tokens[i, : len(it.tokens)] = torch.tensor(it.tokens)
        vpos = items[0].layout.video_positions
        for it in items:
            if not torch.equal(it.layout.video_positions, vpos):
                raise ValueError("video positions differ within a batch")
        causal = torch.ones(S, S, dtype=torch.bool).tril()
        allowed = causal.expand(B, S, S).clone()
        v0, v1 = int(vpos[0]), int(vpos[-1]) + 1
        T, h, w = self.grid
        last_start = v1 - h * w
        for i, it in enumerate(items):
            if it.mode == "last":
                allowed[i, v1:, v0:last_start] = False
            elif it.mode == "knockout":
                m = blocked_mask(it.layout, [CROSS_FRAME])
                n = m.shape[0]
                allowed[i, :n, :n] &= ~m
        mask = torch.zeros(B, 1, S, S)
        mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
        frames = np.stack([it.frames for it in items])
        return tokens, vpos, frames, mask


def _colour_words(tok) -> Tuple[np.ndarray, np.ndarray]:
    """RGB codes of every named colour (objects and backgrounds) and the token id of its name."""
    codes, ids = [], []
    for table in (synthetic.COLORS, synthetic.BACKGROUNDS):
        for name, (r, g, b) in table.items():
            codes.append(r * 65536 + g * 256 + b)
            ids.append(int(tok.convert_tokens_to_ids(name)))
    return np.array(codes), np.array(ids)


def token_colour_ids(frames: np.ndarray, grid: Tuple[int, int, int], codes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per video token (frame, row, col), the token id of the most frequent named colour in its
    region, -1 where the region is black. ``frames`` uint8 ``[B, T, H, W, 3]`` with T equal to the
    pooled frame count."""
    B, T, H, W, _ = frames.shape
    _, h, w = grid
    c = frames.astype(np.int64)
    code = c[..., 0] * 65536 + c[..., 1] * 256 + c[..., 2]
    code = code.reshape(B, T, h, H // h, w, W // w).transpose(0, 1, 2, 4, 3, 5).reshape(B, T, h, w, -1)
    counts = np.stack([(code == k).sum(-1) for k in codes], -1)
    best = counts.argmax(-1)
    out = ids[best]
    out[counts.max(-1) == 0] = -1
    return out.reshape(B, T * h * w)


def region_position_codes(rows_cols: Tuple[int, int], d: int, seed: int) -> torch.Tensor:
    """Cyclic position code of every region of a frame's token grid, ``[h * w, d]`` (row-major):
    ``cos/sin(2 pi r / h)`` along two fixed random unit directions plus ``cos/sin(2 pi c / w)``
    along two others (seeded). Cyclic, because moving objects wrap around the canvas."""
    h, w = rows_cols
    g = torch.Generator().manual_seed(1000 + seed)
    u = torch.linalg.qr(torch.randn(d, 4, generator=g))[0].T  # 4 orthonormal directions
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    a, b = 2 * math.pi * r.flatten() / h, 2 * math.pi * c.flatten() / w
    return (torch.cos(a)[:, None] * u[0] + torch.sin(a)[:, None] * u[1]
            + torch.cos(b)[:, None] * u[2] + torch.sin(b)[:, None] * u[3]) / math.sqrt(2)


def alignment_targets(E: torch.Tensor, batcher: "Batcher", frames: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per video token, the target of the alignment stage ``[B, T*h*w, d]`` and whether its region
    is coloured ``[B, T*h*w]``: the word embedding of the region's colour (plus ``align_position``
    times the region's position code, scaled to the colour embeddings' RMS norm); the padding
    embedding for black regions (a zero target leaves small noise that the language model's RMSNorm
    scales up to full size)."""
    tid = torch.from_numpy(token_colour_ids(frames, batcher.grid, *batcher.colours))
    tgt = E[int(batcher.tok.pad_token_id)].expand(*tid.shape, E.shape[1]).clone()
    on = tid >= 0
    tgt[on] = E[tid[on]]
    w = batcher.cfg.align_position
    if w > 0 and on.any():
        rms = E[tid[on]].pow(2).sum(-1).mean().sqrt()
        codes = batcher.position_codes.repeat(batcher.grid[0], 1).expand_as(tgt)  # frame-major token order
        tgt[on] = tgt[on] + w * rms * codes[on]
    return tgt, on


