"""The training configuration and its command line: ``TrainConfig`` (one per phase) and the lab's own
options, parsed by transformers' ``HfArgumentParser`` from the dataclasses themselves."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from transformers import HfArgumentParser

from videolens import synthetic
from videolens.hooked.edges import parse_pair

MODES = ("last", "full", "knockout")
RECIPE_FILE = Path(__file__).resolve().parent / "recipes" / "tiny-videollm.json"
"""The bundled checkpoint's recipe (``tiny_lab.recipe``)."""
CROSS_FRAME = parse_pair("video->video[cross_frame]")


def _help(default, text: str):
    if isinstance(default, tuple):  # HfArgumentParser reads a sequence's default from its factory
        return field(default_factory=lambda: default, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    """Every knob of a run (saved with checkpoints and in the model card).

    Sequence fields are tuples after construction; ``task_start`` / ``task_weights`` take
    ``"TASK:N"`` strings (the command line's spelling) or ``(task, n)`` pairs and hold pairs.
    """

    seed: int = 0
    batch_size: int = 16
    lr: float = _help(1.5e-3, "peak learning rate (transformers' cosine schedule with warmup, floor 0.1 x lr)")
    weight_decay: float = 0.01
    warmup: int = 100
    max_steps: int = 2000
    minutes: float = _help(70.0, "wall-clock budget; the cosine schedule runs over max_steps")
    clip_grad: float = 1.0
    p_aux: float = _help(0.3, "final share of open-ended (aux) samples")
    p_aux_start: float = _help(0.9, "share of aux samples before aux_until; falls linearly to p_aux over the next "
                                    "aux_until steps")
    aux_until: int = 500
    mode_probs: List[float] = _help((0.5, 0.3, 0.2), "LAST FULL KNOCKOUT: attention-mode probabilities of mc samples")
    letter_weight: float = _help(1.0, "weight of the option-letter target against each intermediate target")
    no_knockout: List[str] = _help((), "tasks never trained under mode 'knockout' (those samples run in 'last')")
    knockout_from: int = _help(700, "knockout samples ramp in linearly over [knockout_from, 2 * knockout_from]")
    stop_at: int = _help(0, ">0: stop after this step (the schedule still spans max_steps)")
    text_batch: int = _help(0, "extra text-only letter-matching sequences per step (no video, no system prompt)")
    echo_option: bool = _help(True, "after the letter, also predict ') <answer text>' (binds letters to option lines)")
    init_from: str = _help("", "start from the weights of a state.pt (a curriculum phase)")
    option_flags: bool = _help(False, "mc samples: the last token of every option line predicts Yes (right) / No")
    video_norm_max: float = _help(0.0, ">0: penalise video-token norms above this (squared excess, weight "
                                       "video_norm_weight)")
    video_norm_weight: float = 1e-3
    align_weight: float = _help(0.0, ">0: video tokens regress to the word embedding of the colour they show "
                                     "(LLaVA-style alignment)")
    align_position: float = _help(0.0, ">0: the alignment target of a coloured region also holds a cyclic code of "
                                       "its row and column (norm: this share of the colour embeddings' RMS norm); "
                                       "without it the tokens carry no position")
    freeze_vision: bool = _help(False, "after the alignment stage, keep the tower and projector fixed")
    full_until: int = _help(0, "before this step every mc sample uses plain causal attention (mode 'full')")
    task_start: List[str] = _help((), "TASK:STEP: curriculum, a task is sampled from STEP on (others from step 0)")
    vision_pretrain: int = _help(0, "steps of alignment-only training of tower + projector before the main loop")
    inplace_answer: bool = _help(False, "mc samples also predict the answer words at the prompt positions just "
                                        "before '('")
    video_targets: bool = _help(False, "moving_direction: the object's video token in frames >= 1 predicts the "
                                       "direction words (a two-word soft target), training the cross-frame step at "
                                       "the video tokens")
    video_targets_layer: int = _help(0, ">0: read those targets through the logit lens at the residual stream "
                                        "after this many blocks, early enough for text positions to read them")
    proj_out_std: float = _help(0.0, ">0: init projector.linear_2 weight ~ N(0, std), bias 0 (video tokens at "
                                     "text-embedding scale)")
    bf16: bool = _help(False, "autocast matmuls to bfloat16 (faster, but measured: it kept the option-matching "
                              "circuit from forming -- letters at chance after 25k text samples -- while fp32 "
                              "learned it in 500 steps)")
    task_weights: List[str] = _help(
        (("moving_direction", 1.5), ("scene_transition", 1.0), ("appearance_order", 1.5),
         ("color_change", 1.0), ("object_color", 0.8)),
        "TASK:W sampling weights (every task of the run, in order)")
    eval_every: int = 200
    eval_per_task: int = 32
    threads: int = _help(1, "torch threads (with other jobs on the 2 cores, 1 thread ran 4x faster than 2)")
    # architecture
    image_size: int = 32
    patch_size: int = 4
    vision_width: int = 64
    vision_layers: int = 3
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    d_mlp: int = 256
    pooling_shape: List[int] = _help((8, 4, 4), "FRAMES ROWS COLS of the 3-D pooling")
    num_frames: int = 8

    def __post_init__(self) -> None:
        self.mode_probs = tuple(float(x) for x in self.mode_probs)
        self.no_knockout = tuple(self.no_knockout)
        self.pooling_shape = tuple(int(x) for x in self.pooling_shape)
        self.task_start = tuple(_pair(x, _task_step) for x in self.task_start)
        self.task_weights = tuple(_pair(x, _task_weight) for x in self.task_weights)
        if len(self.mode_probs) != 3:
            raise ValueError(f"mode_probs: expected three probabilities LAST FULL KNOCKOUT, got {list(self.mode_probs)}")
        unknown = sorted(set(self.no_knockout) - set(synthetic.TASKS))
        if unknown:
            raise ValueError(f"no_knockout: unknown task(s) {', '.join(unknown)} (known: {', '.join(synthetic.TASKS)})")
        if not 0 <= self.video_targets_layer <= self.n_layers:
            raise ValueError(f"argument --video-targets-layer: expected a block count in 0..{self.n_layers}, "
                             f"got {self.video_targets_layer}")


@dataclass
class LabOptions:
    """What a lab run does besides training one phase (the command line's other options)."""

    out: Path = field(metadata={"help": "the run's folder"})
    resume: bool = _help(False, "continue the run in --out from its last state")
    tasks: Optional[List[str]] = _help(None, "train on these tasks only (equal weights; --task-weights may then "
                                             "re-weight them)")
    bench: int = _help(0, "time N training steps and exit")
    recipe: bool = _help(False, "run every phase of --recipe-file under --out (the bundled model)")
    recipe_file: Path = _help(RECIPE_FILE, "the phases, as data (default: the bundled checkpoint's)")
    evaluate: Optional[Path] = _help(None, "evaluate a saved checkpoint folder, write --out/eval.json")
    n_eval: int = 100


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


def _pair(value, parse) -> Tuple[str, object]:
    """A ``"TASK:N"`` string (parsed; ValueError when bad) or a ``(task, n)`` pair."""
    if isinstance(value, str):
        try:
            return parse(value)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
    task, n = value
    return str(task), n


def _parser() -> HfArgumentParser:
    """The lab's command line: every ``TrainConfig`` and ``LabOptions`` field as ``--name`` (dashes
    or underscores); ``TASK:N`` values and task names are checked by argparse (exit 2, one line)."""
    p = HfArgumentParser((TrainConfig, LabOptions), description="Train the bundled tiny VideoLLM (CPU).")
    for action in p._actions:  # HfArgumentParser types list items by annotation; these need their own check
        if action.dest == "task_start":
            action.type = _task_step
        elif action.dest == "task_weights":
            action.type = _task_weight
        elif action.dest in ("no_knockout", "tasks"):
            action.choices = list(synthetic.TASKS)
    return p


def parse(argv: Optional[Sequence[str]] = None) -> Tuple[TrainConfig, LabOptions]:
    """Command-line arguments -> ``(TrainConfig, LabOptions)``; a bad value or combination stops with
    argparse's exit 2 and a one-line message."""
    p = _parser()
    try:
        cfg, opts = p.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    except ValueError as exc:
        p.error(str(exc))
    return config_from_options(p, cfg, opts), opts


def config_from_options(p: argparse.ArgumentParser, cfg: TrainConfig, opts: LabOptions) -> TrainConfig:
    """``cfg`` with the command line's task choice: ``--tasks`` keeps those tasks at weight 1, and
    ``--task-weights TASK:W ...`` re-weights the tasks it names (the others keep theirs); a weight
    for a task the run leaves out stops with ``p.error``."""
    default = TrainConfig().task_weights
    base = tuple((t, 1.0) for t in opts.tasks) if opts.tasks else default
    given = dict(cfg.task_weights) if cfg.task_weights != default else {}
    outside = sorted(set(given) - {t for t, _ in base})
    if outside:
        p.error(f"argument --task-weights: {', '.join(outside)} not among --tasks {' '.join(opts.tasks or [])}")
    return replace(cfg, task_weights=tuple((t, given.get(t, w)) for t, w in base))


def phase_config(phase: dict, prev: str = "") -> TrainConfig:
    """A recipe phase (``{"name", "config": {field: value}}``) as its ``TrainConfig``; ``{prev}`` in
    ``init_from`` becomes ``prev``.

    Raises:
        ValueError: an unknown field or a bad value (named).
    """
    values = dict(phase.get("config", {}))
    if "init_from" in values:
        values["init_from"] = values["init_from"].replace("{prev}", prev)
    (cfg,) = HfArgumentParser(TrainConfig).parse_dict(values)
    return cfg
