"""The training configuration and its command-line parser (one TrainConfig per phase)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Tuple


from videolens import synthetic
from videolens.edges import parse_pair

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


