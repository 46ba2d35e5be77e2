"""Video decoding and TVBench/MVBench frame sampling."""

from __future__ import annotations

import numpy as np
import pytest

import videolens as vl
from videolens.sources.video import ShortClipWarning, VideoDecodeError, sample_frame_indices


def reference_indices(n_frames, fps, num_segments, bound=None):
    """The MVBench/TVBench rule written out from its definition (REFERENCE section 4)."""
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(0, round(start * fps))
    end_idx = min(round(end * fps), n_frames - 1)
    seg = float(end_idx - start_idx) / num_segments
    return [int(start_idx + seg / 2 + np.round(seg * i)) for i in range(num_segments)]


@pytest.mark.parametrize("n,fps,k,bound", [(280, 20.0, 8, None), (24, 24.0, 8, None), (280, 20.0, 8, (3.2, 9.7)),
                                           (100, 30.0, 16, (0.5, 2.0)), (7, 7.0, 3, None)])
def test_sampling_rule(n, fps, k, bound):
    got = sample_frame_indices(n, fps, k, *(bound or (None, None)))
    assert got.tolist() == reference_indices(n, fps, k, bound)
    assert np.all(np.diff(got) >= 0) and got.min() >= 0 and got.max() <= n - 1


def test_load_generated_clip(clip_path):
    v = vl.load_video(clip_path, num_frames=8)
    assert v.frames.shape == (8, 48, 64, 3) and v.frames.dtype == np.uint8
    assert v.indices.tolist() == reference_indices(16, 8.0, 8)
    np.testing.assert_allclose(v.timestamps, v.indices / 8.0, atol=1e-6)
    # the white square moves right: its column centre grows with the frame index
    cols = [np.nonzero(f.min(-1).max(0) > 250)[0].mean() for f in v.frames]
    assert all(b > a for a, b in zip(cols, cols[1:]))


def test_load_real_videos(shared_data):
    v = vl.load_video(shared_data / "videos" / "cockatoo.mp4", num_frames=8)
    assert v.frames.shape == (8, 720, 1280, 3)
    assert v.indices.tolist() == reference_indices(280, 20.0, 8)
    w = vl.load_video(shared_data / "videos" / "cockatoo.mp4", num_frames=8, start=2.0, end=6.0)
    assert w.timestamps.min() >= 2.0 - 0.05 and w.timestamps.max() <= 6.0
    b = vl.load_video(shared_data / "videos" / "big_buck_bunny_1s.webm", num_frames=4)
    assert b.frames.shape == (4, 720, 1280, 3)


def test_short_clip_repeats_frames(tmp_path):
    from videolens.testing import write_clip

    path = write_clip(tmp_path / "short.mp4", n_frames=4)
    with pytest.warns(ShortClipWarning):
        v = vl.load_video(path, num_frames=8)
    assert v.frames.shape[0] == 8
    assert v.indices.tolist() == reference_indices(4, 8.0, 8)
    assert len(set(v.indices.tolist())) < 8
    for i in range(7):
        if v.indices[i] == v.indices[i + 1]:
            np.testing.assert_array_equal(v.frames[i], v.frames[i + 1])


def test_errors(tmp_path, clip_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        vl.load_video(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        vl.load_video(bad)
    with pytest.raises(ValueError, match="num_frames"):
        vl.load_video(clip_path, num_frames=0)
    with pytest.raises(ValueError, match="before end"):
        vl.load_video(clip_path, start=1.0, end=0.5)
    with pytest.raises(ValueError, match="negative"):
        vl.load_video(clip_path, start=-1.0)
    with pytest.raises(ValueError, match="past the end"):
        vl.load_video(clip_path, end=30.0)
    with pytest.raises(ValueError, match="past the end"):
        vl.load_video(clip_path, start=25.0)
