"""The synthetic temporal VideoQA generator (issue 4): files, annotations, seeding, shortcuts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import videolens as vl
from videolens import synthetic as S
from videolens.sources.scenes import _render
from videolens.sources.data import load_tvbench


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    paths = S.write_dataset(out, n_per_task=3, seed=1)
    return out, paths


def test_mp4_decodes_through_load_video_to_the_rendered_frames(dataset):
    out, paths = dataset
    for task in S.TASKS:
        for i, sample in enumerate(load_tvbench(paths[task], out / "videos")):
            video = vl.load_video(sample.video, num_frames=S.NUM_STEPS)
            expected = S.make_samples(task, 3, seed=1)[i].frames()
            assert video.frames.shape == (S.NUM_STEPS, S.CANVAS, S.CANVAS, 3)
            np.testing.assert_array_equal(video.frames, expected)


def test_annotation_is_tvbench_format_and_matches_the_generator(dataset):
    out, paths = dataset
    samples = S.load_dataset(out)
    assert sorted({s.task for s in samples}) == sorted(S.TASKS)
    for task, path in paths.items():
        entries = json.loads(path.read_text())
        assert all(set(e) == {"video", "question", "candidates", "answer", "question_id"} for e in entries)
        made = S.make_samples(task, 3, seed=1)
        for e, s in zip(entries, made):
            assert (e["question"], e["candidates"], e["answer"]) == (s.question, s.candidates, s.answer)
            assert (out / "videos" / e["video"]).exists()
            assert len(e["candidates"]) == S.TASKS[task].n_options


def test_in_memory_sample_equals_file_sample(dataset):
    out, paths = dataset
    file_sample = load_tvbench(paths["moving_direction"], out / "videos")[0]
    mem = S.make_samples("moving_direction", 3, seed=1)[0].to_videoqa()
    np.testing.assert_array_equal(file_sample.load(8).frames, mem.load(8).frames)
    assert mem.answer_letter == file_sample.answer_letter


@pytest.mark.parametrize("task", list(S.TASKS))
def test_seeding_is_reproducible_and_seeds_differ(task):
    a, b, c = S.make_sample(task, 11), S.make_sample(task, 11), S.make_sample(task, 12)
    np.testing.assert_array_equal(a.frames(), b.frames())
    assert (a.question, a.candidates, a.answer) == (b.question, b.candidates, b.answer)
    assert not (np.array_equal(a.frames(), c.frames()) and a.candidates == c.candidates)


@pytest.mark.parametrize("task", list(S.TASKS))
def test_options_are_shuffled_per_sample(task):
    samples = S.make_samples(task, 200, seed=3)
    n = S.TASKS[task].n_options
    where = Counter(s.candidates.index(s.answer) for s in samples)
    assert set(where) == set(range(n))
    for k in range(n):  # each slot holds the answer about 1/n of the time
        assert abs(where[k] / 200 - 1 / n) < 0.12, where
    assert len({tuple(s.candidates) for s in samples}) > 1


def test_every_task_has_distinct_frames_and_the_static_task_does_not():
    for task in S.TASKS:
        f = S.make_sample(task, 0).frames()
        moving = any(not np.array_equal(f[0], f[t]) for t in range(1, len(f)))
        assert moving == S.TASKS[task].temporal, task


# ---- shortcut checks: the first and the last frame say nothing about a temporal answer --------
def _pixels_of(frame, rgb):
    return bool((frame.reshape(-1, 3) == np.array(rgb, np.uint8)).all(-1).any())


@pytest.mark.parametrize("task,palette", [("scene_transition", S.BACKGROUNDS), ("color_change", S.COLORS)])
def test_order_tasks_hide_both_answer_colours_in_first_and_last_frame(task, palette):
    for s in S.make_samples(task, 60, seed=5):
        f = s.frames()
        words = s.answer.rstrip(".").split()
        x, y = words[1], words[3]
        for k in (0, len(f) - 1):
            assert not _pixels_of(f[k], palette[x]) and not _pixels_of(f[k], palette[y]), (s.question_id, k)
        assert any(_pixels_of(f[k], palette[x]) for k in range(len(f)))
        assert any(_pixels_of(f[k], palette[y]) for k in range(len(f)))


def test_appearance_order_first_and_last_frames_are_empty():
    for s in S.make_samples("appearance_order", 60, seed=5):
        f = s.frames()
        for k in (0, len(f) - 1):
            assert (f[k] == 0).all(), (s.question_id, k)
        assert any(f[k].any() for k in range(len(f)))


@pytest.mark.parametrize("k", [0, S.NUM_STEPS - 1])
def test_moving_direction_single_frame_has_the_same_distribution_for_every_direction(k):
    """Starts are uniform on the sprite grid of the torus and motion wraps, so the set of possible
    frames at step k is the same for every direction: a single frame cannot tell the direction."""
    sets = []
    grid = range(0, S.CANVAS, S.SPRITE)
    for (dy, dx) in S.DIRECTIONS:
        frames = set()
        for y in grid:
            for x in grid:
                sp = S.Sprite("circle", ("red",) * S.NUM_STEPS, y, x, S.SPEED * dy, S.SPEED * dx, wrap=True)
                frames.add(_render(S.Scene((S.BLACK,) * S.NUM_STEPS, (sp,)), float(k)).tobytes())
        sets.append(frames)
    assert len(sets[0]) == len(grid) ** 2
    assert all(s == sets[0] for s in sets)
    # and the sampler uses the whole grid
    starts = {tuple(s.scene.sprites[0].__dict__[a] for a in ("y", "x")) for s in S.make_samples("moving_direction", 400, seed=2)}
    assert starts == {(float(y), float(x)) for y in grid for x in grid}


def test_moving_direction_fills_one_token_region_per_frame():
    """Each frame shows the object inside one 8 x 8 region (one pooled video token of the bundled
    model), and consecutive frames hold neighbouring regions along the answer's direction."""
    inv = {v: k for k, v in S.DIRECTIONS.items()}
    for s in S.make_samples("moving_direction", 20, seed=4):
        f = s.frames().any(-1)
        n = S.CANVAS // S.SPRITE
        occ = f.reshape(len(f), n, S.SPRITE, n, S.SPRITE).any((2, 4))  # [T, rows, cols]
        assert (occ.sum((1, 2)) == 1).all(), s.question_id
        cells = [np.argwhere(o)[0] for o in occ]
        dy, dx = inv[s.answer]
        for a, b in zip(cells, cells[1:]):
            assert tuple((b - a) % n) == (dy % n, dx % n)


