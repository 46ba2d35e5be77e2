from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SAMPLE = dict(question="What did the person do first?", candidates=["Put down the blanket.", "Took the towel."],
              answer="Took the towel.")
"""The two-option question most tests ask of a clip (``from conftest import SAMPLE``)."""


def pytest_configure(config):
    """Weight digests are cached in a folder of the test run's own, never the user's ~/.cache."""
    import tempfile

    os.environ.setdefault("VIDEOLENS_CACHE", tempfile.mkdtemp(prefix="videolens-cache-"))


def pytest_sessionstart(session):
    """One torch thread per pytest-xdist worker (two workers on two cores; more threads oversubscribe).
    Nothing heavy is imported at module level: under xdist the controlling process only schedules,
    and importing torch/TransformerLens there (~10 s) would delay the workers' start."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(session.config.option, "numprocesses", None):
        import torch

        torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cockatoo(shared_data) -> Path:
    p = shared_data / "videos" / "cockatoo.mp4"
    if not p.exists():
        pytest.skip("cockatoo.mp4 is absent")
    return p


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory) -> Path:
    from videolens.testing import write_clip

    return write_clip(tmp_path_factory.mktemp("clips") / "moving_square.mp4")


@pytest.fixture(scope="session")
def tiny_pllava_dir(tmp_path_factory) -> Path:
    from videolens.testing import make_tiny_pllava

    return make_tiny_pllava(tmp_path_factory.mktemp("ckpt") / "pllava")


@pytest.fixture(scope="session")
def tiny_lnv_dir(tmp_path_factory) -> Path:
    from videolens.testing import make_tiny_llava_next_video

    return make_tiny_llava_next_video(tmp_path_factory.mktemp("ckpt") / "lnv")


@pytest.fixture(scope="session")
def tiny_pllava(tiny_pllava_dir):
    import videolens as vl

    return vl.HookedVideoLLM.from_pretrained(tiny_pllava_dir, device="cpu")


DIRECTION_QUESTION = "Which direction does the purple sphere move in the video?"
DIRECTION_CANDIDATES = ["Up and to the right.", "Up and to the left.", "Down and to the left."]


@pytest.fixture(scope="session")
def direction_inputs(tiny_pllava, clip_path):
    """A prepared 3-option input (true option B) for the tiny model on the generated clip."""
    import videolens as vl

    sample = vl.VideoQA(video=str(clip_path), question=DIRECTION_QUESTION, candidates=DIRECTION_CANDIDATES,
                        answer=DIRECTION_CANDIDATES[1])
    return tiny_pllava.prepare(sample, num_frames=8)


@pytest.fixture(scope="module")
def inputs(tiny_pllava, clip_path):
    """``SAMPLE`` on the moving-square clip, prepared by the tiny PLLaVA model (a test module may
    define its own ``inputs``)."""
    import videolens as vl

    return tiny_pllava.prepare(vl.VideoQA(video=str(clip_path), **SAMPLE))


def assert_answers_through_the_cli(ckpt, video, num_frames: int = 4) -> dict:
    """``videolens answer --json`` on ``ckpt`` and ``video`` exits 0 with one probability per option and
    the most probable letter as the answer; returns the parsed output."""
    import json

    from test_bad_inputs import run_cli

    rc, out, err = run_cli(["answer", "--model", str(ckpt), "--video", str(video), "--question", "What moves?",
                            "--candidates", "left", "right", "--num-frames", str(num_frames), "--json"])
    assert rc == 0, err
    got = json.loads(out)
    assert set(got["probs"]) == {"A", "B"} and got["answer"] == max(got["probs"], key=got["probs"].get)
    assert got["answer_text"] == {"A": "left", "B": "right"}[got["answer"]]
    assert 0 < sum(got["probs"].values()) <= 1  # the letters' share of the full-vocabulary softmax
    return got
