"""Synthetic temporal VideoQA: seeded clips of coloured shapes, in TVBench's format.

The clips train and test the bundled tiny VideoLLM (``videolens/assets/tiny-videollm``; docs/tiny_model.md).
Every clip is a ``Scene``: a background colour per step and sprites (a shape, a colour per step,
a position that may move and wrap around the canvas). A scene is rendered at continuous time
``u``; the ``num_steps`` frames the model sees sit at ``u = 0, 1, ..., num_steps - 1``. A clip file
has ``num_steps * m + 1`` frames (``m = frames_per_step``) so that the TVBench sampling rule
(``videolens.sources.video.sample_frame_indices``, middle frame of each of ``num_steps`` segments) picks
exactly the frames at ``u = 0 .. num_steps - 1``; ``render_frames`` renders those frames in memory
and equals what ``load_video`` decodes from the written file (lossless ``libx264rgb -crf 0``).

Tasks (a registry, ``TASKS``; TVBench's wording where the task exists there):

=====================  ========  =====================================================================
task                   options   what decides the answer
=====================  ========  =====================================================================
moving_direction       4         the direction an object moves, one sprite width per step from a start
                                 on the sprite grid (it wraps around the canvas, so its position in
                                 any single frame is uniform over the grid and says nothing)
scene_transition       2         the order of two background colours (first and last frames show two
                                 other colours)
appearance_order       2         which of two objects is shown first (action-sequence analogue; both
                                 are absent in the first and last frames)
color_change           2         the order of two colours of one object (first and last frames show
                                 it in two other colours)
object_color           4         static control: the colour of the only object, the same in every frame
=====================  ========  =====================================================================

In every temporal task the first and the last frame are independent of the answer, so replacing
all frames by either of them leaves the task at chance (docs/tiny_model.md, "Shortcuts").

Example::

    from videolens import synthetic
    sample = synthetic.make_sample("moving_direction", seed=3)      # in memory, Video.from_frames
    paths = synthetic.write_dataset("out/", n_per_task=4, seed=0)    # mp4 files + TVBench json files
    samples = synthetic.load_dataset("out/")                         # list[VideoQA] via load_tvbench
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from jaxtyping import UInt8

from .data import VideoQA, load_tvbench
from ..registry import Registry
from .scenes import (
    BACKGROUNDS,
    BLACK,
    CANVAS,
    COLORS,
    NUM_STEPS,
    SHAPES,
    SPRITE,
    Scene,
    Sprite,
    render_clip,
    render_frames,
    write_clip,
)
from .video import Video

__all__ = [
    "COLORS",
    "BACKGROUNDS",
    "SHAPES",
    "Sprite",
    "Scene",
    "SyntheticSample",
    "TaskSpec",
    "TASKS",
    "TEMPORAL_TASKS",
    "STATIC_TASKS",
    "render_frames",
    "render_clip",
    "write_clip",
    "sample_task",
    "make_sample",
    "make_samples",
    "interleaved_samples",
    "write_dataset",
    "load_dataset",
    "vocabulary_texts",
    "main",
]


# ---- tasks ------------------------------------------------------------------------------------
@dataclass
class SyntheticSample:
    """A generated sample: the scene, the question, shuffled candidates and the answer."""

    task: str
    scene: Scene
    question: str
    candidates: List[str]
    answer: str
    seed: int
    meta: Dict = field(default_factory=dict)

    @property
    def question_id(self) -> str:
        return f"{self.task}_{self.seed}"

    def frames(self) -> UInt8[np.ndarray, "T H W 3"]:
        return render_frames(self.scene)

    def to_videoqa(self, video=None) -> VideoQA:
        """A ``VideoQA`` holding the rendered frames in memory (``Video.from_frames``), or ``video``
        (a path) when given."""
        v = Video.from_frames(self.frames()) if video is None else video
        return VideoQA(video=v, question=self.question, candidates=list(self.candidates), answer=self.answer,
                       task=self.task, question_id=self.question_id, extra={"meta": self.meta})


@dataclass(frozen=True)
class TaskSpec:
    """A task: its name, whether it is temporal, its option texts and a sampler.

    ``sample(rng)`` returns ``(scene, question, candidates_in_canonical_order, answer, meta)``;
    ``make_sample`` shuffles the candidates.
    """

    name: str
    temporal: bool
    n_options: int
    sample: Callable[[np.random.Generator], tuple]
    questions: Tuple[str, ...]
    options: Tuple[str, ...]


def _pick(rng, seq, k):
    idx = rng.choice(len(seq), size=k, replace=False)
    return [seq[i] for i in idx]


DIRECTIONS = {  # (dy, dx) per step -> TVBench wording
    (-1, 1): "Up and to the right.",
    (-1, -1): "Up and to the left.",
    (1, 1): "Down and to the right.",
    (1, -1): "Down and to the left.",
}
# one sprite (= one video-token region of the bundled model: 32 px over a 4 x 4 pooled grid) per
# step along each axis, from a start on the sprite grid: every frame shows the object in exactly
# one region, and the direction is the offset between the regions it holds in consecutive frames
SPEED = float(SPRITE)  # pixels per step along each axis


def _moving_direction(rng):
    color = _pick(rng, list(COLORS), 1)[0]
    shape = _pick(rng, list(SHAPES), 1)[0]
    dirs = list(DIRECTIONS)
    dy, dx = dirs[rng.integers(len(dirs))]
    y, x = rng.integers(0, CANVAS // SPRITE, 2) * SPRITE
    sprite = Sprite(shape, (color,) * NUM_STEPS, float(y), float(x), SPEED * dy, SPEED * dx, wrap=True)
    scene = Scene((BLACK,) * NUM_STEPS, (sprite,))
    q = f"Which direction does the {color} {shape} move in the video?"
    return scene, q, list(DIRECTIONS.values()), DIRECTIONS[(dy, dx)], {"direction": [dy, dx]}


def _segments(rng):
    """Step boundaries (a, b, c): D1 on [0, a), X on [a, b), Y on [b, c), D2 on [c, NUM_STEPS)."""
    a = int(rng.integers(1, 3))
    c = int(rng.integers(NUM_STEPS - 2, NUM_STEPS))
    b = int(rng.integers(a + 2, c - 1))
    return a, b, c


def _colour_runs(a, b, c, d1, x, y, d2):
    return tuple(d1 if s < a else x if s < b else y if s < c else d2 for s in range(NUM_STEPS))


def _scene_transition(rng):
    d1, x, y, d2 = _pick(rng, list(BACKGROUNDS), 4)
    a, b, c = _segments(rng)
    bgs = tuple(BACKGROUNDS[n] for n in _colour_runs(a, b, c, d1, x, y, d2))
    q = "How does the scene change in the video?"
    right, wrong = f"From {x} to {y}.", f"From {y} to {x}."
    return Scene(bgs), q, [right, wrong], right, {"segments": [a, b, c], "colors": [d1, x, y, d2]}


def _color_change(rng):
    d1, x, y, d2 = _pick(rng, list(COLORS), 4)
    shape = _pick(rng, list(SHAPES), 1)[0]
    a, b, c = _segments(rng)
    py, px = rng.integers(0, CANVAS - SPRITE + 1, 2)
    sprite = Sprite(shape, _colour_runs(a, b, c, d1, x, y, d2), float(py), float(px))
    q = f"How does the color of the {shape} change in the video?"
    right, wrong = f"From {x} to {y}.", f"From {y} to {x}."
    return Scene((BLACK,) * NUM_STEPS, (sprite,)), q, [right, wrong], right, {"segments": [a, b, c], "colors": [d1, x, y, d2]}


def _two_positions(rng):
    while True:
        p = rng.integers(0, CANVAS - SPRITE + 1, (2, 2))
        if np.abs(p[0] - p[1]).max() >= SPRITE:
            return p


def _appearance_order(rng):
    c1, c2 = _pick(rng, list(COLORS), 2)
    s1, s2 = _pick(rng, list(SHAPES), 2)
    # first object shown on [a1, a2), second on [b1, b2); nothing in the first and last step
    a1 = int(rng.integers(1, 3))
    a2 = a1 + int(rng.integers(1, 3))
    b1 = a2 + int(rng.integers(0, 2))
    b2 = min(b1 + int(rng.integers(1, 3)), NUM_STEPS - 1)
    if b2 <= b1:
        b1, b2 = NUM_STEPS - 2, NUM_STEPS - 1
    pos = _two_positions(rng)
    first = Sprite(s1, tuple(c1 if a1 <= s < a2 else None for s in range(NUM_STEPS)), float(pos[0, 0]), float(pos[0, 1]))
    second = Sprite(s2, tuple(c2 if b1 <= s < b2 else None for s in range(NUM_STEPS)), float(pos[1, 0]), float(pos[1, 1]))
    q = "Which object appears first in the video?"
    right, wrong = f"The {c1} {s1}.", f"The {c2} {s2}."
    return Scene((BLACK,) * NUM_STEPS, (first, second)), q, [right, wrong], right, {"steps": [a1, a2, b1, b2]}


def _object_color(rng):
    names = _pick(rng, list(COLORS), 4)
    shape = _pick(rng, list(SHAPES), 1)[0]
    py, px = rng.integers(0, CANVAS - SPRITE + 1, 2)
    sprite = Sprite(shape, (names[0],) * NUM_STEPS, float(py), float(px))
    q = f"What color is the {shape} in the video?"
    cands = [n.capitalize() + "." for n in names]
    return Scene((BLACK,) * NUM_STEPS, (sprite,)), q, cands, cands[0], {}


def _all(fmt_list):
    return tuple(fmt_list)


_cs = [(c, s) for c in COLORS for s in SHAPES]
TASKS: Registry[TaskSpec] = Registry("synthetic task", {
    t.name: t
    for t in [
        TaskSpec("moving_direction", True, 4, _moving_direction,
                 _all(f"Which direction does the {c} {s} move in the video?" for c, s in _cs),
                 tuple(DIRECTIONS.values())),
        TaskSpec("scene_transition", True, 2, _scene_transition, ("How does the scene change in the video?",),
                 _all(f"From {x} to {y}." for x in BACKGROUNDS for y in BACKGROUNDS if x != y)),
        TaskSpec("appearance_order", True, 2, _appearance_order, ("Which object appears first in the video?",),
                 _all(f"The {c} {s}." for c, s in _cs)),
        TaskSpec("color_change", True, 2, _color_change,
                 _all(f"How does the color of the {s} change in the video?" for s in SHAPES),
                 _all(f"From {x} to {y}." for x in COLORS for y in COLORS if x != y)),
        TaskSpec("object_color", False, 4, _object_color,
                 _all(f"What color is the {s} in the video?" for s in SHAPES),
                 _all(c.capitalize() + "." for c in COLORS)),
    ]
})
TEMPORAL_TASKS: Tuple[str, ...] = tuple(n for n, t in TASKS.items() if t.temporal)
STATIC_TASKS: Tuple[str, ...] = tuple(n for n, t in TASKS.items() if not t.temporal)


def _task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown synthetic task {name!r}; known: {sorted(TASKS)}") from None


def sample_task(task: str, rng: np.random.Generator, seed: int = -1) -> SyntheticSample:
    """Draw one sample of ``task`` from ``rng``; the candidates are shuffled with ``rng``.

    Raises:
        KeyError: unknown task (the message lists the known ones).
    """
    spec = _task(task)
    scene, q, cands, answer, meta = spec.sample(rng)
    order = rng.permutation(len(cands))
    cands = [cands[i] for i in order]
    return SyntheticSample(task, scene, q, cands, answer, seed, meta)


def _seed_for(task: str, seed: int) -> List[int]:
    return [int(seed), list(TASKS).index(task) if task in TASKS else 0, 20260421]


def make_sample(task: str, seed: int) -> SyntheticSample:
    """One sample of ``task``, a pure function of ``(task, seed)``."""
    _task(task)
    return sample_task(task, np.random.default_rng(_seed_for(task, seed)), seed)


def make_samples(task: str, n: int, seed: int = 0) -> List[SyntheticSample]:
    """``n`` samples of ``task`` with seeds ``seed*100000 + i`` (distinct per ``seed``)."""
    return [make_sample(task, seed * 100000 + i) for i in range(n)]


def interleaved_samples(tasks: Sequence[str], n: int, seed: int = 0) -> List[SyntheticSample]:
    """``make_samples(task, n, seed)`` of each task, interleaved (one of each task, then the next), so
    any tail of the list holds every task (held-out clips of ``videolens sae train --synthetic``).

    Raises:
        KeyError: an unknown task (the known ones listed).
    """
    per_task = [make_samples(t, n, seed) for t in tasks]
    return [clips[i] for i in range(n) for clips in per_task]


def write_dataset(
    out_dir,
    n_per_task: int = 10,
    seed: int = 0,
    tasks: Sequence[str] = tuple(TASKS),
    fps: int = 8,
    frames_per_step: int = 2,
) -> Dict[str, Path]:
    """Write a TVBench-format dataset: ``out_dir/videos/<task>_<i>.mp4`` and ``out_dir/<task>.json``.

    Each json is a list of ``{video, question, candidates, answer, question_id}`` with ``video``
    relative to ``out_dir/videos``, readable with ``videolens.sources.data.load_tvbench(json, out_dir/"videos")``.

    Returns:
        ``{task: json path}``.
    """
    out_dir = Path(out_dir)
    vids = out_dir / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task in tasks:
        entries = []
        for s in make_samples(task, n_per_task, seed):
            name = f"{s.question_id}.mp4"
            write_clip(vids / name, s.scene, fps=fps, frames_per_step=frames_per_step)
            entries.append({"video": name, "question": s.question, "candidates": s.candidates,
                            "answer": s.answer, "question_id": s.question_id})
        p = out_dir / f"{task}.json"
        p.write_text(json.dumps(entries, indent=1))
        paths[task] = p
    return paths


def load_dataset(out_dir, tasks: Optional[Sequence[str]] = None) -> List[VideoQA]:
    """Read back a folder written by ``write_dataset`` (every ``<task>.json`` there, or ``tasks``)."""
    out_dir = Path(out_dir)
    names = list(tasks) if tasks is not None else [p.stem for p in sorted(out_dir.glob("*.json"))]
    out: List[VideoQA] = []
    for n in names:
        out += load_tvbench(out_dir / f"{n}.json", out_dir / "videos", task=n)
    return out


def vocabulary_texts() -> List[str]:
    """Every question and option text the tasks can produce (for a word-level tokenizer)."""
    texts: List[str] = []
    for t in TASKS.values():
        texts += list(t.questions) + list(t.options)
    return texts


def main(argv=None) -> int:
    """``python -m videolens.sources.synthetic OUT --n 10 --seed 0``: write a dataset folder."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("out")
    p.add_argument("--n", type=int, default=10, help="clips per task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="*", default=list(TASKS))
    a = p.parse_args(argv)
    paths = write_dataset(a.out, a.n, a.seed, a.tasks)
    for t, path in paths.items():
        print(f"{t}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