def _first_step(frames, rgb):
    return next(k for k in range(len(frames)) if _pixels_of(frames[k], rgb))


def test_answers_agree_with_the_pixels():
    """Read each temporal answer back from the rendered frames."""
    for task, palette in (("scene_transition", S.BACKGROUNDS), ("color_change", S.COLORS)):
        for s in S.make_samples(task, 20, seed=8):
            f = s.frames()
            x, y = s.answer.rstrip(".").split()[1::2]
            assert _first_step(f, palette[x]) < _first_step(f, palette[y])
    for s in S.make_samples("appearance_order", 20, seed=8):
        f = s.frames()
        first, second = [c.rstrip(".").split()[1] for c in (s.answer, next(c for c in s.candidates if c != s.answer))]
        assert _first_step(f, S.COLORS[first]) < _first_step(f, S.COLORS[second])
    for s in S.make_samples("moving_direction", 20, seed=8):
        f = s.frames().any(-1)  # object pixels (black background)
        shift = []
        for axis in (0, 1):  # circular cross-correlation of the occupancy profile, frame 0 -> 1
            a, b = f[0].sum(1 - axis).astype(float), f[1].sum(1 - axis).astype(float)
            corr = [np.dot(np.roll(a, d), b) for d in range(S.CANVAS)]
            d = int(np.argmax(corr))
            shift.append(d if d < S.CANVAS // 2 else d - S.CANVAS)
        assert S.DIRECTIONS[(int(np.sign(shift[0])), int(np.sign(shift[1])))] == s.answer
    for s in S.make_samples("object_color", 20, seed=8):
        assert _pixels_of(s.frames()[0], S.COLORS[s.answer.rstrip(".").lower()])


def test_unknown_task_and_bad_frames_per_step_raise():
    with pytest.raises(KeyError, match="known"):
        S.make_sample("object_count", 0)
    with pytest.raises(ValueError, match="frames_per_step"):
        S.render_clip(S.make_sample("object_color", 0).scene, frames_per_step=3)


def test_vocabulary_covers_every_generated_text():
    from videolens.prompting.tokenizers import build_word_level_tokenizer

    tok = build_word_level_tokenizer(S.vocabulary_texts())
    for task in S.TASKS:
        for s in S.make_samples(task, 30, seed=4):
            for text in [s.question, *s.candidates]:
                assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"], text
