"""Nothing silently wrong, nothing lost (issue 30): each test here failed on the code before it.

Runs: a bad window is one sample's skip; the model fingerprint covers every byte; a damaged
records line reruns its sample; replaced videos rerun their samples."""

from __future__ import annotations

import json

import pytest

from test_bad_inputs import run_cli
from test_reliability import SIZES, GOOD, flow_argv, write_data
from videolens.runs import read_records, read_statuses
from videolens.testing import make_tiny_pllava, write_clip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("silent")
    write_clip(root / "clip.mp4", n_frames=8)
    return {"root": root, "model": make_tiny_pllava(root / "model", **SIZES)}


@pytest.mark.parametrize("command", ["flow", "genprob"])
def test_a_window_past_the_video_end_is_that_samples_skip(world, tmp_path, command):
    data = write_data(tmp_path / "d.json", [GOOD, dict(GOOD, start=50, end=60), GOOD])
    out = tmp_path / "out"
    argv = flow_argv(world, data, out)
    if command == "genprob":
        argv = ["genprob", "--model", str(world["model"]), "--data", str(data), "--video-root", str(world["root"]),
                "--out", str(out), "--no-figures", "--no-progress"]
    rc, stdout, err = run_cli(argv)
    assert rc == 0, err
    name = "records.jsonl" if command == "flow" else "genprob.jsonl"
    st = read_statuses(out / name)
    assert st == {"d_0": "ok", "d_1": "skipped: VideoWindowError", "d_2": "ok"}
    assert "d_1" in err and "past the end of" in err and "clip.mp4" in err
    assert run_cli(argv)[0] == 0  # a resume does not stop at the same entry either


def test_weights_changed_in_the_middle_are_a_new_model(world, tmp_path):
    """Same size, same first and last MiB, other bytes in the middle: another model."""
    from videolens.fingerprint import file_digest, model_fingerprint

    f = tmp_path / "model.safetensors"
    blob = bytearray(b"\0" * (3 << 20))
    f.write_bytes(bytes(blob))
    before = file_digest(f)
    assert file_digest(f) == before  # cached: same answer
    blob[(3 << 20) // 2] = 1
    f.write_bytes(bytes(blob))
    assert file_digest(f) != before
    (tmp_path / "config.json").write_text("{}")
    assert set(model_fingerprint(tmp_path)) == {"config.json", "model.safetensors"}


def test_a_run_header_says_what_the_fingerprint_covers(world, tmp_path):
    data = write_data(tmp_path / "d.json", [GOOD])
    assert run_cli(flow_argv(world, data, tmp_path / "out"))[0] == 0
    header = json.loads((tmp_path / "out" / "records.jsonl").read_text().splitlines()[0])["config"]
    assert header["fingerprint_method"] == "sha256 of every whole file"
