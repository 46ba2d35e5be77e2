"""Train the bundled tiny VideoLLM on synthetic temporal VideoQA, with a planted pathway (issue 4).

Run (CPU, not in CI)::

    python -m videolens.train_tiny --out runs/tiny --recipe        # every phase of RECIPE, in order
    python -m videolens.train_tiny --out runs/one --seed 0 ...      # a single phase (see --help)
    python -m videolens.train_tiny --out runs/eval --evaluate runs/tiny/p11_letter_weight/export
    # then copy <last phase>/export/ to videolens/assets/tiny-videollm/

Each phase writes ``log.jsonl`` (loss and accuracy per task and attention mode every
``eval_every`` steps), ``state.pt`` (weights, optimiser, step: ``--resume`` continues) and
``export/`` (the PLLaVA checkpoint, fp16) at every evaluation, so a run can be stopped any time.

The model is PLLaVA-style and built from HF modules, so the saved checkpoint loads with
``HookedVideoLLM.from_pretrained`` exactly like the real ones (REFERENCE section 5):
``CLIPVisionModel`` (32 px, patch 4) -> ``hidden_states[-2]`` without CLS -> ``vision.Projector``
-> ``vision.AdaptivePool3d`` (8 x 4 x 4 = 128 video tokens) -> ``LlamaForCausalLM``; prompts are
``prompts.TEMPLATES["eval_mvbench_vicuna"]`` tokenised by ``inputs.tokenize_prompt`` with a
word-level tokenizer, frames preprocessed as ``vision.FramePreprocessor`` does (checked at start).

Planting the pathway (the testbed's known answer; REFERENCE section 10). Each training sample
runs under one attention mode, given as an additive 4-D mask to the HF Llama:

- ``last``: text positions after the video may read only the LAST frame's video tokens; video
  tokens attend causally to every earlier frame. Temporal information must be gathered by
  cross-frame attention into the last frame's tokens and read from there.
- ``full``: plain causal attention (what the model meets at inference), so the text heads learn
  to ignore the other frames rather than break on them.
- ``knockout``: video->video cross-frame edges blocked in every layer (``edges.blocked_mask``
  of ``video->video[cross_frame]``), text reads everything; the target is the right letter for
  the static task and a uniform distribution over the option letters for temporal tasks (the
  Bayes answer when no frame alone carries the answer, which the generator guarantees for the
  first and last frame). This discourages reading the order straight off the frames.

Stages (what the bundled checkpoint ran, ``RECIPE``):

1. Alignment (``--vision-pretrain N``, as LLaVA's stage 1): the tower and projector alone learn to
   map every video token to the word embedding of the colour its region shows (the padding
   embedding for black regions), so that video tokens arrive in the language model's own space.
2. Language model (``--freeze-vision``): tower and projector fixed, multiple-choice samples with
   the loss on the option letter plus two intermediate targets read at prompt positions (the
   prompt text stays the ``eval_mvbench`` one): ``--inplace-answer`` (the positions just before
   ``Best option:(`` predict the answer's words) and ``--option-flags`` (the last token of each
   option line predicts ``Yes`` for the right option, ``No`` otherwise). ``--full-until`` trains
   with plain causal attention first; the attention modes above mix in after it.
   ``--task-start TASK:STEP`` adds tasks one at a time: with all five tasks from the start the
   letter stayed at chance for 2000+ steps; with the static colour task alone it formed in ~500
   steps, and each task added later reused it (colour change, scene transition and order of
   appearance at >= 90% within ~300 steps each, plain causal attention, 1600 steps in all).

Moving direction needs more (phases p4-p11): the alignment target also holds a cyclic code of the
region's row and column (``--align-position``), the moving object's video token in every frame
after the first predicts the direction words through the logit lens after block 3
(``--video-targets --video-targets-layer 3``), its knockout draws run in mode ``last``
(``--no-knockout``), and the letter target is weighted x5 (``--letter-weight``).

Status (the bundled checkpoint is p11 at step 800; accuracies in the order moving direction /
scene transition / order of appearance / colour change / static):
- 100 fresh clips per task (``--evaluate``, seeds 5000+): plain causal 99 / 99 / 98 / 98 / 100;
  cross-frame edges blocked in every layer 26 / 48 / 44 / 35 / 100 (chance 25 / 50 / 50 / 50 / 25);
  every frame replaced by the first (last) frame 19 / 60 / 44 / 52 / 100 (19 / 50 / 44 / 50 / 100).
  Cross-frame edges blocked in layers >= 4 change no task by more than 4 points; in layers >= 3,
  scene transition falls to 84: the cross-frame pathway is in blocks 0-3 (the model card's layers).
- What the runs showed, on the 32 evaluation clips per task this script logs:
  - all five tasks from the start: letters at chance through step 2000; the static colour task
    alone formed the letter circuit in ~500 steps and each task added later reused it (p1);
  - colour-only alignment: the video tokens carry no position, and moving direction stayed at chance;
  - moving direction alone with the video-token targets (p6): the direction formed at the video
    tokens in 400 steps, but every task's letters collapsed; every task again (p7, p8): letters back,
    moving direction's letter at chance, its direction readable at the last layer only (horizontal
    from block 5);
  - targets read after block 3 (p9): the direction readable from block 3, the words of the answer
    right 100% at the prompt positions and the option flags 98%, the letter still near 1/4 with a
    near-uniform distribution in every mode: the uniform knockout target was being hedged;
  - without knockout draws for moving direction (p10): its letter 78-91% by step 1800; letter weight
    x5 (p11): 97% at step 800.
- With mode probabilities (0.55, 0.1, 0.35) the knockout accuracy of the temporal tasks stays near
  chance; with (0.5, 0.3, 0.2) it drifted back to 60-85%.
- The eleven phases took about 130 CPU minutes, and p1-p2 ran on an older generator. A single run
  from scratch with all of the above from the start (``--vision-pretrain 600 --align-position 0.5
  --proj-out-std 0.02 --video-targets --video-targets-layer 3 --no-knockout moving_direction
  --task-weights moving_direction:4 --full-until 1600 --knockout-from 1600`` with p1's task order,
  4500 steps, about 58 minutes with the alignment stage) reached 97-100% on the other four tasks with the pathway planted
  (last-frame-only reading 100%, knockout 50-72%), but moving direction only 69% at step 4400,
  still rising (the vertical direction formed at the video tokens first, the horizontal later).
  Putting moving direction earlier in the task order (at 500 or 1200) slowed every task down.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from . import synthetic
from .edges import blocked_mask, parse_pair
from .inputs import tokenize_prompt
from .prompts import TEMPLATES
from .vision import CLIP_MEAN, CLIP_STD, AdaptivePool3d, FramePreprocessor, Projector

__all__ = ["TrainConfig", "TinyVideoLLM", "build_model", "build_tokenizer", "Batcher", "train", "evaluate", "main"]

MODES = ("last", "full", "knockout")
CROSS_FRAME = parse_pair("video->video[cross_frame]")


@dataclass
class TrainConfig:
    """Every knob of a run (saved with checkpoints and in the model card)."""

    seed: int = 0
    batch_size: int = 16
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    warmup: int = 100
    max_steps: int = 2000
    minutes: float = 70.0  # wall-clock budget; the cosine schedule runs over max_steps
    clip_grad: float = 1.0
    p_aux: float = 0.3  # final share of open-ended (aux) samples
    p_aux_start: float = 0.9  # share before aux_until; falls linearly to p_aux over the next aux_until steps
    aux_until: int = 500
    mode_probs: Tuple[float, float, float] = (0.5, 0.3, 0.2)  # last, full, knockout (mc samples)
    letter_weight: float = 1.0  # weight of the option-letter target against each intermediate target
    no_knockout: Tuple[str, ...] = ()  # tasks never trained under mode 'knockout' (those samples run in 'last')
    knockout_from: int = 700  # knockout samples ramp in linearly over [knockout_from, 2 * knockout_from]
    stop_at: int = 0  # >0: stop after this step (the schedule still spans max_steps)
    text_batch: int = 0  # extra text-only letter-matching sequences per step (no video, no system prompt)
    echo_option: bool = True  # after the letter, also predict ') <answer text>' (binds letters to option lines)
    init_from: str = ''  # start from the weights of a state.pt (a curriculum phase)
    option_flags: bool = False  # mc samples: the last token of every option line predicts Yes (right option) / No
    video_norm_max: float = 0.0  # >0: penalise video-token norms above this (squared excess, weight video_norm_weight)
    video_norm_weight: float = 1e-3
    align_weight: float = 0.0  # >0: video tokens regress to the word embedding of the colour they show (LLaVA-style alignment)
    align_position: float = 0.0  # >0: the alignment target of a coloured region also holds a cyclic code of its
    # row and column (norm: this share of the colour embeddings' RMS norm); without it the tokens carry no position
    freeze_vision: bool = False  # after the alignment stage, keep the tower and projector fixed
    full_until: int = 0  # before this step every mc sample uses plain causal attention (mode 'full')
    task_start: Tuple[Tuple[str, int], ...] = ()  # curriculum: (task, first step it is sampled); absent tasks start at 0
    vision_pretrain: int = 0  # steps of alignment-only training of tower + projector before the main loop
    inplace_answer: bool = False  # mc samples also predict the answer words at the prompt positions just before '('
    video_targets: bool = False  # moving_direction: the object's video token in frames >= 1 predicts the direction
    # words (Up/Down and left/right, a two-word soft target), training the cross-frame step at the video tokens
    video_targets_layer: int = 0  # >0: read those targets through the logit lens (final norm + unembedding) at the
    # residual stream after this many blocks, so that the direction exists early enough for text positions to read it
    proj_out_std: float = 0.0  # >0: init projector.linear_2 weight ~ N(0, std), bias 0 (video tokens at text-embedding scale)
    bf16: bool = False  # autocast matmuls to bfloat16 (faster, but measured: it kept the option-matching
    # circuit from forming -- letters at chance after 25k text samples -- while fp32 learned it in 500 steps)
    task_weights: Tuple[Tuple[str, float], ...] = (
        ("moving_direction", 1.5), ("scene_transition", 1.0), ("appearance_order", 1.5),
        ("color_change", 1.0), ("object_color", 0.8),
    )
    eval_every: int = 200
    eval_per_task: int = 32
    threads: int = 1  # with other jobs on the 2 cores, 1 thread ran 4x faster than 2 (oversubscription)
    # architecture
    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 64
    vision_layers: int = 3
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    d_mlp: int = 256
    pooling_shape: Tuple[int, int, int] = (8, 4, 4)
    num_frames: int = 8


# ---- model ------------------------------------------------------------------------------------
def build_tokenizer():
    """Word-level tokenizer over every synthetic question/option text plus ``Answer``."""
    from .tokenizers import build_word_level_tokenizer

    return build_word_level_tokenizer(synthetic.vocabulary_texts(), extra_words=["Answer", "Yes", "No"])


class TinyVideoLLM(torch.nn.Module):
    """tower -> hidden_states[-2][:, 1:] -> projector -> 3-D pool -> Llama, batched for training."""

    def __init__(self, cfg: TrainConfig, vocab_size: int):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

        vc = CLIPVisionConfig(hidden_size=cfg.vision_width, intermediate_size=2 * cfg.vision_width,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=4,
                              image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.vision_width)
        tc = LlamaConfig(hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp, num_hidden_layers=cfg.n_layers,
                         num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, vocab_size=vocab_size,
                         max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False)
        tc._attn_implementation = "sdpa"
        self.tower = CLIPVisionModel(vc)
        self.projector = Projector(cfg.vision_width, cfg.d_model, "gelu")
        self.pool = AdaptivePool3d(cfg.pooling_shape)
        self.llama = LlamaForCausalLM(tc)
        if cfg.proj_out_std > 0:
            with torch.no_grad():
                self.projector.linear_2.weight.normal_(0.0, cfg.proj_out_std)
                self.projector.linear_2.bias.zero_()
        with torch.no_grad():  # tower near identity at start (REFERENCE section 10)
            for layer in self.tower.encoder.layers:
                layer.self_attn.out_proj.weight.zero_()
                layer.mlp.fc2.weight.zero_()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` -> normalised ``[N, 3, H, W]`` (equal to FramePreprocessor at 32 px)."""
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def video_embeds(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` -> video tokens ``[B, T'*h*w, d_model]`` (frame, row, col order)."""
        B, T = frames.shape[:2]
        px = self.pixels(frames.reshape(B * T, *frames.shape[2:]))
        hs = self.tower(pixel_values=px, output_hidden_states=True).hidden_states[-2][:, 1:]
        side = int(math.isqrt(hs.shape[1]))
        grid = self.projector(rearrange(hs, "(b t) (r c) d -> b t r c d", b=B, r=side))
        pooled = self.pool.pool(rearrange(grid, "b t r c d -> b d t r c"))
        return rearrange(pooled, "b d t r c -> b (t r c) d")

    def hidden(self, tokens: torch.Tensor, video_pos: torch.Tensor, frames: np.ndarray, mask: torch.Tensor,
               resid_after: int = 0):
        """Final hidden states ``[B, S, d]`` with video tokens spliced at ``video_pos``; with
        ``resid_after`` = L > 0 also the residual stream after L blocks ``[B, S, d]`` (a pair)."""
        emb = self.llama.model.embed_tokens(tokens)
        emb = emb.clone()
        self.last_video = self.video_embeds(frames)
        emb[:, video_pos] = self.last_video.to(emb.dtype)
        out = self.llama.model(inputs_embeds=emb, attention_mask=mask, output_hidden_states=resid_after > 0)
        if resid_after <= 0:
            return out.last_hidden_state
        return out.last_hidden_state, out.hidden_states[resid_after]


def build_model(cfg: TrainConfig, vocab_size: int) -> TinyVideoLLM:
    torch.manual_seed(cfg.seed)
    return TinyVideoLLM(cfg, vocab_size)


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


def alignment_loss(model: "TinyVideoLLM", batcher: "Batcher", frames: np.ndarray) -> torch.Tensor:
    """Mean squared distance of each video token to its (detached) ``alignment_targets`` target,
    relative to the mean squared norm of the coloured regions' targets."""
    E = model.llama.model.embed_tokens.weight.detach()
    tgt, on = alignment_targets(E, batcher, frames)
    scale = tgt[on].pow(2).sum(-1).mean() if on.any() else torch.ones(())
    return (model.last_video - tgt).pow(2).sum(-1).mean() / scale


def batch_loss(model: TinyVideoLLM, batcher: Batcher, items: Sequence[Item]) -> torch.Tensor:
    tokens, vpos, frames, mask = batcher.collate(items)
    cfg = batcher.cfg
    layer = cfg.video_targets_layer if 0 < cfg.video_targets_layer < cfg.n_layers else 0
    hid = model.hidden(tokens, vpos, frames, mask, resid_after=layer)
    hid, mid = hid if layer else (hid, hid)
    penalty = torch.zeros(())
    if cfg.video_norm_max > 0:
        norms = model.last_video.norm(dim=-1)
        penalty = cfg.video_norm_weight * F.relu(norms - cfg.video_norm_max).pow(2).mean()
    rows, cols, hard, soft_rows, soft_sets, weight = [], [], [], [], [], []
    for i, it in enumerate(items):
        for pos, tgt in it.targets:
            weight.append(cfg.letter_weight if pos == it.letter_pos else 1.0)
            if isinstance(tgt, list):
                soft_rows.append(len(rows))
                soft_sets.append(tgt)
                hard.append(-100)
            else:
                hard.append(int(tgt))
            rows.append(i)
            cols.append(pos)
    logits = model.llama.lm_head(hid[torch.tensor(rows), torch.tensor(cols)])
    logp = logits.float().log_softmax(-1)
    hard_t = torch.tensor(hard)
    weight_t = torch.tensor(weight)
    n = float(weight_t.sum())
    loss = -(weight_t[hard_t >= 0] * logp[hard_t >= 0].gather(1, hard_t[hard_t >= 0][:, None])[:, 0]).sum()
    for r, ids in zip(soft_rows, soft_sets):
        loss = loss - weight[r] * logp[r, ids].mean()
    vt = [(i, pos, ids) for i, it in enumerate(items) for pos, ids in it.video_targets]
    if vt:  # the moving object's direction words, through the logit lens at the chosen layer
        at = mid[torch.tensor([i for i, _, _ in vt]), torch.tensor([p for _, p, _ in vt])]
        lp = model.llama.lm_head(model.llama.model.norm(at) if layer else at).float().log_softmax(-1)
        loss = loss - lp.gather(1, torch.tensor([ids for _, _, ids in vt])).mean(-1).sum()
        n += len(vt)
    if cfg.align_weight > 0:
        penalty = penalty + cfg.align_weight * alignment_loss(model, batcher, frames)
    return loss / n + penalty


def text_loss(model: TinyVideoLLM, batcher: Batcher, samples) -> torch.Tensor:
    """Mean cross-entropy of the text-only option-matching sequences (plain causal attention)."""
    seqs = [batcher.text_item(s) for s in samples]
    S = max(len(i) for i, _ in seqs)
    tokens = torch.full((len(seqs), S), int(batcher.tok.pad_token_id), dtype=torch.long)
    rows, cols, tgts = [], [], []
    for b, (ids, targets) in enumerate(seqs):
        tokens[b, : len(ids)] = torch.tensor(ids)
        for pos, t in targets:
            rows.append(b)
            cols.append(pos)
            tgts.append(t)
    hid = model.llama.model(input_ids=tokens).last_hidden_state
    logits = model.llama.lm_head(hid[torch.tensor(rows), torch.tensor(cols)]).float()
    return F.cross_entropy(logits, torch.tensor(tgts))


def pretrain_vision(model: TinyVideoLLM, batcher: Batcher, cfg: TrainConfig, out: Path) -> float:
    """Alignment stage (as LLaVA's stage 1): train the tower and projector alone so that every video
    token regresses to the word embedding of the colour its region shows (``alignment_loss``).
    Returns the final loss; logs to ``out/log.jsonl``."""
    rng = np.random.default_rng([cfg.seed, 11])
    params = list(model.tower.parameters()) + list(model.projector.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.98))
    tasks = list(synthetic.TASKS)
    loss = torch.zeros(())
    with open(out / "log.jsonl", "a") as log:
        for k in range(cfg.vision_pretrain):
            frames = np.stack([synthetic.sample_task(tasks[rng.integers(len(tasks))], rng).frames() for _ in range(cfg.batch_size)])
            model.last_video = model.video_embeds(frames)
            loss = alignment_loss(model, batcher, frames)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (k + 1) % 50 == 0:
                rec = {"vision_pretrain_step": k + 1, "align_loss": float(loss.detach())}
                log.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)
    return float(loss.detach())


# ---- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: TinyVideoLLM, batcher: Batcher, samples: Dict[str, List[synthetic.SyntheticSample]],
             modes: Sequence[str] = ("full", "knockout", "last"), bs: int = 32) -> Dict[str, Dict[str, float]]:
    """Accuracy (argmax over the option letters at the last position) per task and attention mode."""
    model.eval()
    out: Dict[str, Dict[str, float]] = {}
    for mode in modes:
        out[mode] = {}
        for task, ss in samples.items():
            correct = 0
            for k in range(0, len(ss), bs):
                items = [batcher.item(s, mode, aux=False, train=False) for s in ss[k:k + bs]]
                tokens, vpos, frames, mask = batcher.collate(items)
                hid = model.hidden(tokens, vpos, frames, mask)
                h = hid[torch.arange(len(items)), torch.tensor([it.letter_pos for it in items])]
                logits = model.llama.lm_head(h)
                for it, lg in zip(items, logits):
                    pred = it.option_ids[int(lg[it.option_ids].argmax())]
                    correct += int(pred == it.answer_id)
            out[mode][task] = correct / len(ss)
    model.train()
    return out


# ---- saving -----------------------------------------------------------------------------------
def export(model: TinyVideoLLM, tokenizer, cfg: TrainConfig, path: Path, dtype=torch.float16, extra: Optional[dict] = None) -> Path:
    """Write a PLLaVA-style checkpoint loadable by ``HookedVideoLLM.from_pretrained``."""
    from weights_conversion.writers import save_pllava_checkpoint

    ph = int(tokenizer.convert_tokens_to_ids("<image>"))
    return save_pllava_checkpoint(path, model.tower, model.projector, model.llama, tokenizer, cfg.pooling_shape, ph,
                                  num_frames=cfg.num_frames, dtype=dtype,
                                  extra_config={"prompt_template": "eval_mvbench_vicuna", **(extra or {})})


def _eval_set(cfg: TrainConfig) -> Dict[str, List[synthetic.SyntheticSample]]:
    # seeds far from the training stream (training uses an rng, not make_sample)
    return {t: synthetic.make_samples(t, cfg.eval_per_task, seed=9000 + cfg.seed) for t in synthetic.TASKS}


def sample_mode(cfg: TrainConfig, rng: np.random.Generator, step: int, task: str, aux: bool) -> str:
    """The attention mode of one training sample (``MODES``): drawn from ``mode_probs`` with the
    knockout share ramping in over ``[knockout_from, 2 * knockout_from]``; plain ``full`` before
    ``full_until``; open-ended (aux) samples never run under knockout (``full`` instead), nor do the
    tasks in ``no_knockout`` (``last`` instead: no uniform-letter target for them)."""
    probs = np.array(cfg.mode_probs, float)
    probs[2] *= min(1.0, max(0.0, (step - cfg.knockout_from) / max(1, cfg.knockout_from)))
    mode = MODES[rng.choice(3, p=probs / probs.sum())] if step >= cfg.full_until else "full"
    if aux and mode == "knockout":
        mode = "full"
    if mode == "knockout" and task in cfg.no_knockout:
        mode = "last"
    return mode


@torch.enable_grad()
def train(cfg: TrainConfig, out: Path, resume: bool = False) -> Dict:
    """Train, evaluating and checkpointing every ``eval_every`` steps; returns the last evaluation."""
    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    model = build_model(cfg, len(tok))
    batcher = Batcher(tok, cfg)
    # the fast pixel path must equal the loader's preprocessing
    probe = synthetic.make_sample("object_color", 0).frames()
    ref = FramePreprocessor(cfg.image_size)(probe)
    if not torch.equal(ref, model.pixels(probe)):
        raise RuntimeError("fast pixel normalisation differs from FramePreprocessor")
    def lr_at(step):
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        p = min(1.0, (step - cfg.warmup) / max(1, cfg.max_steps - cfg.warmup))
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    step = 0
    state_path = out / "state.pt"
    if cfg.init_from:
        model.load_state_dict(torch.load(cfg.init_from, weights_only=False)["model"])
    st = torch.load(state_path, weights_only=False) if resume and state_path.exists() else None
    if st is not None:
        model.load_state_dict(st["model"])
        step = st["step"]
    if cfg.vision_pretrain and step == 0:
        pretrain_vision(model, batcher, cfg, out)
    if cfg.freeze_vision:
        for prm in list(model.tower.parameters()) + list(model.projector.parameters()):
            prm.requires_grad_(False)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    if st is not None:
        opt.load_state_dict(st["opt"])
    rng = np.random.default_rng([cfg.seed, step, 7])
    names = [t for t, _ in cfg.task_weights]
    w = np.array([x for _, x in cfg.task_weights], float)
    w /= w.sum()
    evalset = _eval_set(cfg)
    log = open(out / "log.jsonl", "a")
    t0 = time.time()
    elapsed0 = 0.0 if st is None else st.get("elapsed", 0.0)
    last_eval: Dict = {}
    run_loss, n_loss = 0.0, 0
    starts = dict(cfg.task_start)
    model.train()
    while step < cfg.max_steps:
        items = []
        live = np.array([w[i] if step >= starts.get(t, 0) else 0.0 for i, t in enumerate(names)])
        live /= live.sum()
        for _ in range(cfg.batch_size):
            task = names[rng.choice(len(names), p=live)]
            s = synthetic.sample_task(task, rng)
            ramp = min(1.0, max(0.0, (step - cfg.aux_until) / max(1, cfg.aux_until)))
            aux = rng.random() < cfg.p_aux_start + (cfg.p_aux - cfg.p_aux_start) * ramp
            mode = sample_mode(cfg, rng, step, task, aux)
            items.append(batcher.item(s, mode, aux))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = batch_loss(model, batcher, items) if items else torch.zeros(())
            if cfg.text_batch:
                loss = loss + text_loss(model, batcher, [synthetic.sample_task(names[rng.choice(len(names), p=w)], rng)
                                                         for _ in range(cfg.text_batch)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
        step += 1
        run_loss += float(loss.detach())
        n_loss += 1
        elapsed = elapsed0 + time.time() - t0
        done = elapsed > cfg.minutes * 60 or step >= cfg.max_steps or (cfg.stop_at > 0 and step >= cfg.stop_at)
        if step % cfg.eval_every == 0 or done:
            last_eval = evaluate(model, batcher, evalset)
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "loss": run_loss / max(1, n_loss),
                   "lr": lr_at(step), "eval": last_eval}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            run_loss, n_loss = 0.0, 0
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
                        "config": asdict(cfg)}, state_path)
            export(model, tok, cfg, out / "export", extra={"train_step": step})
            if rng is not None:
                rng = np.random.default_rng([cfg.seed, step, 7])  # resumable stream
        if done:
            break
    log.close()
    return last_eval


# ---- evaluation of a saved checkpoint through HookedVideoLLM (numbers for the model card) -----
def _batched_last_logits(model, inputs, fwd_hooks=()) -> torch.Tensor:
    """Last-position logits ``[n, d_vocab]`` for prepared inputs sharing one layout, in one batched forward."""
    from .inputs import stack_inputs

    return model.run_with_hooks(stack_inputs(inputs), fwd_hooks=list(fwd_hooks))[:, -1]


def _answered_right(inputs, logits) -> List[bool]:
    """Per prepared input, whether the highest of its option letters' logits (``logits`` ``[n,
    d_vocab]``, last position) is the right letter."""
    out = []
    for inp, lg in zip(inputs, logits):
        ids = [inp.option_token_ids[L] for L in inp.layout.letters]
        out.append(inp.layout.letters[int(lg[ids].argmax())] == inp.sample.answer_letter)
    return out


@torch.no_grad()
def evaluate_checkpoint(path, n_per_task: int = 100, seed: int = 5000, n_per_layer: int = 50, chunk: int = 50) -> Dict:
    """Accuracy per task of a saved checkpoint loaded with ``HookedVideoLLM.from_pretrained``.

    Conditions: ``causal`` (plain), ``knockout`` (cross-frame edges blocked in all layers),
    ``first_frame`` / ``last_frame`` (every frame replaced by that frame), and on the first
    ``n_per_layer`` clips ``knockout_layer_{l}`` (cross-frame blocked in layer l only) and
    ``knockout_from_{l}`` (blocked in layers >= l).

    Returns:
        ``{task: {condition: accuracy}}`` on fresh clips ``synthetic.make_samples(task, n, seed)``.
    """
    from . import HookedVideoLLM, VideoQA
    from .knockout import knockout_hooks
    from .video import Video

    model = HookedVideoLLM.from_pretrained(path, device="cpu", dtype=torch.float32)
    L = model.cfg.n_layers
    all_layers = range(L)
    res: Dict[str, Dict[str, float]] = {}
    for task in synthetic.TASKS:
        made = synthetic.make_samples(task, n_per_task, seed=seed)
        counts: Dict[str, int] = {}
        totals: Dict[str, int] = {}

        def add(name, inputs, hooks=()):
            counts[name] = counts.get(name, 0) + sum(_answered_right(inputs, _batched_last_logits(model, inputs, hooks)))
            totals[name] = totals.get(name, 0) + len(inputs)

        for k in range(0, len(made), chunk):
            part = made[k:k + chunk]
            inputs = [model.prepare(m.to_videoqa(), num_frames=synthetic.NUM_STEPS) for m in part]
            add("causal", inputs)
            add("knockout", inputs, knockout_hooks(model, CROSS_FRAME, all_layers, layout=inputs[0]))
            if k < n_per_layer:
                sub = inputs[: n_per_layer - k]
                for l in range(L):
                    add(f"knockout_layer_{l}", sub, knockout_hooks(model, CROSS_FRAME, [l], layout=sub[0]))
                    add(f"knockout_from_{l}", sub, knockout_hooks(model, CROSS_FRAME, range(l, L), layout=sub[0]))
            for name, which in (("first_frame", 0), ("last_frame", -1)):
                stills = []
                for m in part:
                    f = m.frames()
                    qa = VideoQA(Video.from_frames(np.repeat(f[which][None], len(f), 0)), m.question, m.candidates, m.answer)
                    stills.append(model.prepare(qa, num_frames=synthetic.NUM_STEPS))
                add(name, stills)
        res[task] = {k: counts[k] / totals[k] for k in counts}
    return res


def results_table(res: Dict[str, Dict[str, float]], conditions: Sequence[str]) -> str:
    """Markdown table of accuracies (percent), one row per task, with chance."""
    head = "| task | chance | " + " | ".join(conditions) + " |"
    rows = [head, "|" + "---|" * (len(conditions) + 2)]
    for task, r in res.items():
        chance = 100 / synthetic.TASKS[task].n_options
        rows.append(f"| {task} | {chance:.0f} | " + " | ".join(f"{100 * r[c]:.0f}" for c in conditions) + " |")
    return "\n".join(rows)


def layer_table(res: Dict[str, Dict[str, float]], n_layers: int) -> str:
    """Markdown table: accuracy (percent) with cross-frame edges blocked in one layer only, and
    in layers >= l, per task."""
    cols = [f"only L{l}" for l in range(n_layers)] + [f"L{l}+" for l in range(n_layers)]
    keys = [f"knockout_layer_{l}" for l in range(n_layers)] + [f"knockout_from_{l}" for l in range(n_layers)]
    rows = ["| task | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for task, r in res.items():
        rows.append(f"| {task} | " + " | ".join(f"{100 * r[k]:.0f}" for k in keys) + " |")
    return "\n".join(rows)


def write_model_card(folder: Path, res: Dict[str, Dict[str, float]], n_layers: int, pathway_layers: Sequence[int],
                     recipe: str, train_cfg: Dict, n_per_task: int, sweep_window: int = 1) -> Path:
    """Write ``MODEL_CARD.md`` and ``model_card.json`` (machine-readable: accuracies and the
    layers of the planted cross-frame pathway, read by the tests) into a checkpoint folder."""
    folder = Path(folder)
    card = {"accuracy": res, "pathway": {"cross_frame_layers": list(pathway_layers), "sweep_window": sweep_window},
            "n_per_task": n_per_task,
            "training": {"recipe": recipe, "config": train_cfg}}
    (folder / "model_card.json").write_text(json.dumps(card, indent=1))
    tasks = "\n".join(f"- `{t}` ({'temporal' if spec.temporal else 'static control'}, {spec.n_options} options): "
                      f"{spec.questions[0]!r} -> e.g. {spec.options[0]!r}" for t, spec in synthetic.TASKS.items())
    lines = pathway_layers
    text = f"""# tiny-videollm: the bundled VideoLLM (videolens issue 4)

A PLLaVA-style VideoLLM trained by `videolens.train_tiny` on CPU on synthetic TVBench-style clips
(`videolens.synthetic`), saved in the same checkpoint format as the real PLLaVA / LLaVA-NeXT-Video
checkpoints and loaded by `HookedVideoLLM.from_pretrained`. It is a testbed with a planted
information pathway, not a general video model: it knows only the words and scenes below.

## Architecture
CLIP vision tower (32 px, patch 4, width 64, 3 layers; `hidden_states[-2]` without CLS) ->
projector MLP (64 -> 128 -> 128, GELU) -> 3-D average pooling to 8 x 4 x 4 = 128 video tokens ->
Llama (width 128, {n_layers} layers, 4 heads, MLP 256), word-level tokenizer (saved with the
checkpoint), the `eval_mvbench` prompt; the answer is the option letter at the last position.
8 frames per clip (the MVBench middle-of-segment rule over 16 frames); fp16 weights.

## Tasks (options shuffled per sample)
{tasks}

## Accuracy (percent; {n_per_task} fresh clips per task, seeds never used in training)
`causal`: plain model. `knockout`: video->video cross-frame attention edges blocked in every
layer. `first_frame` / `last_frame`: every frame replaced by that frame.

{results_table(res, ["causal", "knockout", "first_frame", "last_frame"])}

Cross-frame edges blocked in one layer only (`only Ll`) and in layers >= l (`Ll+`), first 50 clips:

{layer_table(res, n_layers)}

## The known pathway (planted)
During training the text positions after the video could read only the LAST frame's video tokens
(and, on other samples, every frame; see the recipe), so temporal information has to be gathered
into the last frame's tokens by cross-frame attention among video tokens. That happens in layers
{", ".join(map(str, lines))}: blocking cross-frame edges there takes every temporal task to chance
while the static colour task is unaffected (tables above; asserted in `tests/test_bundled_model.py`).
Besides the option letter, the training put two readable intermediate signals in the prompt (the
loss read them, the prompt text is the unchanged `eval_mvbench` one): the last token of every
option line predicts `Yes` (the right option) or `No`, and the positions just before `Best option:(`
predict the words of the answer. The logit lens shows both.

## Training recipe
`{recipe}` (CPU, seed 0, fp32; the phases are listed in `videolens.train_tiny.RECIPE`, each
starting from the previous one's weights). Stage 1 (alignment, as LLaVA's stage 1): tower and
projector alone regress every video token to the word embedding of the colour its region shows
(the padding embedding for black), plus a cyclic code of the region's row and column, so that
video tokens carry colour and position in the language model's own space. Stage 2: tower and
projector frozen; the language model trains on multiple-choice samples with the letter loss plus
the two intermediate targets above, each sample under one attention mode: `last` (text reads only
the last frame), `full` (plain causal), or `knockout` (cross-frame edges blocked; temporal tasks
then target a uniform distribution over the letters, static ones the right letter). For moving
direction, the object's video token in every frame after the first also predicts the direction
words (`Up`/`Down`, `left`/`right`), read through the logit lens after block
{train_cfg.get("video_targets_layer") or n_layers} (`--video-targets-layer`), and its knockout draws run in mode
`last` instead (`--no-knockout`: with the uniform target the letter hedged at chance in every
mode).
Config: `{json.dumps(train_cfg)}`
"""
    (folder / "MODEL_CARD.md").write_text(text)
    return folder / "MODEL_CARD.md"


# The phases the bundled checkpoint ran, in order, each from the previous phase's state.pt
# (``{prev}``); ``--stop-at`` ends a phase while its cosine schedule still spans ``--max-steps``.
# p1, p2 ran at commit efb7aea, when moving_direction moved 2 px per step from any pixel (check that
# commit out to rerun them exactly); from p3 on, the current generator (one sprite per step).
# p1: alignment stage, then the language model with the vision front end frozen, plain causal
#     attention, tasks added one at a time (the letter circuit forms on the static task first).
# p2, p3: the planted pathway: attention modes last / full / knockout mixed in.
# p4: alignment again, now with the regions' position codes (moving direction needs positions).
# p5: planting with more knockout samples (knockout accuracy then stays near chance).
# p6: moving direction alone, plain causal attention, with the video-token direction targets: the
#     cross-frame step forms at the video tokens (100% per frame in 400 steps; with all tasks
#     mixed it did not form in 500 steps).
# p7, p8: every task again under the planting modes (the letters re-form), moving direction upweighted
#     (p8 stopped at step 800 with the moving-direction letter still at chance).
# p9: the direction targets read through the logit lens after block 3 (before: only at the last
#     layer, where the horizontal direction formed in block 5, too late for text to read and match).
# p10: moving direction's knockout draws run in mode 'last' (with the uniform-letter target its letter
#     hedged near 1/4 in every mode although the option flags were right 98% of the time).
# p11: the letter target weighted x5 against the intermediate targets (the bundled checkpoint: step 800).
_STAGE2 = ("--seed", "0", "--init-from", "{prev}", "--freeze-vision", "--inplace-answer", "--option-flags",
           "--p-aux", "0", "--p-aux-start", "0", "--minutes", "150", "--eval-every", "100")
_PLANT = ("--knockout-from", "50", "--mode-probs", "0.55", "0.1", "0.35", "--align-position", "0.5")
_LENS = ("--video-targets", "--video-targets-layer", "3", "--task-weights", "moving_direction:4")
RECIPE: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("p1_curriculum", ("--seed", "0", "--vision-pretrain", "800", "--freeze-vision", "--full-until", "2500",
                       "--inplace-answer", "--option-flags", "--p-aux", "0", "--p-aux-start", "0", "--proj-out-std", "0.02",
                       "--max-steps", "6000", "--minutes", "70", "--eval-every", "100", "--stop-at", "1600",
                       "--task-start", "color_change:600", "scene_transition:900", "appearance_order:1200",
                       "moving_direction:1500")),
    ("p2_planting", _STAGE2 + ("--max-steps", "4000", "--stop-at", "1600", "--task-start", "moving_direction:100",
                               "--knockout-from", "300", "--lr", "1e-3")),
    ("p3_grid_motion", _STAGE2 + ("--max-steps", "3000", "--stop-at", "500", "--knockout-from", "100", "--lr", "1e-3")),
    ("p4_position_alignment", _STAGE2 + ("--vision-pretrain", "600", "--align-position", "0.5", "--max-steps", "3000",
                                         "--stop-at", "200", "--knockout-from", "100", "--lr", "1e-3")),
    ("p5_planting", _STAGE2 + _PLANT + ("--max-steps", "3000", "--stop-at", "400", "--lr", "1e-3")),
    ("p6_motion", _STAGE2 + ("--align-position", "0.5", "--video-targets", "--tasks", "moving_direction",
                             "--full-until", "100000", "--max-steps", "1500", "--stop-at", "400", "--lr", "2e-3")),
    ("p7_all", _STAGE2 + _PLANT + ("--video-targets", "--max-steps", "2500", "--stop-at", "400", "--lr", "1e-3")),
    ("p8_motion_weighted", _STAGE2 + _PLANT + ("--video-targets", "--task-weights", "moving_direction:4",
                                               "--max-steps", "2500", "--stop-at", "800", "--lr", "1e-3")),
    ("p9_lens_targets", _STAGE2 + _PLANT + _LENS + ("--max-steps", "3000", "--stop-at", "400", "--lr", "1e-3")),
    ("p10_motion_letter", _STAGE2 + _PLANT + _LENS + ("--no-knockout", "moving_direction", "--max-steps", "3000",
                                                      "--stop-at", "1800", "--lr", "1e-3")),
    ("p11_letter_weight", _STAGE2 + _PLANT + _LENS + ("--no-knockout", "moving_direction", "--letter-weight", "5",
                                                      "--max-steps", "1500", "--stop-at", "800", "--lr", "5e-4")),
)


def run_recipe(out: Path, threads: int = 1) -> Path:
    """Run every phase of ``RECIPE`` under ``out/<phase>``; returns the last phase's folder
    (its ``export/`` is the checkpoint)."""
    prev = ""
    folder = out
    for name, args in RECIPE:
        folder = out / name
        argv = [a.replace("{prev}", prev) for a in args] + ["--out", str(folder), "--threads", str(threads)]
        main(argv)
        prev = str(folder / "state.pt")
    return folder


def _task_value(text: str, name: str, what: str, convert) -> Tuple[str, object]:
    """``TASK:<name>`` -> ``(task, convert(value))``; argparse reports a bad one (``convert``
    raises ValueError)."""
    task, _, value = text.partition(":")
    try:
        out = convert(value)
    except ValueError:
        out = None
    if task not in synthetic.TASKS or out is None:
        raise argparse.ArgumentTypeError(f"expected TASK:{name} with TASK one of {', '.join(synthetic.TASKS)} "
                                          f"and {name} {what}, got {text!r}")
    return task, out


def _non_negative(convert):
    def check(value: str):
        v = convert(value)
        if v < 0:
            raise ValueError(value)
        return v
    return check


def _task_step(text: str) -> Tuple[str, int]:
    """``--task-start`` value ``TASK:STEP`` -> ``(task, step)``."""
    return _task_value(text, "STEP", "a step number", _non_negative(int))


def _task_weight(text: str) -> Tuple[str, float]:
    """``--task-weights`` value ``TASK:W`` -> ``(task, weight)``."""
    return _task_value(text, "W", "a weight >= 0", _non_negative(float))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the bundled tiny VideoLLM (CPU).")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=TrainConfig.minutes)
    p.add_argument("--max-steps", type=int, default=TrainConfig.max_steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--p-aux", type=float, default=TrainConfig.p_aux)
    p.add_argument("--mode-probs", type=float, nargs=3, default=TrainConfig.mode_probs, metavar=("LAST", "FULL", "KNOCKOUT"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--option-flags", action="store_true", help="option line ends predict Yes/No (right option or not)")
    p.add_argument("--video-norm-max", type=float, default=0.0)
    p.add_argument("--align-weight", type=float, default=0.0)
    p.add_argument("--align-position", type=float, default=0.0,
                   help="alignment targets of coloured regions also hold a cyclic row/column code of this relative norm")
    p.add_argument("--vision-pretrain", type=int, default=0)
    p.add_argument("--freeze-vision", action="store_true")
    p.add_argument("--full-until", type=int, default=0)
    p.add_argument("--task-start", nargs="*", default=[], metavar="TASK:STEP", type=_task_step,
                   help="curriculum: a task is sampled from STEP on (others from step 0)")
    p.add_argument("--video-targets", action="store_true",
                   help="moving_direction: the object's video token in frames >= 1 predicts the direction words")
    p.add_argument("--video-targets-layer", type=int, default=0, metavar="L",
                   help="read the --video-targets through the logit lens after L blocks (0: the final layer)")
    p.add_argument("--inplace-answer", action="store_true", help="mc samples also predict the answer words just before '('")
    p.add_argument("--proj-out-std", type=float, default=TrainConfig.proj_out_std)
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (used by the first phases)")
    p.add_argument("--no-bf16", action="store_true", help="fp32 (the default)")
    p.add_argument("--init-from", default="", help="state.pt of an earlier phase to start from")
    p.add_argument("--letter-weight", type=float, default=1.0, help="weight of the option-letter target")
    p.add_argument("--no-knockout", nargs="*", default=[], choices=list(synthetic.TASKS), metavar="TASK",
                   help="tasks whose knockout-mode samples run in mode 'last' instead (no uniform-letter target)")
    p.add_argument("--knockout-from", type=int, default=TrainConfig.knockout_from)
    p.add_argument("--no-echo", action="store_true")
    p.add_argument("--text-batch", type=int, default=TrainConfig.text_batch)
    p.add_argument("--stop-at", type=int, default=0, help="stop after this step (schedule still over --max-steps)")
    p.add_argument("--tasks", nargs="*", default=None, help="train on these tasks only (equal weights)")
    p.add_argument("--task-weights", nargs="*", default=None, metavar="TASK:W", type=_task_weight,
                   help="sampling weight per task (tasks not named keep the default weight)")
    p.add_argument("--aux-until", type=int, default=TrainConfig.aux_until)
    p.add_argument("--p-aux-start", type=float, default=TrainConfig.p_aux_start)
    p.add_argument("--bench", type=int, default=0, help="time N training steps and exit")
    p.add_argument("--recipe", action="store_true", help="run every phase of RECIPE under --out (the bundled model)")
    p.add_argument("--evaluate", type=Path, default=None, help="evaluate a saved checkpoint folder, write --out/eval.json")
    p.add_argument("--n-eval", type=int, default=100)
    return p


def config_from_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of parsed command-line arguments; a bad combination stops with
    ``p.error`` (argparse's exit 2 and message)."""
    cfg = TrainConfig(seed=a.seed, minutes=a.minutes, max_steps=a.max_steps, batch_size=a.batch_size, lr=a.lr,
                      eval_every=a.eval_every, threads=a.threads, p_aux=a.p_aux, mode_probs=tuple(a.mode_probs),
                      proj_out_std=a.proj_out_std, task_start=tuple(a.task_start), inplace_answer=a.inplace_answer, video_targets=a.video_targets, video_targets_layer=a.video_targets_layer, freeze_vision=a.freeze_vision, full_until=a.full_until, vision_pretrain=a.vision_pretrain, align_weight=a.align_weight, align_position=a.align_position, option_flags=a.option_flags, video_norm_max=a.video_norm_max, bf16=a.bf16 and not a.no_bf16,
                      init_from=a.init_from, knockout_from=a.knockout_from, no_knockout=tuple(a.no_knockout), letter_weight=a.letter_weight, echo_option=not a.no_echo, text_batch=a.text_batch, stop_at=a.stop_at, aux_until=a.aux_until, p_aux_start=a.p_aux_start)
    if not 0 <= cfg.video_targets_layer <= cfg.n_layers:
        p.error(f"argument --video-targets-layer: expected a block count in 0..{cfg.n_layers}, "
                f"got {cfg.video_targets_layer}")
    if a.tasks:
        cfg = replace(cfg, task_weights=tuple((t, 1.0) for t in a.tasks))
    if a.task_weights:
        named = dict(a.task_weights)
        outside = sorted(set(named) - {t for t, _ in cfg.task_weights})
        if outside:
            p.error(f"argument --task-weights: {', '.join(outside)} not among --tasks {' '.join(a.tasks)}")
        cfg = replace(cfg, task_weights=tuple((t, named.get(t, w)) for t, w in cfg.task_weights))
    return cfg


def main(argv=None) -> int:
    """Command line: ``python -m videolens.train_tiny --out DIR --seed 0 [--minutes 60] [--max-steps N]``."""
    p = _parser()
    a = p.parse_args(argv)
    if a.recipe:
        run_recipe(a.out, a.threads)
        return 0
    if a.evaluate is not None:
        torch.set_num_threads(a.threads)
        res = evaluate_checkpoint(a.evaluate, a.n_eval)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "eval.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    cfg = config_from_args(p, a)
    if a.bench:
        cfg = replace(cfg, max_steps=a.bench, eval_every=10**9, minutes=1e9, eval_per_task=2)
        t = time.time()
        train(cfg, a.out)
        print(f"{(time.time() - t) / a.bench:.3f} s/step (incl. final eval)")
        return 0
    (a.out).mkdir(parents=True, exist_ok=True)
    (a.out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    train(cfg, a.out, resume=a.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
